package framed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Dial runs the dialer's side of the handshake over s: HELLO out, then
// HELLO_ACK (or a refusal) back, then verify on the listener's identity.
// It takes s.Conn over: on error it is closed.
func Dial(ctx context.Context, s Stream, local transport.Identity, verify transport.Verify, opts transport.Options) (*Conn, error) {
	opts = opts.WithDefaults()
	if verify == nil {
		verify = transport.VerifyCluster(local)
	}
	c := newConn(s, local, opts, true)
	deadline := time.Now().Add(opts.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.Conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = s.Conn.SetDeadline(time.Unix(1, 0)) })
	err := c.clientHandshake(verify)
	if !stop() && err == nil {
		err = ctx.Err() // cancelled just as the handshake ended
	}
	if err != nil {
		_ = s.Conn.Close()
		addr := c.RemoteAddr()
		switch {
		case ctx.Err() != nil:
			return nil, ctxErr(ctx, "handshake with "+addr)
		case isDeadline(err):
			return nil, fmt.Errorf("%w: handshake with %s took longer than %v; is it a fluxon transport endpoint?", transport.ErrTimeout, addr, opts.HandshakeTimeout)
		}
		return nil, err
	}
	_ = s.Conn.SetDeadline(time.Time{})
	c.start()
	return c, nil
}

func (c *Conn) writeHello(t transport.FrameType) error {
	b, err := transport.AppendHello(make([]byte, transport.HeaderSize, transport.HeaderSize+64), transport.Hello{Identity: c.local, MaxMessage: c.opts.MaxMessageSize})
	if err != nil {
		return err
	}
	transport.PutHeader(b, transport.Header{Type: t, Length: uint32(len(b) - transport.HeaderSize)})
	if _, err := c.s.Conn.Write(b); err != nil {
		return peerGone("handshake write", err)
	}
	return nil
}

// refuse tells the peer why it is refused (best effort) and returns err.
func (c *Conn) refuse(code transport.Code, err error) error {
	f := errorFrame(0, code, err.Error())
	_, _ = c.s.Conn.Write(f.head)
	return err
}

// readHandshakeFrame reads one whole frame while the handshake limit holds.
func (c *Conn) readHandshakeFrame() (transport.Header, []byte, error) {
	h, err := c.readHeader()
	if err != nil {
		return h, nil, err
	}
	p, err := c.next(int(h.Length))
	return h, p, err
}

func (c *Conn) clientHandshake(verify transport.Verify) error {
	if err := c.writeHello(transport.FrameHello); err != nil {
		return err
	}
	h, p, err := c.readHandshakeFrame()
	if err != nil {
		if errors.Is(err, transport.ErrProtocol) && !errors.Is(err, transport.ErrPeerGone) {
			return c.refuse(transport.CodeProtocol, err)
		}
		return err
	}
	switch h.Type {
	case transport.FrameHelloAck:
	case transport.FrameError:
		re, err := transport.DecodeErrorPayload(p)
		if err != nil {
			return err
		}
		return fmt.Errorf("transport: %s refused the connection: %w", c.RemoteAddr(), re)
	default:
		return c.refuse(transport.CodeProtocol, protoErr("expected a hello-ack, got a %s frame", h.Type))
	}
	hello, err := transport.DecodeHello(p)
	if err != nil {
		return c.refuse(transport.CodeProtocol, err)
	}
	if hello.Protocol < transport.MinProtocolVersion {
		return c.refuse(transport.CodeVersionMismatch, fmt.Errorf("%w: %s at %s speaks protocol %d, this member needs %d..%d; upgrade it",
			transport.ErrVersionMismatch, hello.Incarnation(), c.RemoteAddr(), hello.Protocol, transport.MinProtocolVersion, transport.ProtocolVersion))
	}
	c.setPeer(hello)
	if err := verify(c.peer); err != nil {
		return c.refuse(transport.RefusalCode(err), err)
	}
	return nil
}

func (c *Conn) setPeer(h transport.Hello) {
	c.peer = h.Identity
	c.peerMax = h.MaxMessage
	if c.peerMax == 0 {
		c.peerMax = transport.DefaultMaxMessageSize
	}
}

// Accept runs the listener's side of the handshake over s: a HELLO within
// the handshake timeout, verify on the dialer's identity, then HELLO_ACK
// (or the refusal with its code). It takes s.Conn over: on error it is
// closed.
func Accept(s Stream, local transport.Identity, h transport.Handler, verify transport.Verify, opts transport.Options) (*Conn, error) {
	return accept(s, local, h, verify, opts, nil)
}

func accept(s Stream, local transport.Identity, h transport.Handler, verify transport.Verify, opts transport.Options, onDone func(*Conn)) (*Conn, error) {
	opts = opts.WithDefaults()
	if verify == nil {
		verify = transport.VerifyCluster(local)
	}
	c := newConn(s, local, opts, false)
	c.onDone = onDone
	c.h = h
	c.inline, _ = h.(transport.InlineHandler)
	_ = s.Conn.SetDeadline(time.Now().Add(opts.HandshakeTimeout))
	if err := c.serverHandshake(verify); err != nil {
		_ = s.Conn.Close()
		if isDeadline(err) {
			err = fmt.Errorf("%w: no hello from %s within %v", transport.ErrTimeout, c.RemoteAddr(), opts.HandshakeTimeout)
		}
		return nil, err
	}
	_ = s.Conn.SetDeadline(time.Time{})
	c.start()
	return c, nil
}

func (c *Conn) serverHandshake(verify transport.Verify) error {
	h, p, err := c.readHandshakeFrame()
	if err != nil {
		if errors.Is(err, transport.ErrProtocol) && !errors.Is(err, transport.ErrPeerGone) {
			return c.refuse(transport.CodeProtocol, err)
		}
		return err
	}
	if h.Type != transport.FrameHello {
		return c.refuse(transport.CodeProtocol, protoErr("expected a hello, got a %s frame", h.Type))
	}
	hello, err := transport.DecodeHello(p)
	if err != nil {
		return c.refuse(transport.CodeProtocol, err)
	}
	if hello.Protocol < transport.MinProtocolVersion {
		return c.refuse(transport.CodeVersionMismatch, fmt.Errorf("%w: %s speaks protocol %d, this member (%s) speaks %d..%d; upgrade the older member",
			transport.ErrVersionMismatch, hello.Incarnation(), hello.Protocol, c.local.Incarnation(), transport.MinProtocolVersion, transport.ProtocolVersion))
	}
	if err := verify(hello.Identity); err != nil {
		return c.refuse(transport.RefusalCode(err), err)
	}
	c.setPeer(hello)
	return c.writeHello(transport.FrameHelloAck)
}

// Listener accepts connections from a net.Listener, runs each one's
// handshake on its own goroutine and serves them.
type Listener struct {
	ln      net.Listener
	prepare func(net.Conn) (Stream, error)
	local   transport.Identity
	h       transport.Handler
	verify  transport.Verify
	opts    transport.Options

	mu      sync.Mutex
	conns   map[*Conn]struct{}
	shaking map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// Accept-loop bounds.
const (
	// maxPendingHandshakes: connections beyond this many still in their
	// handshake are closed at once, so a flood of silent dialers costs a
	// bounded number of goroutines.
	maxPendingHandshakes = 256
	acceptBackoffMin     = 5 * time.Millisecond
	acceptBackoffMax     = time.Second
)

// Serve accepts from ln until Close. prepare turns each accepted net.Conn
// into a Stream (socket options, reactor).
func Serve(ln net.Listener, prepare func(net.Conn) (Stream, error), local transport.Identity, h transport.Handler, verify transport.Verify, opts transport.Options) *Listener {
	l := &Listener{
		ln: ln, prepare: prepare, local: local, h: h, verify: verify, opts: opts.WithDefaults(),
		conns: make(map[*Conn]struct{}), shaking: make(map[net.Conn]struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Addr is the bound address.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	backoff := time.Duration(0)
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			l.opts.Log.Warn("transport: accept failed; retrying", "addr", l.Addr(), "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.mu.Lock()
		if l.closed || len(l.shaking) >= maxPendingHandshakes {
			l.mu.Unlock()
			_ = nc.Close()
			continue
		}
		l.shaking[nc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handshake(nc)
	}
}

func (l *Listener) handshake(nc net.Conn) {
	defer l.wg.Done()
	var c *Conn
	s, err := l.prepare(nc)
	if err == nil {
		c, err = acceptWith(s, l)
	} else {
		_ = nc.Close()
	}
	l.mu.Lock()
	delete(l.shaking, nc)
	closed := l.closed
	if err == nil && !closed && !c.isFailed() {
		l.conns[c] = struct{}{} // if it fails from now on, forget removes it
	}
	l.mu.Unlock()
	if err != nil {
		l.opts.Log.Info("transport: handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	if closed {
		c.fail(transport.ErrClosed)
	}
}

func acceptWith(s Stream, l *Listener) (*Conn, error) {
	return accept(s, l.local, l.h, l.verify, l.opts, l.forget)
}

func (l *Listener) forget(c *Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// Close stops accepting and closes every connection (each flushing a
// goodbye within closeFlushTimeout, all at once).
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.ln.Close()
	for nc := range l.shaking {
		_ = nc.Close()
	}
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
		}()
	}
	wg.Wait()
	l.wg.Wait()
	return err
}
