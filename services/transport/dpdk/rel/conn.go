package rel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Defaults for Config's zero fields.
const (
	DefaultMTU        = 1500
	DefaultWindow     = 256
	DefaultMinRTO     = 5 * time.Millisecond
	DefaultMaxRTO     = 500 * time.Millisecond
	DefaultInitialRTO = 50 * time.Millisecond
	DefaultDeadAfter  = 15 * time.Second
	DefaultLinger     = 2 * time.Second
	DefaultAckDelay   = time.Millisecond
	// fastRetxDups is how many acks must report later segments past a hole
	// before the hole is sent again without waiting for its RTO.
	fastRetxDups = 3
	// sackBits is how many segments past the cumulative ack one ack covers.
	sackBits = 64
	// minTick bounds how often the retransmission timer wakes.
	minTick = time.Millisecond
)

// flagAckReq asks the receiver to answer with an ack at once (a window
// probe, or a FIN/data segment that wants a quick answer).
const flagAckReq = 1

// Errors a Conn's Read and Write return once it has failed.
var (
	// ErrReset: the peer reset the connection (it closed and forgot it, or
	// gave up on it).
	ErrReset = fmt.Errorf("rel: connection reset by peer: %w", syscall.ECONNRESET)
	// ErrPeerDead: the peer went silent for Config.DeadAfter with data pending.
	ErrPeerDead = fmt.Errorf("rel: peer stopped acknowledging: %w", syscall.ETIMEDOUT)
)

// Config configures a Conn.
type Config struct {
	// MTU is the largest datagram Output is given, header included.
	MTU int
	// Window is the most segments in flight, and the most the receiver
	// buffers (out of order plus unread): the flow-control window.
	Window int
	// MinRTO, MaxRTO and InitialRTO bound the retransmission timeout.
	MinRTO, MaxRTO, InitialRTO time.Duration
	// DeadAfter fails the connection when it has data to deliver and has
	// heard nothing from the peer this long.
	DeadAfter time.Duration
	// Linger bounds how long a closed Conn keeps retransmitting what the
	// peer has not acked yet (its FIN included).
	Linger time.Duration
	// Output sends one datagram. It must not block for long, must not keep
	// b after returning and must not call back into the Conn: it runs with
	// the Conn's lock held, so datagrams leave in the order they were made.
	// A lost datagram is fine (return nil or an error; both are retried).
	Output func(b []byte) error
	// Kick, when set, defers output to Flush (coalescing): Write, Read and
	// Input only queue and call Kick, once until the next Flush, and the
	// link's transmit loop calls Flush just before it sends. Bytes written
	// meanwhile are packed into the last unsent segment up to the MTU, and
	// the acks of every datagram received meanwhile become one ack, or
	// ride on a data segment. Kick runs with the Conn's lock held: it must
	// not block or call back into the Conn. Retransmissions and probes
	// still go out from the timer at once.
	Kick func()
	// AckDelay, with Kick, is how long an ack may wait for a data segment
	// to ride on (a reply), like TCP's delayed ack. Acks still go at the
	// next Flush for a FIN, a segment out of order or a duplicate, an ack
	// request, or a second segment not acked yet.
	AckDelay time.Duration
	// OnDone, if set, runs once when the Conn is finished: closed locally
	// and either fully acked, out of linger time, or failed. A mux uses it
	// to forget the connection id.
	OnDone func()
	// Local and Remote are what LocalAddr and RemoteAddr return.
	Local, Remote net.Addr
}

func (c Config) withDefaults() Config {
	if c.MTU <= 0 {
		c.MTU = DefaultMTU
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MinRTO <= 0 {
		c.MinRTO = DefaultMinRTO
	}
	if c.MaxRTO <= 0 {
		c.MaxRTO = DefaultMaxRTO
	}
	if c.InitialRTO <= 0 {
		c.InitialRTO = DefaultInitialRTO
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
	}
	if c.AckDelay <= 0 {
		c.AckDelay = DefaultAckDelay
	}
	return c
}

type seg struct {
	seq    uint32
	kind   byte
	data   []byte
	sentAt time.Time
	retx   int  // times sent again
	sacked bool // the receiver has it (but not everything before it)
	dups   int  // acks that reported later segments past this one
}

// Stats counts a Conn's datagrams, for tests and benchmarks.
type Stats struct {
	Sent, Retransmitted, Received, Corrupt, Duplicate, Probes uint64
}

// Conn is one side of a reliable stream. It implements net.Conn.
type Conn struct {
	cfg     Config
	payload int // MTU - HeaderSize

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	kick    chan struct{} // wakes the timer goroutine
	done    chan struct{} // closed when finished
	obuf    []byte

	// Sender.
	segs     []seg // sndUna first; segs[:nsent] have been sent
	nsent    int
	sndUna   uint32
	sndNxt   uint32 // next sequence number to assign
	sndLimit uint32 // the peer's ack + window: segments below it may be sent
	ackMax   uint32 // the highest cumulative ack seen
	srtt     time.Duration
	rttvar   time.Duration
	rto      time.Duration
	heard    time.Time // when the peer was last heard from (or data queued after idle)
	// timerAt is when the timer goroutine runs next; zero while it waits
	// for a kick. Kicks it does not need are skipped: each is a goroutine
	// wake-up.
	timerAt time.Time
	probeAt time.Time

	// Receiver.
	rcvNxt  uint32
	ooo     map[uint32]seg
	readq   [][]byte
	readLen int
	eof     bool
	advWnd  uint32

	// Deferred output (Config.Kick).
	kicked     bool      // Kick was called and Flush has not run since
	ackPending bool      // an ack is owed and no datagram has carried it yet
	ackUrgent  bool      // ... and must go at the next Flush
	ackAt      time.Time // ... else by then (zero: not yet timed)
	unacked    int       // segments received since the last ack we sent

	closed    bool // Close was called
	finQueued bool
	lingerEnd time.Time
	err       error // set when the connection failed
	finished  bool

	rdl, wdl time.Time

	stats Stats
}

var _ net.Conn = (*Conn)(nil)

// New starts a Conn. Both ends must start at sequence 0 (the mux's
// handshake sets the connection up before any data flows).
func New(cfg Config) *Conn {
	cfg = cfg.withDefaults()
	if cfg.MTU <= HeaderSize {
		panic("rel: MTU below the header size")
	}
	c := &Conn{
		cfg:      cfg,
		payload:  cfg.MTU - HeaderSize,
		changed:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		rto:      cfg.InitialRTO,
		sndLimit: uint32(cfg.Window), // until the peer says otherwise
		ooo:      make(map[uint32]seg),
		advWnd:   uint32(cfg.Window),
		obuf:     make([]byte, 0, cfg.MTU),
	}
	go c.timerLoop()
	return c
}

// Done is closed when the Conn is finished (see Config.OnDone).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Stats returns the counters so far.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Conn) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Conn) kickTimer() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Conn) output(p *packet) {
	c.obuf = appendPacket(c.obuf[:0], p)
	c.stats.Sent++
	_ = c.cfg.Output(c.obuf)
}

// wnd is the receive window to advertise: segments past rcvNxt we buffer.
func (c *Conn) wndLocked() uint32 {
	used := len(c.ooo) + (c.readLen+c.payload-1)/c.payload
	if used >= c.cfg.Window {
		return 0
	}
	return uint32(c.cfg.Window - used)
}

func (c *Conn) sackLocked() uint64 {
	var s uint64
	if len(c.ooo) == 0 {
		return 0
	}
	for i := range sackBits {
		if _, ok := c.ooo[c.rcvNxt+1+uint32(i)]; ok {
			s |= 1 << i
		}
	}
	return s
}

// ackSentLocked: a datagram about to leave carries the ack.
func (c *Conn) ackSentLocked() {
	c.ackPending, c.ackUrgent, c.ackAt, c.unacked = false, false, time.Time{}, 0
}

func (c *Conn) sendAckLocked(flags byte) {
	c.ackSentLocked()
	c.advWnd = c.wndLocked()
	c.output(&packet{kind: kindAck, flags: flags, ack: c.rcvNxt, wnd: c.advWnd, sack: c.sackLocked()})
}

func (c *Conn) sendSegLocked(s *seg, now time.Time) {
	c.ackSentLocked()
	c.advWnd = c.wndLocked()
	p := packet{kind: s.kind, seq: s.seq, ack: c.rcvNxt, wnd: c.advWnd, sack: c.sackLocked(), payload: s.data}
	s.sentAt = now
	c.output(&p)
}

// kickLocked asks for a Flush, once until it runs.
func (c *Conn) kickLocked() {
	if !c.kicked {
		c.kicked = true
		c.cfg.Kick()
	}
}

// outputLocked sends what is queued (and the ack owed, if asked) now, or,
// when output is deferred, asks for a Flush to send it; an ack that is not
// urgent waits up to AckDelay for data to carry it.
func (c *Conn) outputLocked(now time.Time, ack, urgent bool) {
	if c.cfg.Kick != nil {
		if ack {
			c.ackPending = true
			c.ackUrgent = c.ackUrgent || urgent
			if !c.ackUrgent && c.ackAt.IsZero() {
				c.ackAt = now.Add(c.cfg.AckDelay)
				if c.timerAt.IsZero() || c.timerAt.After(c.ackAt) {
					c.kickTimer()
				}
			}
		}
		if c.ackUrgent || c.nsent < len(c.segs) {
			c.kickLocked()
		}
		return
	}
	if ack && c.err == nil {
		c.sendAckLocked(0)
	}
	c.pumpLocked(now)
}

// Flush sends what deferred output queued (Config.Kick): the segments the
// peer's window admits, then an urgent ack owed if none of them carried it
// (the timer sends one that is not).
func (c *Conn) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kicked = false
	if c.err != nil || c.finished {
		return
	}
	c.pumpLocked(time.Now())
	if c.ackPending && c.ackUrgent {
		c.sendAckLocked(0)
	}
}

// pumpLocked sends the queued segments the peer's window admits.
func (c *Conn) pumpLocked(now time.Time) {
	if c.err != nil {
		return
	}
	for c.nsent < len(c.segs) {
		s := &c.segs[c.nsent]
		if !seqLess(s.seq, c.sndLimit) || c.nsent >= c.cfg.Window {
			break
		}
		c.sendSegLocked(s, now)
		c.nsent++
		if c.timerAt.IsZero() {
			c.kickTimer() // it runs again well within an RTO otherwise
		}
	}
}

// Write queues p and returns when all of it is queued (the send buffer
// holds two windows). A write deadline that passes returns the bytes
// queued so far with os.ErrDeadlineExceeded.
func (c *Conn) Write(p []byte) (int, error) {
	n := 0
	c.mu.Lock()
	defer c.mu.Unlock()
	for n < len(p) {
		if err := c.writeErrLocked(); err != nil {
			return n, err
		}
		if len(c.segs) >= 2*c.cfg.Window {
			if err := c.waitLocked(c.wdl); err != nil {
				return n, err
			}
			continue
		}
		// One copy of the rest of p (up to the free buffer) for all its segments.
		if len(c.segs) == 0 {
			// The timer sleeps while nothing is queued; it must run now to
			// retransmit or, if the peer's window is closed, to probe it.
			c.heard = time.Now()
			if c.timerAt.IsZero() {
				c.kickTimer()
			}
		}
		n += c.appendLocked(p[n:])
		c.outputLocked(time.Now(), false, false)
	}
	return n, nil
}

// appendLocked queues bytes of p as segments, as many as the send buffer
// takes, and returns how many. Bytes first fill the last segment if it is
// an unsent data segment with room (coalescing small writes into one
// datagram); a segment is never changed once sent, so a retransmission
// carries exactly what the first transmission did.
func (c *Conn) appendLocked(p []byte) int {
	n := 0
	if k := len(c.segs) - 1; k >= c.nsent && c.segs[k].kind == kindData {
		t := &c.segs[k]
		if room := c.payload - len(t.data); room > 0 {
			m := min(room, len(p))
			t.data = append(t.data, p[:m]...)
			n = m
		}
	}
	if n == len(p) {
		return n
	}
	// One copy of the full segments' bytes (up to the free buffer); a
	// last partial segment has a copy of its own, which later writes may
	// grow (appending reallocates it) up to a full one.
	room := (2*c.cfg.Window - len(c.segs)) * c.payload
	rest := p[n : n+min(room, len(p)-n)]
	full := len(rest) / c.payload * c.payload
	chunk := append([]byte(nil), rest[:full]...)
	for len(chunk) > 0 {
		c.segs = append(c.segs, seg{seq: c.sndNxt, kind: kindData, data: chunk[:c.payload:c.payload]})
		c.sndNxt++
		chunk = chunk[c.payload:]
	}
	if tail := rest[full:]; len(tail) > 0 {
		c.segs = append(c.segs, seg{seq: c.sndNxt, kind: kindData, data: append([]byte(nil), tail...)})
		c.sndNxt++
	}
	return n + len(rest)
}

// TryWrite queues as much of p as the send buffer takes without waiting
// and returns how much (framed.Stream.TryWrite: a producer that finds the
// connection idle writes its frame itself, without waking a writer
// goroutine).
func (c *Conn) TryWrite(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.writeErrLocked(); err != nil {
		return 0, err
	}
	if len(p) == 0 || len(c.segs) >= 2*c.cfg.Window {
		return 0, nil
	}
	if len(c.segs) == 0 {
		c.heard = time.Now()
		if c.timerAt.IsZero() {
			c.kickTimer()
		}
	}
	n := c.appendLocked(p)
	c.outputLocked(time.Now(), false, false)
	return n, nil
}

func (c *Conn) writeErrLocked() error {
	switch {
	case c.closed || c.finQueued:
		return net.ErrClosed
	case c.err != nil:
		return c.err
	}
	return nil
}

// waitLocked waits (unlocking) for a state change or the deadline.
func (c *Conn) waitLocked(deadline time.Time) error {
	ch := c.changed
	if deadline.IsZero() {
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
		return nil
	}
	d := time.Until(deadline)
	if d <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(d)
	c.mu.Unlock()
	select {
	case <-ch:
	case <-t.C:
	}
	t.Stop()
	c.mu.Lock()
	return nil
}

// Read reads stream bytes in order; io.EOF after the peer's FIN.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed {
			return 0, net.ErrClosed
		}
		if c.readLen > 0 {
			break
		}
		if c.eof {
			return 0, io.EOF
		}
		if c.err != nil {
			return 0, c.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if err := c.waitLocked(c.rdl); err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(p) && len(c.readq) > 0 {
		k := copy(p[n:], c.readq[0])
		n += k
		if k == len(c.readq[0]) {
			c.readq[0] = nil
			c.readq = c.readq[1:]
		} else {
			c.readq[0] = c.readq[0][k:]
		}
	}
	c.readLen -= n
	// Tell a sender stalled on our window that it opened.
	if w := c.wndLocked(); c.err == nil && (c.advWnd == 0 && w > 0 || w >= c.advWnd+uint32(c.cfg.Window/4)) {
		c.outputLocked(time.Now(), true, true)
	}
	return n, nil
}

// Input hands the Conn one received datagram. It does not keep b.
func (c *Conn) Input(b []byte) {
	p, err := parsePacket(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.stats.Corrupt++
		return
	}
	c.stats.Received++
	if c.finished {
		return
	}
	if p.kind == kindReset {
		c.failLocked(ErrReset, false)
		return
	}
	now := time.Now()
	c.heard = now
	c.ackLocked(&p, now)
	urgent := p.flags&flagAckReq != 0
	ack := urgent
	if p.kind == kindData || p.kind == kindFin {
		ack = true
		c.unacked++
		before := c.rcvNxt
		inOrder := c.receiveLocked(&p)
		// Urgent: a duplicate or a segment out of order (the sender may
		// be retransmitting), one that filled a hole, a FIN, or a
		// second segment not acked yet.
		urgent = urgent || !inOrder || len(c.ooo) > 0 || c.rcvNxt-before > 1 || p.kind == kindFin || c.unacked >= 2
	}
	c.outputLocked(now, ack, urgent)
	c.maybeFinishLocked(now)
	c.notifyLocked()
}

// ackLocked applies the ack fields of p to the sender.
func (c *Conn) ackLocked(p *packet, now time.Time) {
	if seqLess(p.ack, c.ackMax) || seqLess(c.sndNxt, p.ack) {
		return // stale (reordered) or impossible
	}
	c.ackMax = p.ack
	c.sndLimit = p.ack + p.wnd
	for len(c.segs) > 0 && seqLess(c.segs[0].seq, p.ack) {
		s := &c.segs[0]
		if c.nsent == 0 {
			break // cannot ack what was never sent
		}
		if s.retx == 0 {
			c.sampleRTT(now.Sub(s.sentAt))
		}
		c.segs[0] = seg{}
		c.segs = c.segs[1:]
		c.nsent--
		c.sndUna = s.seq + 1
	}
	if p.sack == 0 {
		return
	}
	high := -1
	for i := range min(sackBits, c.nsent) {
		if p.sack&(1<<i) != 0 && i+1 < c.nsent {
			c.segs[i+1].sacked = true
			high = i + 1
		}
	}
	for i := 0; i < high; i++ {
		s := &c.segs[i]
		if s.sacked {
			continue
		}
		s.dups++
		if s.dups == fastRetxDups {
			s.retx++
			c.stats.Retransmitted++
			c.sendSegLocked(s, now)
		}
	}
}

func (c *Conn) sampleRTT(r time.Duration) {
	if c.srtt == 0 {
		c.srtt, c.rttvar = r, r/2
	} else {
		d := c.srtt - r
		if d < 0 {
			d = -d
		}
		c.rttvar = (3*c.rttvar + d) / 4
		c.srtt = (7*c.srtt + r) / 8
	}
	c.rto = min(max(c.srtt+4*c.rttvar, c.cfg.MinRTO), c.cfg.MaxRTO)
}

// receiveLocked stores a data or FIN segment and delivers what is in
// order. It reports whether p was the next segment expected.
func (c *Conn) receiveLocked(p *packet) bool {
	if seqLess(p.seq, c.rcvNxt) || p.seq-c.rcvNxt >= uint32(c.cfg.Window) {
		c.stats.Duplicate++ // old, or past the window we advertised
		return false
	}
	if _, ok := c.ooo[p.seq]; ok {
		c.stats.Duplicate++
		return false
	}
	next := p.seq == c.rcvNxt
	c.ooo[p.seq] = seg{kind: p.kind, data: append([]byte(nil), p.payload...)}
	for {
		s, ok := c.ooo[c.rcvNxt]
		if !ok {
			break
		}
		delete(c.ooo, c.rcvNxt)
		c.rcvNxt++
		if s.kind == kindFin {
			c.eof = true
			continue
		}
		if len(s.data) > 0 && !c.eof {
			c.readq = append(c.readq, s.data)
			c.readLen += len(s.data)
		}
	}
	return next
}

// failLocked ends the connection with err; reset tells the peer.
func (c *Conn) failLocked(err error, reset bool) {
	if c.err == nil {
		c.err = err
		if reset {
			c.output(&packet{kind: kindReset})
		}
	}
	c.finishLocked()
}

func (c *Conn) finishLocked() {
	if c.finished {
		return
	}
	c.finished = true
	close(c.done)
	c.notifyLocked()
	if c.cfg.OnDone != nil {
		go c.cfg.OnDone()
	}
}

// maybeFinishLocked finishes a closed Conn once the peer has all of it.
func (c *Conn) maybeFinishLocked(now time.Time) {
	if !c.closed || c.finished {
		return
	}
	if len(c.segs) == 0 || now.After(c.lingerEnd) {
		c.finishLocked()
	}
}

// CloseWrite sends FIN after the queued bytes (the peer reads io.EOF after
// them) and keeps the read side open, like TCP's half close. Write returns
// net.ErrClosed from now on.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finQueued || c.closed {
		return net.ErrClosed
	}
	c.queueFinLocked(time.Now())
	return nil
}

func (c *Conn) queueFinLocked(now time.Time) {
	c.finQueued = true
	if c.err == nil {
		if len(c.segs) == 0 {
			c.heard = now
		}
		c.segs = append(c.segs, seg{seq: c.sndNxt, kind: kindFin})
		c.sndNxt++
		c.outputLocked(now, false, false)
	}
	c.notifyLocked()
	c.kickTimer()
}

// Close sends FIN after the queued bytes (unless CloseWrite did) and
// returns at once; the Conn keeps retransmitting for up to Config.Linger.
// Read and Write return net.ErrClosed from now on.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	now := time.Now()
	c.lingerEnd = now.Add(c.cfg.Linger)
	if !c.finQueued {
		c.queueFinLocked(now)
	}
	c.maybeFinishLocked(now)
	c.notifyLocked()
	return nil
}

// Abort fails the connection at once, telling the peer (a reset).
func (c *Conn) Abort(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		err = ErrReset
	}
	c.closed = true
	c.failLocked(err, true)
}

func (c *Conn) timerLoop() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		c.mu.Lock()
		now := time.Now()
		next := c.onTimerLocked(now)
		c.timerAt = time.Time{}
		if next > 0 {
			c.timerAt = now.Add(next)
		}
		c.mu.Unlock()
		if next > 0 {
			t.Reset(next)
			select {
			case <-t.C:
			case <-c.kick:
			case <-c.done:
				return
			}
			continue
		}
		select {
		case <-c.kick:
		case <-c.done:
			return
		}
	}
}

// onTimerLocked retransmits what timed out, probes a closed window and
// detects a dead peer; it returns when to run again (0: nothing pending).
func (c *Conn) onTimerLocked(now time.Time) time.Duration {
	if c.finished {
		return 0
	}
	c.maybeFinishLocked(now)
	if c.finished {
		return 0
	}
	if len(c.segs) > 0 && now.Sub(c.heard) > c.cfg.DeadAfter {
		c.failLocked(ErrPeerDead, true)
		return 0
	}
	for i := range c.nsent {
		s := &c.segs[i]
		if s.sacked {
			continue
		}
		if now.Sub(s.sentAt) >= min(c.rto<<min(s.retx, 16), c.cfg.MaxRTO) {
			s.retx++
			c.stats.Retransmitted++
			c.sendSegLocked(s, now)
		}
	}
	if c.nsent == 0 && len(c.segs) > 0 && !seqLess(c.segs[0].seq, c.sndLimit) && now.After(c.probeAt) {
		// The peer's window is closed and the update may be lost: ask again.
		c.probeAt = now.Add(c.rto)
		c.stats.Probes++
		c.sendAckLocked(flagAckReq)
	}
	// A delayed ack that no data carried in time.
	if c.ackPending && !c.ackAt.IsZero() && !now.Before(c.ackAt) {
		c.sendAckLocked(0)
	}
	var next time.Duration
	if len(c.segs) > 0 || c.closed {
		next = max(c.rto/4, minTick)
	}
	if c.ackPending && !c.ackAt.IsZero() {
		if d := c.ackAt.Sub(now); next == 0 || d < next {
			next = max(d, time.Microsecond)
		}
	}
	return next
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.cfg.Local }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.cfg.Remote }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.rdl, c.wdl = t, t
	c.notifyLocked()
	c.mu.Unlock()
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.rdl = t
	c.notifyLocked()
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.notifyLocked()
	c.mu.Unlock()
	return nil
}

// IsClosedErr reports an error that means the connection is over.
func IsClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, ErrReset) || errors.Is(err, ErrPeerDead)
}
