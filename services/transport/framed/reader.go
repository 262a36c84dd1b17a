package framed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// rawRead reads once from the stream, counting progress for keepalive.
func (c *Conn) rawRead(p []byte) (int, error) {
	n, err := c.read(p)
	if n > 0 {
		c.rxProgress.Add(1)
		return n, nil // an error with bytes comes back on the next read
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return 0, err
}

// makeRoom moves rb[r:w] so that n bytes fit after r.
func (c *Conn) makeRoom(n int) {
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if len(c.rb)-c.r < n {
		c.w = copy(c.rb, c.rb[c.r:c.w])
		c.r = 0
	}
}

// tryFill is fill without blocking: one TryRead at most. True when n
// bytes are available.
func (c *Conn) tryFill(n int) (bool, error) {
	if c.w-c.r >= n {
		return true, nil
	}
	c.makeRoom(n)
	m, err := c.s.TryRead(c.rb[c.w:])
	if m > 0 {
		c.rxProgress.Add(1)
		c.w += m
	}
	return c.w-c.r >= n, err
}

// fill makes at least n (≤ len(rb)) bytes available in rb[r:w].
func (c *Conn) fill(n int) error {
	if c.w-c.r >= n {
		return nil
	}
	c.makeRoom(n)
	for c.w-c.r < n {
		m, err := c.rawRead(c.rb[c.w:])
		c.w += m
		if err != nil {
			return err
		}
	}
	return nil
}

// next returns the next n (≤ len(rb)) bytes, valid until the next read.
func (c *Conn) next(n int) ([]byte, error) {
	if err := c.fill(n); err != nil {
		return nil, c.truncated(err, "payload")
	}
	b := c.rb[c.r : c.r+n]
	c.r += n
	return b, nil
}

// readFull reads len(dst) payload bytes into dst: what is buffered first,
// then large parts straight from the stream. stop, when set, is checked
// between reads; the bytes read are returned.
func (c *Conn) readFull(dst []byte, stop func() bool) (int, error) {
	n := copy(dst, c.rb[c.r:c.w])
	c.r += n
	for n < len(dst) {
		if stop != nil && stop() {
			return n, nil
		}
		rest := dst[n:]
		if len(rest) >= directReadMin {
			m, err := c.rawRead(rest)
			n += m
			if err != nil {
				return n, err
			}
			continue
		}
		if err := c.fill(len(rest)); err != nil {
			k := copy(rest, c.rb[c.r:c.w])
			c.r += k
			return n + k, err
		}
		c.r += copy(rest, c.rb[c.r:c.w])
		n = len(dst)
	}
	return n, nil
}

// discard skips n payload bytes.
func (c *Conn) discard(n uint64) error {
	for n > 0 {
		if c.r == c.w {
			if err := c.fill(1); err != nil {
				return c.truncated(err, "payload")
			}
		}
		k := min(uint64(c.w-c.r), n)
		c.r += int(k)
		n -= k
	}
	return nil
}

// truncated turns a read error inside a frame into the connection's end.
func (c *Conn) truncated(err error, where string) error {
	if isEOF(err) {
		return transport.Compound("transport: peer gone: the connection ended inside a frame's "+where+" (truncated frame)", transport.ErrPeerGone, transport.ErrTruncated)
	}
	return peerGone("read", err)
}

// readHeader reads and validates the next frame header.
func (c *Conn) readHeader() (transport.Header, error) {
	if err := c.fill(transport.HeaderSize); err != nil {
		if err == errYield {
			return transport.Header{}, err
		}
		if isEOF(err) && c.w == c.r {
			c.mu.Lock()
			bye := c.peerBye
			c.mu.Unlock()
			if bye != nil {
				return transport.Header{}, fmt.Errorf("%w: the peer closed the connection: %s", transport.ErrPeerGone, bye.Message)
			}
			return transport.Header{}, fmt.Errorf("%w: the peer closed the connection", transport.ErrPeerGone)
		}
		if isEOF(err) {
			return transport.Header{}, transport.Compound(fmt.Sprintf("transport: peer gone: the connection ended after %d of the %d header bytes (truncated frame)",
				c.w-c.r, transport.HeaderSize), transport.ErrPeerGone, transport.ErrTruncated)
		}
		return transport.Header{}, peerGone("read", err)
	}
	h, err := transport.DecodeHeader(c.rb[c.r:c.w], c.limit)
	if err != nil {
		return h, err
	}
	c.r += transport.HeaderSize
	return h, nil
}

// readLoop reads and dispatches frames until the connection fails or a
// request takes this goroutine over (errHandedOff), in which case a new
// readLoop goroutine already owns the reader state.
func (c *Conn) readLoop() {
	for {
		c.atBoundary = c.lead != nil
		h, err := c.readHeader()
		c.atBoundary = false
		if err == errYield {
			if !c.yieldToLeader() {
				return
			}
			continue
		}
		if err == nil {
			err = c.dispatch(h)
		}
		if err == errHandedOff {
			return
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.lead != nil && !c.idle() {
			return
		}
	}
}

// readFailed ends the connection after a read or a frame went wrong.
func (c *Conn) readFailed(err error) {
	if errors.Is(err, transport.ErrProtocol) && !errors.Is(err, transport.ErrPeerGone) {
		c.protocolError(err)
	} else {
		c.fail(err)
	}
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{transport.ErrProtocol}, args...)...)
}

// dispatch handles one frame whose header has been read.
func (c *Conn) dispatch(h transport.Header) error {
	switch h.Type {
	case transport.FrameRequest:
		if c.client {
			return protoErr("the listener sent a request; protocol %d carries requests from the dialer only", transport.ProtocolVersion)
		}
		return c.onRequest(h)
	case transport.FrameBulkRead:
		if c.client {
			return protoErr("the listener sent a bulk-read; protocol %d carries them from the dialer only", transport.ProtocolVersion)
		}
		return c.onBulkRead(h)
	case transport.FrameCancel:
		if c.client {
			return protoErr("the listener sent a cancel for stream %d", h.Stream)
		}
		c.onCancel(h.Stream)
		return nil
	case transport.FrameResponse:
		if !c.client {
			return protoErr("the dialer sent a response for stream %d", h.Stream)
		}
		return c.onResponse(h)
	case transport.FrameBulkData:
		if !c.client {
			return protoErr("the dialer sent bulk data for stream %d", h.Stream)
		}
		return c.onBulkData(h)
	case transport.FrameError:
		return c.onError(h)
	case transport.FramePing:
		p, err := c.next(int(h.Length))
		if err != nil {
			return err
		}
		b := make([]byte, transport.HeaderSize+transport.PingSize)
		transport.PutHeader(b, transport.Header{Type: transport.FramePong, Length: transport.PingSize})
		copy(b[transport.HeaderSize:], p)
		_ = c.wq.push(context.Background(), c.done, []outFrame{{head: b, keepalive: true}}, true)
		return nil
	case transport.FramePong:
		return c.discard(uint64(h.Length))
	case transport.FrameClose:
		p, err := c.next(int(h.Length))
		if err != nil {
			return err
		}
		bye, err := transport.DecodeErrorPayload(p)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.peerBye = bye
		c.mu.Unlock()
		return nil
	}
	return protoErr("a %s frame after the handshake", h.Type)
}

// issued reports whether id is one this dialer has used.
func (c *Conn) issued(id uint64) bool { return id <= c.nextID.Load() }

func (c *Conn) onRequest(h transport.Header) error {
	if h.Flags&transport.FlagCont != 0 {
		c.mu.Lock()
		in := c.inbound[h.Stream]
		c.mu.Unlock()
		if in == nil || !in.assembling {
			return protoErr("request continuation for stream %d, which has no request in progress", h.Stream)
		}
		if in.got+uint64(h.Length) > in.head.Total {
			return protoErr("request stream %d: %d more bytes overrun its %d-byte total", h.Stream, h.Length, in.head.Total)
		}
		in.body = grow(in.body, uint64(h.Length), in.head.Total)[:in.got+uint64(h.Length)]
		if _, err := c.readFull(in.body[in.got:], nil); err != nil {
			return c.truncated(err, "payload")
		}
		in.got += uint64(h.Length)
		if h.Flags&transport.FlagMore != 0 {
			return nil
		}
		if in.got != in.head.Total {
			return protoErr("request stream %d ended after %d of its %d bytes", h.Stream, in.got, in.head.Total)
		}
		return c.deliver(h.Stream, in)
	}
	fixed, err := c.next(transport.RequestHeadSize)
	if err != nil {
		return err
	}
	head, pathLen, err := transport.DecodeRequestFixed(fixed)
	if err != nil {
		return err
	}
	if transport.RequestHeadSize+uint32(pathLen) > h.Length {
		return protoErr("request path of %d bytes overruns the %d-byte frame", pathLen, h.Length)
	}
	p, err := c.next(pathLen)
	if err != nil {
		return err
	}
	head.Path = c.internPath(p)
	part := uint64(h.Length) - transport.RequestHeadSize - uint64(pathLen)
	if head.Total > c.opts.MaxMessageSize {
		return transport.ProtocolTooLarge("request of %d bytes, this side accepts %d (announced in the handshake)", head.Total, c.opts.MaxMessageSize)
	}
	more := h.Flags&transport.FlagMore != 0
	if part > head.Total || (!more && part != head.Total) {
		return protoErr("request stream %d: a frame of %d body bytes for a %d-byte total", h.Stream, part, head.Total)
	}
	dup := false
	if c.ninbound.Load() > 0 {
		c.mu.Lock()
		_, dup = c.inbound[h.Stream]
		c.mu.Unlock()
	}
	if dup {
		return protoErr("request on stream %d, which is still in use", h.Stream)
	}
	oneway := h.Flags&transport.FlagOneWay != 0
	var in *inbound
	if !more && !oneway && part <= smallFrame && c.inline != nil && c.inline.ServesInline(head.Path) {
		// Served at once on this goroutine: its record is the one the
		// last such request left (finishInbound), and its body an
		// allocation of its own, which the handler may keep.
		in = c.spareIn
		c.spareIn = nil
		if in == nil {
			in = new(inbound)
		}
		*in = inbound{head: head, got: part, reuse: true}
		in.body = c.takeBody(int(part))
	} else if in = (&inbound{head: head, oneway: oneway, got: part}); !more && part <= smallFrame {
		in.body = in.small[:part:part] // the body lives as long as in
	} else {
		// Sized by the bytes at hand, not by the total the frame claims.
		in.body = grow(nil, part, head.Total)[:part]
	}
	if _, err := c.readFull(in.body, nil); err != nil {
		return c.truncated(err, "payload")
	}
	if more {
		in.assembling = true
		c.mu.Lock()
		if c.inbound != nil {
			c.listInbound(h.Stream, in)
		}
		c.mu.Unlock()
		return nil
	}
	return c.deliver(h.Stream, in)
}

// maxInternedPaths bounds a connection's table of request paths.
const maxInternedPaths = 64

// internPath returns p as a string, from a small per-connection table so
// that the paths a connection sees again and again cost no allocation.
// Only the reader goroutine calls it.
func (c *Conn) internPath(p []byte) string {
	if s, ok := c.paths[string(p)]; ok {
		return s
	}
	s := string(p)
	if len(c.paths) < maxInternedPaths {
		if c.paths == nil {
			c.paths = make(map[string]string)
		}
		c.paths[s] = s
	}
	return s
}

// deliver hands a complete request to its handler.
func (c *Conn) deliver(id uint64, in *inbound) error {
	if in.oneway {
		c.mu.Lock()
		if c.inbound != nil && c.inbound[id] == in {
			c.unlistInbound(id)
		}
		c.mu.Unlock()
		m := onewayMsg{path: in.head.Path, payload: in.body}
		select {
		case c.oneway <- m:
		default:
			c.readerStalled.Store(true)
			select {
			case c.oneway <- m:
			case <-c.done:
			}
			c.readerStalled.Store(false)
		}
		return nil
	}
	if in.reuse || (c.inline != nil && c.inline.ServesInline(in.head.Path)) {
		// Served on this goroutine before the next frame is read, so no
		// cancel for it can arrive meanwhile: it stays out of the inbound
		// table (finishInbound lists a reply that goes out in several
		// writes, which a cancel may cut short), and without a deadline
		// its context is the connection's, which ends with it.
		ctx, cancel := c.ctx, context.CancelFunc(nil)
		if in.head.Budget > 0 {
			ctx, cancel = context.WithTimeout(c.ctx, in.head.Budget)
		}
		in.assembling = false
		in.cancel = cancel
		in.unlisted = true
		body := in.body
		in.body = nil
		c.serveRequest(ctx, id, in, in.head.Path, body) // no hand-off at all
		return nil
	}
	ctx, cancel := c.handlerContext(in.head.Budget)
	c.mu.Lock()
	if c.inbound == nil {
		c.mu.Unlock()
		cancel()
		return nil
	}
	in.assembling = false
	in.cancel = cancel // under mu: fail reads it from another goroutine
	c.listInbound(id, in)
	c.mu.Unlock()
	body := in.body
	in.body = nil
	return c.serveHere(func() { c.serveRequest(ctx, id, in, in.head.Path, body) })
}

// errHandedOff: this goroutine served a request while another took over
// reading; it must not touch the reader state again.
var errHandedOff = errors.New("reader handed off")

// serveHere runs serve (a handler) on this, the reader goroutine, after
// starting a new reader for the connection: the handler starts at once
// instead of waiting for a new goroutine to be scheduled. It returns
// errHandedOff: this goroutine must not read again.
func (c *Conn) serveHere(serve func()) error {
	go c.readLoop() // owns the reader state from here on
	serve()
	return errHandedOff
}

// handlerContext is a request's context. Its parent is Background, not
// the connection's context: the end of the connection cancels it through
// the inbound table (fail), which spares every request a registration in
// (and removal from) the connection context's child set.
func (c *Conn) handlerContext(budget time.Duration) (context.Context, context.CancelFunc) {
	if budget > 0 {
		return context.WithTimeout(context.Background(), budget)
	}
	return context.WithCancel(context.Background())
}

func (c *Conn) onBulkRead(h transport.Header) error {
	p, err := c.next(int(h.Length))
	if err != nil {
		return err
	}
	br, err := transport.DecodeBulkRead(p)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.inbound == nil {
		c.mu.Unlock()
		return nil
	}
	if _, dup := c.inbound[h.Stream]; dup {
		c.mu.Unlock()
		return protoErr("bulk-read on stream %d, which is still in use", h.Stream)
	}
	ctx, cancel := c.handlerContext(br.Budget)
	in := &inbound{cancel: cancel}
	c.listInbound(h.Stream, in)
	c.mu.Unlock()
	return c.serveHere(func() { c.serveRead(ctx, h.Stream, in, br.Ref) })
}

func (c *Conn) onCancel(id uint64) {
	c.mu.Lock()
	in := c.inbound[id]
	if in == nil {
		c.mu.Unlock()
		return // finished already, or never seen: nothing to stop
	}
	if in.assembling {
		c.unlistInbound(id)
		c.mu.Unlock()
		return
	}
	in.canceled = true
	g := in.group
	c.mu.Unlock()
	if g != nil {
		g.canceled.Store(true)
	}
	if in.cancel != nil {
		in.cancel()
	}
}

func (c *Conn) onResponse(h transport.Header) error {
	if !c.issued(h.Stream) {
		return protoErr("response for stream %d, which this side never opened", h.Stream)
	}
	if h.Flags&(transport.FlagMore|transport.FlagCont) == 0 && c.w-c.r >= int(h.Length) {
		// A reply in one frame that is all in the buffer, the usual case
		// for small ones: the call leaves the table at once, one trip
		// through it instead of two (a lookup now, a removal at the end),
		// and this goroutine completes it. Only when nothing is left to
		// read: a caller cancelling meanwhile finds its call gone and
		// waits for it, which must not wait on the peer.
		cl, ok := c.takeCall(h.Stream)
		if !ok {
			return c.discard(uint64(h.Length)) // abandoned by its caller
		}
		if err := c.readResponse(h, cl); err != nil {
			c.putBack(cl) // the connection's end completes it with the others
			return err
		}
		cl.complete(cl.resp, nil)
		return nil
	}
	cl := c.lookupCall(h.Stream)
	if cl == nil {
		return c.discard(uint64(h.Length)) // abandoned by its caller
	}
	if err := c.readResponse(h, cl); err != nil || h.Flags&transport.FlagMore != 0 {
		return err
	}
	if _, ok := c.takeCall(h.Stream); ok {
		cl.complete(cl.resp, nil)
	}
	return nil
}

// readResponse reads a response frame's payload into cl and checks the
// sizes; the call completes once a frame without FlagMore is in.
func (c *Conn) readResponse(h transport.Header, cl *call) error {
	if cl.bulk {
		return protoErr("response frame on bulk-read stream %d", h.Stream)
	}
	more := h.Flags&transport.FlagMore != 0
	if h.Flags&transport.FlagCont != 0 {
		if !cl.assembling {
			return protoErr("response continuation for stream %d, which has no response in progress", h.Stream)
		}
		if cl.got+uint64(h.Length) > cl.total {
			return protoErr("response stream %d: %d more bytes overrun its %d-byte total", h.Stream, h.Length, cl.total)
		}
		cl.resp = grow(cl.resp, uint64(h.Length), cl.total)[:cl.got+uint64(h.Length)]
		if _, err := c.readFull(cl.resp[cl.got:], nil); err != nil {
			return c.truncated(err, "payload")
		}
		cl.got += uint64(h.Length)
	} else {
		if cl.assembling {
			return protoErr("a second response for stream %d", h.Stream)
		}
		p, err := c.next(transport.ResponseHeadSize)
		if err != nil {
			return err
		}
		total := binary.BigEndian.Uint64(p)
		part := uint64(h.Length) - transport.ResponseHeadSize
		if total > c.opts.MaxMessageSize {
			return transport.ProtocolTooLarge("response of %d bytes, this side accepts %d (announced in the handshake)", total, c.opts.MaxMessageSize)
		}
		if part > total || (!more && part != total) {
			return protoErr("response stream %d: a frame of %d body bytes for a %d-byte total", h.Stream, part, total)
		}
		cl.total = total
		if !more && part <= smallFrame {
			cl.resp = c.takeBody(int(part))
		} else {
			cl.resp = grow(nil, part, total)[:part]
		}
		if _, err := c.readFull(cl.resp, nil); err != nil {
			return c.truncated(err, "payload")
		}
		cl.got = part
		cl.assembling = true
	}
	if !more && cl.got != cl.total {
		return protoErr("response stream %d ended after %d of its %d bytes", h.Stream, cl.got, cl.total)
	}
	return nil
}

func (c *Conn) onBulkData(h transport.Header) error {
	if !c.issued(h.Stream) {
		return protoErr("bulk data for stream %d, which this side never opened", h.Stream)
	}
	cl := c.lookupCall(h.Stream)
	if cl == nil {
		return c.discard(uint64(h.Length))
	}
	if !cl.bulk {
		return protoErr("bulk data on request stream %d", h.Stream)
	}
	n := uint64(h.Length)
	if cl.got+n > uint64(len(cl.dst)) {
		return protoErr("bulk stream %d: %d more bytes overrun the %d-byte range", h.Stream, n, len(cl.dst))
	}
	cl.mu.Lock()
	if cl.abandoned {
		cl.mu.Unlock()
		return c.discard(n)
	}
	cl.reading = true
	cl.mu.Unlock()

	got, err := c.readFull(cl.dst[cl.got:cl.got+n], cl.abandonFlag.Load)

	cl.mu.Lock()
	interrupted := cl.interrupted
	if interrupted {
		_ = c.s.Conn.SetReadDeadline(time.Time{})
		cl.interrupted = false
	}
	cl.reading = false
	abandoned := cl.abandoned
	if cl.idle != nil {
		close(cl.idle)
		cl.idle = nil
	}
	cl.mu.Unlock()

	if err != nil && !(interrupted && isDeadline(err)) {
		return c.truncated(err, "payload")
	}
	if abandoned || uint64(got) < n {
		// Stopped early (abandoned): skip the rest of this frame.
		return c.discard(n - uint64(got))
	}
	cl.got += n
	if h.Flags&transport.FlagMore != 0 {
		return nil
	}
	if cl.got != uint64(len(cl.dst)) {
		return protoErr("bulk stream %d ended after %d of its %d bytes", h.Stream, cl.got, len(cl.dst))
	}
	if _, ok := c.takeCall(h.Stream); ok {
		cl.complete(nil, nil)
	}
	return nil
}

func (c *Conn) onError(h transport.Header) error {
	p, err := c.next(int(h.Length))
	if err != nil {
		return err
	}
	re, err := transport.DecodeErrorPayload(p)
	if err != nil {
		return err
	}
	if h.Stream == 0 {
		return transport.PeerGone(fmt.Errorf("the peer ended the connection: %w", re))
	}
	if !c.client {
		return protoErr("the dialer sent an error for stream %d", h.Stream)
	}
	if !c.issued(h.Stream) {
		return protoErr("error for stream %d, which this side never opened", h.Stream)
	}
	if cl, ok := c.takeCall(h.Stream); ok {
		cl.complete(nil, re)
	}
	return nil
}

// grow returns b (its length unchanged) with room for n more bytes, never
// more than total in all: a message's memory follows the bytes that have
// arrived (at most about twice them), not the total its first frame
// claims, so a peer cannot make us allocate what it never sends.
func grow(b []byte, n, total uint64) []byte {
	need := uint64(len(b)) + n
	if need <= uint64(cap(b)) {
		return b
	}
	nb := make([]byte, len(b), min(total, max(need, 2*uint64(cap(b)))))
	copy(nb, b)
	return nb
}
