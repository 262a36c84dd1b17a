package ring

import (
	"errors"
	"fmt"
	"time"
)

// PollMode says how a waiting side behaves once the ring is empty (or full). It is a
// per-process choice, mapped from config network.poll_mode.
type PollMode int

const (
	// EventDriven polls only a few times, then sleeps on the futex: an idle waiter
	// costs no CPU, a wake-up costs a system call and a scheduler hop on each side.
	// It is the zero value.
	EventDriven PollMode = iota
	// BusyPoll spins for FLX_RING_SPIN_BUSY polls (roughly 10-50 ms, depending on the
	// CPU) before it sleeps: the lowest latency, at the price of a busy core while
	// traffic flows and for that long after it stops.
	BusyPoll
)

// MaxWaitSlice bounds one native wait when the context can be cancelled: a cancelled
// or expired context is noticed at most this long after the fact. A context that can
// never be cancelled (context.Background) waits in one native call, woken only by the
// peer or by ClosePeer.
const MaxWaitSlice = 20 * time.Millisecond

func (m PollMode) String() string {
	switch m {
	case EventDriven:
		return "event_driven"
	case BusyPoll:
		return "busy_poll"
	}
	return fmt.Sprintf("PollMode(%d)", int(m))
}

// ParsePollMode reads the config spelling: "busy_poll" or "event_driven".
func ParsePollMode(s string) (PollMode, error) {
	switch s {
	case "event_driven":
		return EventDriven, nil
	case "busy_poll":
		return BusyPoll, nil
	}
	return 0, fmt.Errorf("ring: unknown poll mode %q: use busy_poll or event_driven", s)
}

// ErrNotSupported is returned by every constructor of a build without cgo or for a
// system other than Linux (the rings use Linux futexes).
var ErrNotSupported = errors.New("ring: shared-memory rings need Linux and cgo; build with CGO_ENABLED=1 on Linux")
