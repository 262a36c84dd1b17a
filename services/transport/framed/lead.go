package framed

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Busy polling (Stream.TryRead with Stream.SpinWait).
//
// A busy-polling reader retries a non-blocking read for SpinWait after the
// last bytes before it blocks in Conn.Read. On the dialing side a caller
// of Request goes further: instead of parking until the reader goroutine
// hands it its reply (a goroutine wake-up, and in Go often a thread
// wake-up on another core), it takes the socket over and reads its reply
// itself: the leader. Only one goroutine reads at a time; the role moves
// between the reader goroutine, one leader, and nobody (free):
//
//   - A caller that wants to lead, finding the role free, takes it. Finding
//     the reader goroutine spinning, it raises want; the reader grants the
//     role at its next frame boundary and parks. A reader that does not
//     grant quickly (blocked in Conn.Read, or inside a long frame) is left
//     alone: the caller then waits for its reply the usual way.
//   - A leader reads and dispatches every frame that comes (other callers'
//     replies too) until its own reply is in, its context ends, or nothing
//     came for SpinWait.
//   - Done, it hands the role back to the reader goroutine if other calls
//     are waiting; otherwise it leaves the role free for the next caller.
//     Whoever waits without leading makes sure the reader runs
//     (ensureReader); a leader letting go re-checks for a waiter that
//     registered meanwhile (free); and the keepalive tick wakes the reader
//     for frames nobody waits for (a ping, a goodbye), so an idle dialer
//     notices its peer's goodbye within a KeepaliveInterval. (A timer that
//     gave a free role back sooner was tried: resetting it on every call
//     woke the netpoller's thread each time, which cost more than it saved.)
//
// In a ping-pong the whole round trip then runs on the caller's goroutine,
// one thread per process, as a C loop would: no scheduler hand-off at all.

// Roles.
const (
	roleReader int32 = iota // the reader goroutine reads
	roleLeader              // a caller reads
	roleFree                // nobody: the next caller may lead, or a waiter wakes the reader
)

// want states.
const (
	wantNone int32 = iota
	wantAsked
	wantGranted
)

const (
	// spinCheck: a spinning reader looks at the clock, and yields its
	// processor, once per this many empty reads. A yield wakes an idle
	// processor's thread to look for work (runtime.Gosched calls wakep),
	// which on a small machine takes the core the peer is spinning on:
	// yielding after every empty read cost more than it saved.
	spinCheck = 16
	// grantWait bounds how long a caller waits for the reader goroutine
	// to hand it the socket.
	grantWait = 5 * time.Microsecond
)

// errYield: the reader goroutine stopped at a frame boundary because a
// caller asked to lead.
var errYield = errors.New("framed: reader yields to a leading caller")

// lead is a dialing connection's leader state (nil when not busy polling).
type lead struct {
	role atomic.Int32
	want atomic.Int32
	// trying: a caller is taking or holding the role (one at a time).
	trying atomic.Bool
	// wake gives the role back to the parked reader goroutine. At most one
	// hand-back is ever outstanding: the reader takes it before it can
	// grant the role again.
	wake chan struct{}
}

func newLead() *lead {
	return &lead{wake: make(chan struct{}, 1)}
}

// toReader gives a role this side holds (leader, or free) to the reader
// goroutine.
func (l *lead) toReader() {
	l.role.Store(roleReader)
	l.wake <- struct{}{}
}

// spinRead is a busy-polling connection's read: TryRead until bytes come,
// then Conn.Read once SpinWait has passed. On the reader goroutine at a
// frame boundary it returns errYield when a caller asked to lead.
func (c *Conn) spinRead(p []byte) (int, error) {
	var start time.Time
	for i := 1; ; i++ {
		n, err := c.s.TryRead(p)
		if n > 0 || err != nil {
			return n, err
		}
		if c.atBoundary && c.lead.want.Load() == wantAsked {
			return 0, errYield
		}
		if i%spinCheck == 0 {
			now := time.Now()
			if start.IsZero() {
				start = now
			} else if now.Sub(start) >= c.s.SpinWait {
				return c.s.Conn.Read(p)
			}
			runtime.Gosched()
		}
	}
}

// yieldToLeader grants the role to the caller that asked and waits until
// it comes back; false when the connection ended meanwhile. A caller that
// gave up asking keeps nothing from it: the reader reads on.
func (c *Conn) yieldToLeader() bool {
	l := c.lead
	// The role first: once granted, the leader may finish and set it
	// (free, or back to the reader) at any moment.
	l.role.Store(roleLeader)
	if !l.want.CompareAndSwap(wantAsked, wantGranted) {
		l.role.Store(roleReader)
		return true
	}
	select {
	case <-l.wake:
		return true
	case <-c.done:
		return false
	}
}

// tryLead makes the calling goroutine the reader if it can get the role
// at once.
func (c *Conn) tryLead() bool {
	l := c.lead
	if !l.trying.CompareAndSwap(false, true) {
		return false
	}
	if l.role.CompareAndSwap(roleFree, roleLeader) {
		return true
	}
	if l.role.Load() == roleReader {
		l.want.Store(wantAsked)
		start := time.Now()
		for l.want.Load() != wantGranted {
			if l.role.CompareAndSwap(roleFree, roleLeader) { // the reader let go meanwhile
				break
			}
			if time.Since(start) >= grantWait {
				if l.want.CompareAndSwap(wantAsked, wantNone) {
					l.trying.Store(false)
					return false
				}
				break // granted after all
			}
		}
		l.want.Store(wantNone)
		return true
	}
	l.trying.Store(false)
	return false
}

// idle is the reader goroutine's pause between frames when nobody waits
// for the peer: it leaves the role free for the next caller to lead and
// waits until someone gives it back (see free); false when the connection
// ended meanwhile.
func (c *Conn) idle() bool {
	l := c.lead
	if c.r != c.w || l.want.Load() != wantNone || c.pending() > 0 {
		return true
	}
	c.free()
	select {
	case <-l.wake:
		return true
	case <-c.done:
		return false
	}
}

// ensureReader makes sure someone reads for a caller that waits without
// leading.
func (c *Conn) ensureReader() {
	l := c.lead
	if l.role.CompareAndSwap(roleFree, roleReader) {
		l.wake <- struct{}{}
	}
}

// free leaves the role to the next caller. A caller that registered
// meanwhile (and found the role still taken) gets the reader back here;
// one that registers later wakes it itself (ensureReader), and so does
// the keepalive ticker, for frames nobody waits for (a ping, a goodbye).
func (c *Conn) free() {
	c.lead.role.Store(roleFree)
	if c.pending() > 0 {
		c.ensureReader()
	}
}

// leadFor reads and dispatches frames, as the leader, until cl completes
// (true: it completed while this goroutine held the role), or until ctx
// ends, the peer stays silent for SpinWait or the connection fails (false:
// wait for cl the usual way). The role is given up either way.
func (c *Conn) leadFor(ctx context.Context, cl *call) bool {
	l := c.lead
	c.allocAhead() // the reply is a round trip away
	var start time.Time
	for i := 1; !cl.fin.Load(); i++ {
		got, err := c.tryFill(transport.HeaderSize)
		if got || err != nil {
			// A read error comes back from readHeader too, described.
			var h transport.Header
			h, err = c.readHeader()
			if err == nil {
				err = c.dispatch(h)
			}
			if err != nil {
				l.trying.Store(false)
				l.role.Store(roleReader) // the parked reader ends with the connection
				c.readFailed(err)
				return false
			}
			start = time.Time{}
		}
		if i%spinCheck != 0 {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if !got {
			now := time.Now()
			if start.IsZero() {
				start = now
			} else if now.Sub(start) >= c.s.SpinWait {
				break
			}
			runtime.Gosched()
		}
	}
	l.trying.Store(false)
	// Looked at before the role goes: once another goroutine reads, it
	// may complete cl at any moment, and the caller must then wait for
	// it the usual way (Request reuses a call only this goroutine
	// completed, and complete is still running over there).
	fin := cl.fin.Load()
	if !fin || c.pending() > 0 {
		l.toReader()
	} else {
		c.free()
	}
	return fin
}

// pending is how many calls wait for the peer.
//
// A caller registers (ncalls) and then looks at the role; a leader sets
// the role and then looks at ncalls. Both are sequentially consistent
// atomics, so at least one of the two sees the other's store: a call is
// never left with nobody reading for it (see free).
func (c *Conn) pending() int {
	return int(c.ncalls.Load())
}
