// Package framed runs the transport protocol (handshake, multiplexed
// requests, bulk reads, cancellation, keepalive) over any ordered, reliable
// byte stream. The tcp transport uses it as is; quic streams and websocket
// connections can too, supplying only how bytes are read and written.
//
// Goroutines per connection: a reader (decodes frames and dispatches them),
// a writer (batches queued frames into one writev), a keepalive ticker,
// and on the listening side one that runs one-way messages in order. A
// request or bulk read runs on the goroutine that read it, which first
// starts a new reader to take over the connection, so the handler starts
// at once rather than after a new goroutine is scheduled. Paths the
// handler declares inline (transport.InlineHandler) run on the reader
// with no new goroutine at all, saving the thread wake-up Go does for each
// (measured on 2 processors: a 64-byte round trip 5-10% faster).
//
// A producer that finds the connection idle writes its frame itself (one
// non-blocking write) instead of waking the writer goroutine; see
// writeQueue.
//
// Lock order: Conn.mu, then call.mu; writeQueue.mu is never held with
// either. No lock is held across a socket read or write.
package framed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Sizes and bounds of the engine.
const (
	// readBufSize is the reader's buffer: small frames are decoded from it
	// many per read syscall.
	readBufSize = 64 << 10
	// directReadMin: payload parts at least this long are read straight
	// into their destination instead of through the buffer.
	directReadMin = 16 << 10
	// copyThreshold: message bodies up to this long are copied next to
	// their frame header (one iovec, one allocation); longer ones are
	// written from the caller's slice.
	copyThreshold = 32 << 10
	// onewayQueueLen bounds one-way messages received but not yet handled;
	// beyond it the reader waits, which pushes back on the sender.
	onewayQueueLen = 256
	// closeFlushTimeout bounds how long Close waits for queued frames (and
	// its goodbye) to reach the socket.
	closeFlushTimeout = time.Second
	// errorFlushTimeout bounds how long a connection closed for a protocol
	// error waits for the ERROR frame telling the peer why.
	errorFlushTimeout = 200 * time.Millisecond
)

var errQueueClosed = errors.New("write queue closed")

// Stream is the byte stream a connection runs over.
type Stream struct {
	// Conn carries the bytes. Writes go through net.Buffers, so a
	// *net.TCPConn gets writev, and so does a Conn with a method
	// WriteBuffers(*net.Buffers) (int64, error) that consumes them.
	Conn net.Conn
	// Read reads from Conn; nil means Conn.Read. The tcp busy_poll reactor
	// supplies one that spins before parking.
	Read func(p []byte) (int, error)
	// TryWrite, when set, writes without ever blocking (returning 0, nil
	// when the socket has no room). With it, a producer that finds the
	// connection idle writes its frame itself instead of waking the writer
	// goroutine: one goroutine hand-off less per message.
	TryWrite func(p []byte) (int, error)
	// ResumableDeadlines says a Read cut short by SetReadDeadline may be
	// followed by more reads that continue the stream (true for TCP, false
	// for TLS). Without it, abandoning a bulk read in the middle of a frame
	// closes the connection.
	ResumableDeadlines bool
	// TryRead, when set with a positive SpinWait, reads without ever
	// blocking (0, nil when nothing is there; io.EOF at the end). The
	// connection then busy-polls: its reader retries TryRead for SpinWait
	// after the last bytes before it blocks in Conn.Read, and a caller of
	// Request reads its reply itself (see lead.go). The tcp busy_poll
	// reactor sets both.
	TryRead  func(p []byte) (int, error)
	SpinWait time.Duration
}

// Conn is one side of a connection. The dialer's side implements
// transport.Conn.
type Conn struct {
	s      Stream
	read   func([]byte) (int, error)
	opts   transport.Options
	log    *slog.Logger
	local  transport.Identity
	peer   transport.Identity
	client bool
	h      transport.Handler
	inline transport.InlineHandler // h, if it serves some paths inline
	paths  map[string]string       // request paths seen (internPath)
	// spareIn is an inline request's record, kept for the next one once
	// its reply went out (onRequest, finishInbound); reading role only.
	spareIn *inbound
	// nextBody is a small message body allocated ahead, while the reader
	// waits for the peer (after a reply went out, or as a leader starts
	// to read), for the next small inline request or whole response to
	// take instead of allocating between its read and the next write:
	// reading role only. Its size is the last such body's (bodySize).
	nextBody []byte
	bodySize int
	// spareCall is a call record a leader left for the next call (Request).
	spareCall atomic.Pointer[call]
	// peerMax is the largest message the peer accepts.
	peerMax uint64
	onDone  func(*Conn)

	// Reader state, owned by the reader goroutine.
	rb    []byte
	r, w  int
	limit uint32

	wq         *writeQueue
	wv, wvCur  net.Buffers // the writer's scratch
	writerDone chan struct{}

	mu    sync.Mutex
	calls map[uint64]*call
	// ncalls is len(calls), stored under mu wherever calls changes, so
	// that pending reads it without the lock (every leader does, twice).
	ncalls  atomic.Int32
	inbound map[uint64]*inbound
	// ninbound is len(inbound), stored under mu wherever inbound changes
	// (listInbound, unlistInbound). Only the reader goroutine adds
	// entries, so a zero it reads means no stream of the peer's is in
	// use, and a new request needs no look at the table.
	ninbound atomic.Int32
	err      error
	// peerBye is the reason the peer gave in a CLOSE frame.
	peerBye *transport.RemoteError

	nextID atomic.Uint64
	failed atomic.Bool
	done   chan struct{}
	once   sync.Once
	// ctx parents every handler context; cancelled when the connection ends.
	ctx    context.Context
	cancel context.CancelFunc

	// rxProgress counts reads that returned bytes, txProgress writes that
	// the socket accepted; keepalive watches both.
	rxProgress atomic.Uint64
	txProgress atomic.Uint64
	// readerStalled is set while the reader waits on this side (a full
	// one-way queue), when silence is not the peer's fault.
	readerStalled atomic.Bool

	oneway chan onewayMsg

	// lead: a busy-polling dialer's callers may read their replies
	// themselves (lead.go); nil otherwise. atBoundary is set by the reader
	// goroutine while it waits for a frame header (where it may yield).
	lead       *lead
	atBoundary bool
}

// call is a request or bulk read this side is waiting on.
type call struct {
	id uint64
	// done is closed once the call completed; the first waiter makes it
	// (wait), so a caller that reads its own reply (a leader) never does.
	done atomic.Pointer[chan struct{}]
	// fin is set just before done is closed, for a leader that polls it.
	fin  atomic.Bool
	resp []byte
	err  error
	g    outGroup
	// small holds a small request's frame (see send): an allocation less.
	small [smallFrame]byte
	// sent: the request went out whole on its caller's own write (send),
	// so the write queue holds nothing of it.
	sent bool

	// multi-frame response assembly (reader goroutine only)
	assembling bool
	got        uint64
	total      uint64

	// bulk read: dst is the caller's; the reader writes into it only while
	// reading is set, and never once abandoned is.
	bulk        bool
	dst         []byte
	mu          sync.Mutex
	reading     bool
	abandoned   bool
	interrupted bool
	idle        chan struct{}
	abandonFlag atomic.Bool
}

// inbound is a request or bulk read the peer sent us.
type inbound struct {
	// assembly of a multi-frame request
	assembling bool
	head       transport.RequestHead
	oneway     bool
	body       []byte
	got        uint64
	// running handler
	cancel   context.CancelFunc
	canceled bool
	group    *outGroup
	// unlisted: served inline and not in the inbound table (see deliver)
	unlisted bool
	// reuse: a small inline request's record, which goes back to spareIn
	// when nothing refers to it any more (its body is not in small)
	reuse bool
	// small holds a small request's body (see onRequest), reply a small
	// reply's frame (serveRequest): allocations saved
	small, reply [smallFrame]byte
}

type onewayMsg struct {
	path    string
	payload []byte
}

func newConn(s Stream, local transport.Identity, opts transport.Options, client bool) *Conn {
	c := &Conn{
		s:          s,
		read:       s.Read,
		opts:       opts,
		log:        opts.Log,
		local:      local,
		client:     client,
		rb:         make([]byte, readBufSize),
		limit:      transport.HandshakeFrameLimit,
		writerDone: make(chan struct{}),
		calls:      make(map[uint64]*call),
		inbound:    make(map[uint64]*inbound),
		done:       make(chan struct{}),
	}
	if c.read == nil {
		c.read = s.Conn.Read
	}
	if s.TryRead != nil && s.SpinWait > 0 {
		c.read = c.spinRead
	}
	c.wq = newWriteQueue(opts.MaxQueuedBytes, s.TryWrite, &c.txProgress)
	c.local.Protocol = transport.ProtocolVersion
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// start runs the connection's goroutines once the handshake is done.
func (c *Conn) start() {
	c.limit = transport.MaxFramePayload
	c.log = c.log.With("peer", c.peer.Incarnation(), "remote", c.RemoteAddr())
	if !c.client {
		c.oneway = make(chan onewayMsg, onewayQueueLen)
		go c.onewayLoop()
	} else if c.s.TryRead != nil && c.s.SpinWait > 0 {
		c.lead = newLead()
	}
	go c.readLoop()
	go c.writeLoop()
	go c.keepalive()
}

// Peer implements transport.Conn.
func (c *Conn) Peer() transport.Identity { return c.peer }

// RemoteAddr implements transport.Conn.
func (c *Conn) RemoteAddr() string {
	if a := c.s.Conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Done implements transport.Conn.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err implements transport.Conn.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) isFailed() bool { return c.failed.Load() }

// Close implements transport.Conn: queued frames and a goodbye are flushed
// (within closeFlushTimeout), then the connection ends with ErrClosed.
func (c *Conn) Close() error {
	if c.isFailed() {
		return nil
	}
	bye := closeFrame(transport.CodeGoingAway, "connection closed by "+c.local.Incarnation())
	if c.wq.push(context.Background(), c.done, []outFrame{bye}, true) == nil {
		c.wq.startDrain()
		t := time.NewTimer(closeFlushTimeout)
		select {
		case <-c.writerDone:
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
	}
	c.fail(transport.ErrClosed)
	return nil
}

// fail ends the connection once, with err as the reason every call in
// flight gets.
func (c *Conn) fail(err error) {
	c.once.Do(func() {
		c.failed.Store(true)
		c.mu.Lock()
		c.err = err
		calls := c.calls
		c.calls = nil
		c.ncalls.Store(0)
		inb := c.inbound
		c.inbound = nil
		c.ninbound.Store(0)
		c.mu.Unlock()
		close(c.done)
		c.cancel()
		releaseFrames(c.wq.close())
		_ = c.s.Conn.Close()
		callErr := err
		if !errors.Is(err, transport.ErrClosed) {
			callErr = transport.PeerGone(err)
		}
		for _, cl := range calls {
			cl.complete(nil, callErr)
		}
		for _, in := range inb {
			if in.cancel != nil {
				in.cancel()
			}
		}
		c.logEnd(err)
		if c.onDone != nil {
			c.onDone(c)
		}
	})
}

func (c *Conn) logEnd(err error) {
	switch {
	case errors.Is(err, transport.ErrClosed):
		c.log.Debug("transport: connection closed")
	case errors.Is(err, transport.ErrProtocol) && !errors.Is(err, transport.ErrPeerGone):
		c.log.Warn("transport: connection closed after a protocol error", "err", err)
	case errors.Is(err, errKeepalive):
		c.log.Warn("transport: connection closed: peer silent past the keepalive timeout", "err", err)
	default:
		c.log.Info("transport: connection lost", "err", err)
	}
}

var errKeepalive = errors.New("keepalive timeout")

func peerGone(op string, err error) error {
	return transport.PeerGone(fmt.Errorf("%s: %w", op, err))
}

// protocolError ends the connection after telling the peer why.
func (c *Conn) protocolError(err error) {
	f := errorFrame(0, transport.CodeProtocol, err.Error())
	if c.wq.push(context.Background(), c.done, []outFrame{f}, true) == nil {
		c.wq.startDrain()
		t := time.NewTimer(errorFlushTimeout)
		select {
		case <-c.writerDone:
		case <-t.C:
		}
		t.Stop()
	}
	c.fail(err)
}

// smallFrame bounds a request frame built inside its call.
const smallFrame = 256

// closedChan stands for a call's done channel when the call completed
// before anyone waited.
var closedChan = func() *chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return &ch
}()

func (cl *call) complete(resp []byte, err error) {
	cl.resp, cl.err = resp, err
	cl.fin.Store(true)
	if p := cl.done.Swap(closedChan); p != nil {
		close(*p)
	}
}

// wait returns a channel closed once the call completed.
func (cl *call) wait() <-chan struct{} {
	if p := cl.done.Load(); p != nil {
		return *p
	}
	ch := make(chan struct{})
	if cl.done.CompareAndSwap(nil, &ch) {
		return ch
	}
	return *cl.done.Load() // completed meanwhile
}

// takeCall removes the call id from the table; false if it already
// completed or was abandoned.
func (c *Conn) takeCall(id uint64) (*call, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[id]
	if ok {
		delete(c.calls, id)
		c.ncalls.Store(int32(len(c.calls)))
	}
	return cl, ok
}

// putBack returns a call the reader took out of the table, so that the
// connection's end completes it like the others; if the connection ended
// already, it completes it now, with the error fail gave the others.
func (c *Conn) putBack(cl *call) {
	c.mu.Lock()
	if c.calls != nil {
		c.calls[cl.id] = cl
		c.ncalls.Store(int32(len(c.calls)))
		c.mu.Unlock()
		return
	}
	err := c.callErrLocked()
	c.mu.Unlock()
	cl.complete(nil, err)
}

func (c *Conn) lookupCall(id uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

func (c *Conn) register(cl *call) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.callErrLocked()
	}
	c.calls[cl.id] = cl
	c.ncalls.Store(int32(len(c.calls)))
	return nil
}

func (c *Conn) callErrLocked() error {
	if errors.Is(c.err, transport.ErrClosed) {
		return c.err
	}
	return transport.PeerGone(c.err)
}

func (c *Conn) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.callErrLocked()
}

func ctxErr(ctx context.Context, what string) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: %w", transport.ErrTimeout, what, err)
	}
	return fmt.Errorf("transport: %s: %w", what, err)
}

func budget(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), 1)
	}
	return 0
}

// Request implements transport.Conn.
func (c *Conn) Request(ctx context.Context, path string, payload []byte) ([]byte, error) {
	cl, err := c.send(ctx, path, payload, false)
	if err != nil {
		return nil, err
	}
	if c.lead != nil {
		if c.tryLead() {
			// Not complete yet, with the role held: only this goroutine's
			// reading or the connection's failure (an error) completes it.
			mine := !cl.fin.Load()
			if c.leadFor(ctx, cl) {
				resp, err := cl.resp, cl.err // fin, set after them, orders them
				if mine && err == nil && cl.sent {
					// Nothing refers to cl any more: neither the call
					// table, nor a waiter, nor the write queue. The next
					// call reuses it.
					*cl = call{}
					c.spareCall.Store(cl)
				}
				return resp, err
			}
		} else {
			c.ensureReader()
		}
	}
	select {
	case <-cl.wait():
		return cl.resp, cl.err
	case <-ctx.Done():
		if _, ok := c.takeCall(cl.id); !ok {
			<-cl.wait() // completed meanwhile
			return cl.resp, cl.err
		}
		c.cancelStream(cl.id, &cl.g)
		return nil, ctxErr(ctx, "request "+path+" to "+c.peer.Incarnation())
	}
}

// Send implements transport.Conn.
func (c *Conn) Send(ctx context.Context, path string, payload []byte) error {
	_, err := c.send(ctx, path, payload, true)
	return err
}

func (c *Conn) send(ctx context.Context, path string, payload []byte, oneway bool) (*call, error) {
	if !c.client {
		return nil, fmt.Errorf("%w: protocol %d carries requests from the dialer only", transport.ErrInvalid, transport.ProtocolVersion)
	}
	if len(path) > transport.MaxPathLen {
		return nil, fmt.Errorf("%w: path of %d bytes, at most %d", transport.ErrInvalid, len(path), transport.MaxPathLen)
	}
	if uint64(len(payload)) > c.peerMax {
		return nil, fmt.Errorf("%w: payload of %d bytes to %s is above its max message size of %d; use ReadRemote for bulk data or raise the peer's limit",
			transport.ErrFrameTooLarge, len(payload), c.peer.Incarnation(), c.peerMax)
	}
	if ctx.Err() != nil {
		return nil, ctxErr(ctx, "request "+path)
	}
	cl := c.spareCall.Swap(nil) // see Request
	if cl == nil {
		cl = new(call)
	}
	cl.id = c.nextID.Add(1)
	if !oneway {
		if err := c.register(cl); err != nil {
			return nil, err
		}
	}
	headLen := transport.HeaderSize + transport.RequestHeadSize + len(path)
	var buf []byte
	if n := headLen + inlineBody(headLen, payload); n <= smallFrame {
		buf = cl.small[:transport.HeaderSize] // the frame lives as long as cl
	} else {
		buf = make([]byte, transport.HeaderSize, n)
	}
	head := transport.AppendRequestHead(buf, transport.RequestHead{
		Budget: budget(ctx), Total: uint64(len(payload)), Path: path,
	})
	var flags transport.Flags
	if oneway {
		flags = transport.FlagOneWay
	}
	var one [1]outFrame
	frames := appendMessageFrames(one[:0], transport.FrameRequest, flags, cl.id, head, payload, &cl.g)
	sent, err := c.wq.pushSent(ctx, c.done, frames, false)
	cl.sent = sent && err == nil
	if err != nil {
		c.takeCall(cl.id)
		if ctx.Err() != nil {
			return nil, ctxErr(ctx, "request "+path)
		}
		return nil, c.closedErr()
	}
	return cl, nil
}

// cancelStream abandons stream id: its unsent frames are skipped and, if
// any went out, the peer is told to stop.
func (c *Conn) cancelStream(id uint64, g *outGroup) {
	g.canceled.Store(true)
	if g.started.Load() {
		_ = c.wq.push(context.Background(), c.done, []outFrame{headerOnly(transport.FrameCancel, 0, id)}, true)
	}
}

// ReadRemote implements transport.Conn.
func (c *Conn) ReadRemote(ctx context.Context, ref transport.RemoteRef, dst []byte) error {
	if !c.client {
		return fmt.Errorf("%w: protocol %d carries bulk reads from the dialer only", transport.ErrInvalid, transport.ProtocolVersion)
	}
	if uint64(len(dst)) != ref.Length {
		return fmt.Errorf("%w: dst of %d bytes for a range of %d (%s)", transport.ErrInvalid, len(dst), ref.Length, ref)
	}
	if ctx.Err() != nil {
		return ctxErr(ctx, "bulk read")
	}
	cl := &call{id: c.nextID.Add(1), bulk: true, dst: dst}
	if err := c.register(cl); err != nil {
		return err
	}
	defer cl.abandon(c)
	f := transport.AppendBulkRead(make([]byte, transport.HeaderSize, transport.HeaderSize+transport.BulkReadSize), transport.BulkRead{Budget: budget(ctx), Ref: ref})
	transport.PutHeader(f, transport.Header{Type: transport.FrameBulkRead, Stream: cl.id, Length: transport.BulkReadSize})
	cl.g.pending.Store(1)
	if err := c.wq.push(ctx, c.done, []outFrame{{head: f, group: &cl.g}}, false); err != nil {
		c.takeCall(cl.id)
		if ctx.Err() != nil {
			return ctxErr(ctx, "bulk read")
		}
		return c.closedErr()
	}
	if c.lead != nil {
		c.ensureReader()
	}
	select {
	case <-cl.wait():
		return cl.err
	case <-ctx.Done():
		if _, ok := c.takeCall(cl.id); !ok {
			<-cl.wait()
			return cl.err
		}
		c.cancelStream(cl.id, &cl.g)
		return ctxErr(ctx, fmt.Sprintf("bulk read of %s from %s", ref, c.peer.Incarnation()))
	}
}

// abandon makes sure the reader no longer writes into cl.dst: if it is in
// the middle of a read into it, the read is interrupted (a past read
// deadline) and abandon waits for the reader to let go.
func (cl *call) abandon(c *Conn) {
	cl.abandonFlag.Store(true)
	cl.mu.Lock()
	cl.abandoned = true
	if !cl.reading {
		cl.mu.Unlock()
		return
	}
	cl.idle = make(chan struct{})
	idle := cl.idle
	if c.s.ResumableDeadlines {
		cl.interrupted = true
		_ = c.s.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	cl.mu.Unlock()
	if !c.s.ResumableDeadlines {
		c.fail(fmt.Errorf("%w: a bulk read was abandoned mid-frame on a stream that cannot resume", transport.ErrClosed))
	}
	<-idle
}

// inlineBody is how much room a head of headLen bytes needs for body to
// be copied after it (the small-message case of appendMessageFrames).
func inlineBody(headLen int, body []byte) int {
	if len(body) <= copyThreshold && headLen+len(body) <= transport.HeaderSize+transport.MaxFramePayload {
		return len(body)
	}
	return 0
}

// appendMessageFrames cuts a message (head: frame header room + type head;
// body) into frames of at most MaxFramePayload, appended to dst. A small
// body is copied after the head (one buffer, one iovec; allocate head with
// room for it, see inlineBody); a larger one is written from the caller's
// slice. g, if not nil, ties the frames together.
func appendMessageFrames(dst []outFrame, t transport.FrameType, flags transport.Flags, id uint64, head, body []byte, g *outGroup) []outFrame {
	headLen := len(head) - transport.HeaderSize
	if inlineBody(len(head), body) == len(body) {
		head = append(head, body...)
		transport.PutHeader(head, transport.Header{Type: t, Flags: flags, Stream: id, Length: uint32(len(head) - transport.HeaderSize)})
		if g != nil {
			g.pending.Store(1)
		}
		return append(dst, outFrame{head: head, group: g})
	}
	first := min(len(body), transport.MaxFramePayload-headLen)
	n := 1 + (len(body)-first+transport.MaxFramePayload-1)/transport.MaxFramePayload
	f0 := flags
	if n > 1 {
		f0 |= transport.FlagMore
	}
	transport.PutHeader(head, transport.Header{Type: t, Flags: f0, Stream: id, Length: uint32(headLen + first)})
	start := len(dst)
	dst = append(dst, outFrame{head: head, body: body[:first], group: g})
	rest := body[first:]
	for len(rest) > 0 {
		k := min(len(rest), transport.MaxFramePayload)
		fl := transport.FlagCont
		if k < len(rest) {
			fl |= transport.FlagMore
		}
		h := make([]byte, transport.HeaderSize)
		transport.PutHeader(h, transport.Header{Type: t, Flags: fl, Stream: id, Length: uint32(k)})
		dst = append(dst, outFrame{head: h, body: rest[:k], group: g})
		rest = rest[k:]
	}
	if g != nil {
		g.pending.Store(int32(len(dst) - start))
	}
	return dst
}

// bulkFrames cuts src into BULK_DATA frames written straight from src.
func bulkFrames(id uint64, src []byte, g *outGroup) []outFrame {
	n := max(1, (len(src)+transport.MaxFramePayload-1)/transport.MaxFramePayload)
	frames := make([]outFrame, 0, n)
	for i := 0; i < n; i++ {
		k := min(len(src), transport.MaxFramePayload)
		var fl transport.Flags
		if i < n-1 {
			fl = transport.FlagMore
		}
		h := make([]byte, transport.HeaderSize)
		transport.PutHeader(h, transport.Header{Type: transport.FrameBulkData, Flags: fl, Stream: id, Length: uint32(k)})
		frames = append(frames, outFrame{head: h, body: src[:k], group: g})
		src = src[k:]
	}
	g.pending.Store(int32(len(frames)))
	return frames
}

func headerOnly(t transport.FrameType, fl transport.Flags, id uint64) outFrame {
	h := make([]byte, transport.HeaderSize)
	transport.PutHeader(h, transport.Header{Type: t, Flags: fl, Stream: id})
	return outFrame{head: h}
}

func errorFrame(id uint64, code transport.Code, msg string) outFrame {
	b := transport.AppendErrorPayload(make([]byte, transport.HeaderSize, transport.HeaderSize+transport.ErrorHeadSize+len(msg)), code, msg)
	transport.PutHeader(b, transport.Header{Type: transport.FrameError, Stream: id, Length: uint32(len(b) - transport.HeaderSize)})
	return outFrame{head: b}
}

func closeFrame(code transport.Code, msg string) outFrame {
	f := errorFrame(0, code, msg)
	f.head[3] = byte(transport.FrameClose)
	return f
}

// keepalive pings a silent peer and ends the connection when, for
// KeepaliveTimeout, the peer has sent nothing and taken nothing: no read
// returned bytes and no write was accepted by the socket (a peer busy
// receiving a long transfer from us answers our ping only after it, but is
// alive; a dead one stops accepting once the socket buffer is full, and
// TCP_USER_TIMEOUT covers bytes the kernel accepted that are never acked).
func (c *Conn) keepalive() {
	t := time.NewTicker(c.opts.KeepaliveInterval)
	defer t.Stop()
	progress := func() uint64 { return c.rxProgress.Load() + c.txProgress.Load() }
	last := progress()
	idle := 0
	var seq uint64
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		if c.lead != nil {
			c.ensureReader() // the role may be free with frames waiting
		}
		p := progress()
		if p != last || c.readerStalled.Load() {
			last, idle = p, 0
			continue
		}
		idle++
		if time.Duration(idle)*c.opts.KeepaliveInterval >= c.opts.KeepaliveTimeout {
			c.fail(fmt.Errorf("%w: %w: nothing received for %v (keepalive every %v)",
				transport.ErrPeerGone, errKeepalive, time.Duration(idle)*c.opts.KeepaliveInterval, c.opts.KeepaliveInterval))
			return
		}
		seq++
		b := make([]byte, transport.HeaderSize+transport.PingSize)
		transport.PutHeader(b, transport.Header{Type: transport.FramePing, Length: transport.PingSize})
		binary.BigEndian.PutUint64(b[transport.HeaderSize:], seq)
		f := outFrame{head: b, keepalive: true}
		_ = c.wq.push(context.Background(), c.done, []outFrame{f}, true)
	}
}

// onewayLoop runs one-way messages one at a time, in arrival order.
func (c *Conn) onewayLoop() {
	ctx := transport.WithOneWay(c.ctx)
	for {
		select {
		case <-c.done:
			return
		case m := <-c.oneway:
			func() {
				defer func() {
					if p := recover(); p != nil {
						c.log.Error("transport: one-way handler panicked", "path", m.path, "panic", p, "stack", string(debug.Stack()))
					}
				}()
				if _, err := c.h.HandleRequest(ctx, c.peer, m.path, m.payload); err != nil {
					c.log.Debug("transport: one-way handler failed", "path", m.path, "err", err)
				}
			}()
		}
	}
}

// serveRequest runs a request's handler and sends its reply.
func (c *Conn) serveRequest(ctx context.Context, id uint64, in *inbound, path string, payload []byte) {
	var resp []byte
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("transport: handler panicked", "path", path, "panic", p, "stack", string(debug.Stack()))
				err = &transport.RemoteError{Code: transport.CodePanic, Message: fmt.Sprintf("handler for %s panicked: %v", path, p)}
			}
		}()
		resp, err = c.h.HandleRequest(ctx, c.peer, path, payload)
	}()
	var frames []outFrame
	var g *outGroup
	switch {
	case err != nil && ctx.Err() != nil:
		// The caller's deadline (which the handler's is derived from, less
		// the transit time) has passed or the caller cancelled: it is not
		// waiting for this error, and its own context reports the timeout.
		c.forgetInbound(id, in)
		return
	case err != nil:
		code, msg := transport.HandlerErrorCode(err)
		frames = []outFrame{errorFrame(id, code, msg)}
	case uint64(len(resp)) > c.peerMax:
		frames = []outFrame{errorFrame(id, transport.CodeTooLarge, fmt.Sprintf(
			"reply of %d bytes from %s is above the caller's max message size of %d", len(resp), path, c.peerMax))}
	default:
		headLen := transport.HeaderSize + transport.ResponseHeadSize
		small := inlineBody(headLen, resp) == len(resp)
		var buf []byte
		if n := headLen + inlineBody(headLen, resp); n <= smallFrame {
			buf = in.reply[:transport.HeaderSize] // the frame lives as long as in
		} else {
			buf = make([]byte, transport.HeaderSize, n)
		}
		head := transport.AppendResponseHead(buf, uint64(len(resp)))
		if !small {
			// Written from resp over several writes: a cancel may skip
			// the rest, and the stream is forgotten once all is out.
			g = &outGroup{}
		}
		var one [1]outFrame
		frames = appendMessageFrames(one[:0], transport.FrameResponse, 0, id, head, resp, g)
	}
	c.finishInbound(id, in, frames, g)
}

// serveRead runs ServeRead and streams the range from the returned bytes.
func (c *Conn) serveRead(ctx context.Context, id uint64, in *inbound, ref transport.RemoteRef) {
	var src []byte
	var release func()
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("transport: ServeRead panicked", "ref", ref.String(), "panic", p, "stack", string(debug.Stack()))
				err = &transport.RemoteError{Code: transport.CodePanic, Message: fmt.Sprintf("serving %s panicked: %v", ref, p)}
			}
		}()
		src, release, err = c.h.ServeRead(ctx, c.peer, ref)
	}()
	if err == nil && uint64(len(src)) != ref.Length {
		err = &transport.RemoteError{Code: transport.CodeInternal, Message: fmt.Sprintf("ServeRead returned %d bytes for %s", len(src), ref)}
		c.log.Error("transport: ServeRead returned the wrong length", "ref", ref.String(), "len", len(src))
	}
	if err != nil {
		if release != nil {
			release()
		}
		if ctx.Err() != nil {
			c.forgetInbound(id, in) // as in serveRequest: nobody waits for this error
			return
		}
		code, msg := transport.HandlerErrorCode(err)
		c.finishInbound(id, in, []outFrame{errorFrame(id, code, msg)}, nil)
		return
	}
	g := &outGroup{done: release}
	c.finishInbound(id, in, bulkFrames(id, src, g), g)
}

// finishInbound queues a reply unless the caller cancelled meanwhile, and
// forgets the stream once the reply is out.
func (c *Conn) finishInbound(id uint64, in *inbound, frames []outFrame, g *outGroup) {
	if g != nil {
		done := g.done
		g.done = func() {
			c.forgetInbound(id, in)
			if done != nil {
				done()
			}
		}
	}
	canceled := false
	// An inline request answered in one frame needs no look at the table:
	// it is not listed, so no cancel reaches it, and a connection that
	// ended meanwhile refuses the frame in pushSent.
	if !in.unlisted || g != nil {
		c.mu.Lock()
		if in.unlisted && g != nil && c.inbound != nil {
			// A reply in several writes can be cut short by a cancel,
			// which finds the stream here.
			c.listInbound(id, in)
			in.unlisted = false
		}
		canceled = in.canceled || c.inbound == nil
		in.group = g
		c.mu.Unlock()
	}
	sent := true
	if canceled {
		releaseFrames(frames)
	} else {
		sent, _ = c.wq.pushSent(c.ctx, c.done, frames, false) // on failure the frames count as done
	}
	if g == nil {
		c.forgetInbound(id, in)
		if in.reuse && sent { // the queue holds no frame in in.reply
			in.cancel = nil
			c.spareIn = in
			c.allocAhead() // the reply is out: the next request is a round trip away
		}
	}
}

// takeBody returns a buffer for a body of n ≤ smallFrame bytes: the one
// allocated ahead if it is large enough, else a new one. The caller owns
// it (handlers and callers may keep bodies). Reading role only.
func (c *Conn) takeBody(n int) []byte {
	c.bodySize = n
	b := c.nextBody
	if n > 0 && n <= cap(b) {
		c.nextBody = nil
		return b[:n:n]
	}
	if n > cap(b) {
		c.nextBody = nil // too small for the bodies that come now: allocAhead sizes the next afresh
	}
	return make([]byte, n)
}

// allocAhead allocates the next small body while nothing waits on this
// goroutine. Reading role only.
func (c *Conn) allocAhead() {
	if c.nextBody == nil && c.bodySize > 0 {
		c.nextBody = make([]byte, c.bodySize)
	}
}

// listInbound and unlistInbound change the inbound table; mu held, and
// for listInbound a live connection (inbound not nil) on the reader
// goroutine.
func (c *Conn) listInbound(id uint64, in *inbound) {
	c.inbound[id] = in
	c.ninbound.Store(int32(len(c.inbound)))
}

func (c *Conn) unlistInbound(id uint64) {
	delete(c.inbound, id)
	c.ninbound.Store(int32(len(c.inbound)))
}

func (c *Conn) forgetInbound(id uint64, in *inbound) {
	if !in.unlisted {
		c.mu.Lock()
		if c.inbound != nil && c.inbound[id] == in {
			c.unlistInbound(id)
		}
		c.mu.Unlock()
	}
	if in.cancel != nil {
		in.cancel()
	}
}

// isDeadline reports a read cut short by a read deadline.
func isDeadline(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
