package rdma

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrTooDeep: a request for more credits than the queue has in all; it
// could never be granted.
var ErrTooDeep = errors.New("rdma: more work requests than the queue depth")

// ErrOverRelease: more credits returned than were taken — a completion
// counted twice. A bug in the caller; the credits are left unchanged.
var ErrOverRelease = errors.New("rdma: credits released that were never acquired")

// Credits counts a queue pair's free send-queue slots: posting a work
// request beyond the depth the QP was created with fails in the NIC
// (ENOMEM from ibv_post_send), so every post first takes a credit and every
// completion gives back the credits of the requests it retires (with
// selective signaling one signaled completion retires the unsignaled
// requests posted before it). Waiters are served first come, first served,
// so a large batch is not starved by a stream of single posts.
type Credits struct {
	mu      sync.Mutex
	depth   int
	free    int
	waiters []*creditWaiter
	closed  error
}

type creditWaiter struct {
	n     int
	ready chan struct{}
}

// NewCredits returns depth free credits (depth >= 1).
func NewCredits(depth int) *Credits {
	if depth < 1 {
		depth = 1
	}
	return &Credits{depth: depth, free: depth}
}

// Depth is the total number of credits.
func (c *Credits) Depth() int { return c.depth }

// Free is the number of credits not held now.
func (c *Credits) Free() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.free
}

// TryAcquire takes n credits if they are free now and nobody waits ahead.
func (c *Credits) TryAcquire(n int) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check(n); err != nil {
		return false, err
	}
	if len(c.waiters) == 0 && c.free >= n {
		c.free -= n
		return true, nil
	}
	return false, nil
}

func (c *Credits) check(n int) error {
	if c.closed != nil {
		return c.closed
	}
	if n < 1 || n > c.depth {
		return fmt.Errorf("%w: %d requested, depth %d", ErrTooDeep, n, c.depth)
	}
	return nil
}

// Acquire takes n credits, waiting for completions to return them until ctx
// ends (its error is returned) or Close is called (its error is returned).
func (c *Credits) Acquire(ctx context.Context, n int) error {
	c.mu.Lock()
	if err := c.check(n); err != nil {
		c.mu.Unlock()
		return err
	}
	if len(c.waiters) == 0 && c.free >= n {
		c.free -= n
		c.mu.Unlock()
		return nil
	}
	w := &creditWaiter{n: n, ready: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	c.mu.Unlock()

	select {
	case <-w.ready:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.closedFor(w)
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-w.ready:
			// Granted while we were giving up: hand the credits back.
			if err := c.closedFor(w); err != nil {
				return err
			}
			c.free += n
			c.grant()
		default:
			c.dropWaiter(w)
			c.grant() // a smaller waiter behind us may fit now
		}
		return ctx.Err()
	}
}

// closedFor says whether w was woken by Close rather than granted; w.n is
// set to 0 by Close.
func (c *Credits) closedFor(w *creditWaiter) error {
	if w.n == 0 {
		return c.closed
	}
	return nil
}

func (c *Credits) dropWaiter(w *creditWaiter) {
	for i, x := range c.waiters {
		if x == w {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			return
		}
	}
}

// grant wakes waiters in order while the head fits.
func (c *Credits) grant() {
	for len(c.waiters) > 0 && c.waiters[0].n <= c.free {
		w := c.waiters[0]
		c.waiters = c.waiters[1:]
		c.free -= w.n
		close(w.ready)
	}
}

// Release gives back n credits (n work requests retired by completions).
func (c *Credits) Release(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 0 || c.free+n > c.depth {
		return fmt.Errorf("%w: %d returned with %d of %d free", ErrOverRelease, n, c.free, c.depth)
	}
	c.free += n
	c.grant()
	return nil
}

// Close fails every waiter and every later Acquire with err (ErrClosed when
// nil), e.g. ErrPeerGone when the QP went to the error state.
func (c *Credits) Close(err error) {
	if err == nil {
		err = ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != nil {
		return
	}
	c.closed = err
	for _, w := range c.waiters {
		w.n = 0
		close(w.ready)
	}
	c.waiters = nil
}
