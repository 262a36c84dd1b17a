//go:build unix

package tcp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// TestBusyPollReadingRoleMoves drives one busy_poll connection through
// every way its reading role moves (framed/lead.go): callers leading back
// to back, pauses longer than the spin (the role is left free, and a
// waiter or the keepalive tick gives it back to the reader goroutine), concurrent callers (one
// leads, the others wait on the reader or on the leader), bulk reads that
// never lead, and callers whose context ends while they lead. A role lost
// on the way leaves a reply unread: the call then hangs until its
// deadline, which fails the test.
func TestBusyPollReadingRoleMoves(t *testing.T) {
	src := make([]byte, 256<<10)
	for i := range src {
		src[i] = byte(i * 7)
	}
	tr, err := New(Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}, Reactor: ReactorBusyPoll, BusyPollSpin: 20 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	c := transporttest.BenchPair(t, tr, tr, src)
	call := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		msg := []byte(fmt.Sprintf("request %d", i))
		path := "/echo"
		if i%2 == 0 {
			path = "/inline"
		}
		got, err := c.Request(ctx, path, msg)
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("request %d: reply %q", i, got)
		}
		return nil
	}
	read := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		off, n := uint64(i*4096%len(src)), uint64(1+i%(64<<10))
		n = min(n, uint64(len(src))-off)
		dst := make([]byte, n)
		if err := c.ReadRemote(ctx, transport.RemoteRef{Offset: off, Length: n}, dst); err != nil {
			return fmt.Errorf("read %d: %w", i, err)
		}
		if !bytes.Equal(dst, src[off:off+n]) {
			return fmt.Errorf("read %d: wrong bytes", i)
		}
		return nil
	}

	t.Run("back to back", func(t *testing.T) {
		for i := range 2000 {
			if err := call(i); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("pauses", func(t *testing.T) {
		// Around the spin (20µs) and the grace (200µs), and well past both.
		for i, d := range []time.Duration{0, 10 * time.Microsecond, 30 * time.Microsecond, 150 * time.Microsecond,
			250 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, 0, 0} {
			for j := range 20 {
				time.Sleep(d)
				if err := call(i*100 + j); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 1))
				for i := range 300 {
					if r.IntN(8) == 0 {
						time.Sleep(time.Duration(r.IntN(400)) * time.Microsecond)
					}
					var err error
					if g%4 == 3 {
						err = read(g*1000 + i)
					} else {
						err = call(g*1000 + i)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("deadlines while leading", func(t *testing.T) {
		// Deadlines too short for a reply: the leader gives up the role
		// mid-spin; the replies that come later must not be lost to it,
		// and the next calls must still get theirs.
		for i := range 200 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*time.Microsecond)
			_, _ = c.Request(ctx, "/echo", []byte("late"))
			cancel()
			if err := call(i); err != nil {
				t.Fatal(err)
			}
		}
	})
}
