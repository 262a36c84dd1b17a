package framed_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/framed"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// The engine over net.Pipe: a stream with no kernel buffer at all (a write
// blocks until the other side reads it), no raw socket (no inline writes)
// and no TCP. Passing the suite here shows the engine needs nothing from
// TCP, as quic streams and websocket connections will not offer it.

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

type memListener struct {
	addr   memAddr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	net    *memNet
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.net.mu.Lock()
		delete(l.net.ls, l.addr)
		l.net.mu.Unlock()
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

// memNet is an in-memory network of listeners reached through net.Pipe.
type memNet struct {
	mu   sync.Mutex
	ls   map[memAddr]*memListener
	next int
}

func (n *memNet) listen(string) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	l := &memListener{addr: memAddr(fmt.Sprintf("mem:%d", n.next)), ch: make(chan net.Conn), closed: make(chan struct{}), net: n}
	n.ls[l.addr] = l
	return l, nil
}

func (n *memNet) dial(ctx context.Context, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.ls[memAddr(addr)]
	n.mu.Unlock()
	refused := &net.OpError{Op: "dial", Net: "mem", Addr: memAddr(addr), Err: syscall.ECONNREFUSED}
	if l == nil {
		return nil, refused
	}
	a, b := net.Pipe()
	select {
	case l.ch <- b:
		return a, nil
	case <-l.closed:
		return nil, refused
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// memTransport is a transport.Transport over memNet.
type memTransport struct {
	net  *memNet
	opts transport.Options
}

func stream(c net.Conn) (framed.Stream, error) {
	return framed.Stream{Conn: c, ResumableDeadlines: true}, nil
}

func (t *memTransport) Name() string { return "mem" }

func (t *memTransport) Listen(_ context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	ln, err := t.net.listen(addr)
	if err != nil {
		return nil, err
	}
	return framed.Serve(ln, stream, local, h, verify, t.opts), nil
}

func (t *memTransport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	c, err := t.net.dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrUnreachable, err)
	}
	s, _ := stream(c)
	return framed.Dial(ctx, s, local, verify, t.opts)
}

func TestConformancePipe(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, o transport.Options) transporttest.Setup {
		n := &memNet{ls: make(map[memAddr]*memListener)}
		return transporttest.Setup{
			Transport: &memTransport{net: n, opts: o},
			Addr:      "mem:0",
			RawDial:   n.dial,
			RawListen: n.listen,
		}
	})
}
