package quic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Application error codes in CONNECTION_CLOSE frames.
const (
	// codeClose: an orderly close (the framed protocol already said why).
	codeClose quic.ApplicationErrorCode = 0
	// codeNoStream: the dialer opened no stream within the handshake
	// timeout.
	codeNoStream quic.ApplicationErrorCode = 1
	// codeBusy: too many connections were waiting for their stream.
	codeBusy quic.ApplicationErrorCode = 2
)

const (
	// closeLinger bounds how long a closed stream's connection stays up
	// for its last bytes (a goodbye frame) to be delivered: closing the
	// QUIC connection at once would discard them. The peer ending the
	// connection first (the usual case: it reads the end of the stream and
	// closes) ends the wait.
	closeLinger = time.Second
	// maxPendingStreams bounds connections whose handshake is done but
	// whose stream has not yet arrived.
	maxPendingStreams = 256
)

// streamConn is one QUIC connection's stream as a net.Conn. Close ends the
// connection, not just the stream.
type streamConn struct {
	qc *quic.Conn
	st *quic.Stream
	// peerDone is set once a read met the end of the peer's stream or
	// connection: nothing more will be read, so Close need not linger.
	peerDone  atomic.Bool
	closeOnce sync.Once
}

func newStreamConn(qc *quic.Conn, st *quic.Stream) *streamConn {
	return &streamConn{qc: qc, st: st}
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.st.Read(p)
	if err != nil {
		err = c.mapErr("read", err)
		if !errors.Is(err, errDeadline) {
			c.peerDone.Store(true)
		}
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	n, err := c.st.Write(p)
	if err != nil {
		err = c.mapErr("write", err)
	}
	return n, err
}

// tryWrite is framed.Stream.TryWrite: all of p is queued if flow control
// allows it, else nothing (quic-go copies p).
func (c *streamConn) tryWrite(p []byte) (int, error) {
	switch err := c.st.TryWriteAll(p); {
	case err == nil:
		return len(p), nil
	case errors.Is(err, quic.ErrWouldBlock):
		return 0, nil
	default:
		return 0, c.mapErr("write", err)
	}
}

// errDeadline is what a read or write cut short by its deadline returns
// (quic-go's error unwraps to os.ErrDeadlineExceeded, which framed tests).
var errDeadline = errors.New("deadline")

// mapErr turns quic-go's errors into the ones net.Conn users expect: the
// end of the stream or an orderly close by the peer is io.EOF, a local
// close net.ErrClosed, anything else (a reset, an idle timeout) a
// *net.OpError, as a TCP reset would be.
func (c *streamConn) mapErr(op string, err error) error {
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		var ite *quic.IdleTimeoutError
		if !errors.As(err, &ite) {
			return deadlineErr{err}
		}
	}
	if errors.Is(err, io.EOF) {
		return err
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) {
		if !ae.Remote {
			return &net.OpError{Op: op, Net: "quic", Source: c.qc.LocalAddr(), Addr: c.qc.RemoteAddr(), Err: net.ErrClosed}
		}
		if ae.ErrorCode == codeClose {
			return io.EOF
		}
	}
	// In TLS 1.3 the client finishes first, so a listener's refusal of its
	// certificate arrives on the stream, after Dial's QUIC handshake.
	var te *quic.TransportError
	if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
		err = fmt.Errorf("%w: TLS: %w; check the certificates (CertFile, KeyFile, CAFile) on both sides", transport.ErrRefused, err)
	}
	return &net.OpError{Op: op, Net: "quic", Source: c.qc.LocalAddr(), Addr: c.qc.RemoteAddr(), Err: err}
}

// deadlineErr keeps quic-go's deadline error (os.ErrDeadlineExceeded)
// and lets mapErr's callers recognise it.
type deadlineErr struct{ error }

func (e deadlineErr) Unwrap() []error { return []error{e.error, errDeadline} }
func (e deadlineErr) Timeout() bool   { return true }
func (e deadlineErr) Temporary() bool { return true }

// Close sends the end of the stream after whatever is queued, then ends
// the connection: at once when the peer has already finished, else when
// the peer ends it or after closeLinger.
func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.st.Close()
		if c.peerDone.Load() {
			_ = c.qc.CloseWithError(codeClose, "")
			return
		}
		go func() {
			t := time.NewTimer(closeLinger)
			defer t.Stop()
			select {
			case <-c.qc.Context().Done():
			case <-t.C:
			}
			_ = c.qc.CloseWithError(codeClose, "")
		}()
	})
	return nil
}

func (c *streamConn) LocalAddr() net.Addr                { return c.qc.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr               { return c.qc.RemoteAddr() }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// streamListener is a net.Listener of streams: Accept returns each QUIC
// connection's first bidirectional stream. A stream reaches the listener
// only once the dialer writes to it, so each accepted connection waits for
// it on a goroutine of its own (at most maxPendingStreams, each for at
// most the handshake timeout) instead of holding up the accept loop.
type streamListener struct {
	ql      *quic.Listener
	timeout time.Duration
	conns   chan *streamConn
	ctx     context.Context
	cancel  context.CancelFunc
	pending chan struct{} // a semaphore of maxPendingStreams
	wg      sync.WaitGroup
	once    sync.Once
}

func newStreamListener(ql *quic.Listener, timeout time.Duration) *streamListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &streamListener{
		ql: ql, timeout: timeout, conns: make(chan *streamConn),
		ctx: ctx, cancel: cancel, pending: make(chan struct{}, maxPendingStreams),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *streamListener) acceptLoop() {
	defer l.wg.Done()
	for {
		qc, err := l.ql.Accept(l.ctx)
		if err != nil {
			return // closed: Accept returns only then
		}
		select {
		case l.pending <- struct{}{}:
		default:
			_ = qc.CloseWithError(codeBusy, "too many connections waiting for their stream")
			continue
		}
		l.wg.Add(1)
		go l.awaitStream(qc)
	}
}

func (l *streamListener) awaitStream(qc *quic.Conn) {
	defer l.wg.Done()
	defer func() { <-l.pending }()
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	defer cancel()
	st, err := qc.AcceptStream(ctx)
	if err != nil {
		_ = qc.CloseWithError(codeNoStream, "no stream opened within the handshake timeout")
		return
	}
	select {
	case l.conns <- newStreamConn(qc, st):
	case <-l.ctx.Done():
		_ = qc.CloseWithError(codeClose, "listener closed")
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, &net.OpError{Op: "accept", Net: "quic", Addr: l.ql.Addr(), Err: net.ErrClosed}
	}
}

// Close stops accepting; connections already accepted stay up (they close
// on their own).
func (l *streamListener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		err = l.ql.Close()
		l.wg.Wait()
	})
	return err
}

func (l *streamListener) Addr() net.Addr { return l.ql.Addr() }
