package rdma

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
)

// fakeNIC completes READs from src into slot buffers after a random delay
// and out of order, as a NIC may, and counts what is in flight. It stands
// in for the device, which this machine lacks; the logic under test
// (chunking, slots, order, draining) is the device-free part of
// ReadRemote.
type fakeNIC struct {
	src     []byte
	slots   [][]byte
	failAt  int64 // the READ (1-based) that fails; 0: none
	posted  atomic.Int64
	settled atomic.Int64
	flight  atomic.Int64
	maxIn   atomic.Int64
	landed  []uint64 // offsets, in landing order
	dst     []byte
	mu      sync.Mutex
}

func newFakeNIC(total int, depth int, chunk uint64) *fakeNIC {
	f := &fakeNIC{src: make([]byte, total), dst: make([]byte, total)}
	for i := range f.src {
		f.src[i] = byte(i*131 + 7)
	}
	for range depth {
		f.slots = append(f.slots, make([]byte, chunk))
	}
	return f
}

func (f *fakeNIC) ops() readOps {
	return readOps{
		post: func(slot int, off, n uint64) (<-chan cgordma.Completion, error) {
			k := f.posted.Add(1)
			if in := f.flight.Add(1); in > f.maxIn.Load() {
				f.maxIn.Store(in)
			}
			ch := make(chan cgordma.Completion, 1)
			go func() {
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				wc := cgordma.Completion{WRID: uint64(k), Status: cgordma.WCSuccess}
				if k == f.failAt {
					wc.Status = cgordma.WCRemAccessErr
				} else {
					copy(f.slots[slot][:n], f.src[off:off+n])
				}
				f.flight.Add(-1)
				ch <- wc
			}()
			return ch, nil
		},
		settle: func() { f.settled.Add(1) },
		land: func(slot int, off, n uint64) {
			f.mu.Lock()
			f.landed = append(f.landed, off)
			f.mu.Unlock()
			copy(f.dst[off:off+n], f.slots[slot][:n])
		},
	}
}

func TestPipelineReadLandsInOrder(t *testing.T) {
	const chunk, depth = 1000, 4
	for _, total := range []int{0, 1, chunk - 1, chunk, chunk + 1, 10*chunk + 17, 64 * chunk} {
		f := newFakeNIC(total, depth, chunk)
		if err := pipelineRead(context.Background(), uint64(total), chunk, depth, f.ops()); err != nil {
			t.Fatalf("total %d: %v", total, err)
		}
		if !bytes.Equal(f.dst, f.src) {
			t.Fatalf("total %d: wrong bytes", total)
		}
		if want := int64((total + chunk - 1) / chunk); f.posted.Load() != want || f.settled.Load() != want {
			t.Fatalf("total %d: %d posted, %d settled, want %d", total, f.posted.Load(), f.settled.Load(), want)
		}
		if f.maxIn.Load() > depth {
			t.Fatalf("total %d: %d READs in flight, depth %d", total, f.maxIn.Load(), depth)
		}
		for i := 1; i < len(f.landed); i++ {
			if f.landed[i] <= f.landed[i-1] {
				t.Fatalf("total %d: landed out of order: %v", total, f.landed)
			}
		}
		if total >= 8*chunk && f.maxIn.Load() < 2 {
			t.Fatalf("total %d: never more than one READ in flight", total)
		}
	}
}

// A failed READ, a failed post or a done context stops the posting, and
// the call still waits for every READ in flight (the NIC writes into the
// slots until they complete).
func TestPipelineReadDrainsOnFailure(t *testing.T) {
	const chunk, depth, total = 1000, 4, 40 * 1000
	f := newFakeNIC(total, depth, chunk)
	f.failAt = 5
	err := pipelineRead(context.Background(), total, chunk, depth, f.ops())
	var wce *cgordma.WCError
	if !errors.As(err, &wce) || wce.Status != cgordma.WCRemAccessErr {
		t.Fatalf("a failed READ gave %v", err)
	}
	if f.flight.Load() != 0 || f.settled.Load() != f.posted.Load() {
		t.Fatalf("returned with %d READs in flight (%d posted, %d settled)", f.flight.Load(), f.posted.Load(), f.settled.Load())
	}
	if f.posted.Load() > 5+depth-1 {
		t.Fatalf("%d READs posted after the 5th failed", f.posted.Load())
	}
	for _, off := range f.landed {
		if off >= 4*chunk {
			t.Fatalf("landed the chunk at %d after the failed one", off)
		}
	}

	f = newFakeNIC(total, depth, chunk)
	ops := f.ops()
	post := ops.post
	boom := errors.New("post failed")
	ops.post = func(slot int, off, n uint64) (<-chan cgordma.Completion, error) {
		if off == 6*chunk {
			return nil, boom
		}
		return post(slot, off, n)
	}
	if err := pipelineRead(context.Background(), total, chunk, depth, ops); !errors.Is(err, boom) {
		t.Fatalf("a failed post gave %v", err)
	}
	if f.flight.Load() != 0 || f.posted.Load() != 6 || f.settled.Load() != 6 {
		t.Fatalf("after a failed post: %d in flight, %d posted, %d settled", f.flight.Load(), f.posted.Load(), f.settled.Load())
	}

	f = newFakeNIC(total, depth, chunk)
	ctx, cancel := context.WithCancel(context.Background())
	ops = f.ops()
	land := ops.land
	ops.land = func(slot int, off, n uint64) {
		land(slot, off, n)
		if off == 2*chunk {
			cancel()
		}
	}
	if err := pipelineRead(ctx, total, chunk, depth, ops); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled read gave %v", err)
	}
	if f.flight.Load() != 0 || f.settled.Load() != f.posted.Load() || f.posted.Load() >= total/chunk {
		t.Fatalf("after cancel: %d in flight, %d posted, %d settled", f.flight.Load(), f.posted.Load(), f.settled.Load())
	}
}
