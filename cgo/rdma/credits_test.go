package rdma

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestCreditsTable(t *testing.T) {
	c := NewCredits(4)
	steps := []struct {
		op   string
		n    int
		ok   bool
		err  error
		free int
	}{
		{"try", 3, true, nil, 1},
		{"try", 2, false, nil, 1},
		{"try", 5, false, ErrTooDeep, 1},
		{"try", 0, false, ErrTooDeep, 1},
		{"release", 2, true, nil, 3},
		{"release", 2, false, ErrOverRelease, 3},
		{"try", 3, true, nil, 0},
		{"release", 4, true, nil, 4},
	}
	for i, s := range steps {
		var ok bool
		var err error
		if s.op == "try" {
			ok, err = c.TryAcquire(s.n)
		} else {
			err = c.Release(s.n)
			ok = err == nil
		}
		if ok != s.ok || !errors.Is(err, s.err) || (s.err == nil && err != nil) || c.Free() != s.free {
			t.Fatalf("step %d %s(%d): ok %v err %v free %d; want %v %v %d", i, s.op, s.n, ok, err, c.Free(), s.ok, s.err, s.free)
		}
	}
}

func TestCreditsBlockUntilReleaseFIFO(t *testing.T) {
	c := NewCredits(2)
	ctx := context.Background()
	if err := c.Acquire(ctx, 2); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 2)
	big := make(chan error, 1)
	go func() { err := c.Acquire(ctx, 2); order <- 2; big <- err }()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.waiters) == 1 })
	go func() { _ = c.Acquire(ctx, 1); order <- 1 }()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.waiters) == 2 })
	// One credit back: the small waiter fits but must not overtake the big one.
	if err := c.Release(1); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.TryAcquire(1); ok {
		t.Fatal("TryAcquire jumped the queue")
	}
	_ = c.Release(1)
	if first := <-order; first != 2 || <-big != nil {
		t.Fatalf("waiter %d was served first, want the big one (FIFO)", first)
	}
	_ = c.Release(2)
	if <-order != 1 {
		t.Fatal("small waiter not served")
	}
}

func TestCreditsContextAndClose(t *testing.T) {
	c := NewCredits(1)
	_ = c.Acquire(context.Background(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := c.Acquire(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire past deadline: %v", err)
	}
	gone := errors.New("peer gone")
	done := make(chan error)
	go func() { done <- c.Acquire(context.Background(), 1) }()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.waiters) == 1 })
	c.Close(gone)
	if err := <-done; !errors.Is(err, gone) {
		t.Fatalf("waiter after Close: %v", err)
	}
	if _, err := c.TryAcquire(1); !errors.Is(err, gone) {
		t.Fatalf("TryAcquire after Close: %v", err)
	}
}

// Many goroutines post and complete at random: outstanding never exceeds
// the depth and every credit comes back.
func TestCreditsConcurrent(t *testing.T) {
	const depth = 8
	c := NewCredits(depth)
	var mu sync.Mutex
	out, peak := 0, 0
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 2))
			for i := 0; i < 200; i++ {
				n := 1 + rng.IntN(depth)
				if err := c.Acquire(context.Background(), n); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				out += n
				peak = max(peak, out)
				mu.Unlock()
				mu.Lock()
				out -= n
				mu.Unlock()
				if err := c.Release(n); err != nil {
					t.Error(err)
					return
				}
			}
		}(uint64(g))
	}
	wg.Wait()
	if peak > depth || c.Free() != depth {
		t.Fatalf("peak outstanding %d (depth %d), free at the end %d", peak, depth, c.Free())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
