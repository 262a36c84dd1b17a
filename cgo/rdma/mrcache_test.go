package rdma

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// fakeNIC registers regions by handing out keys and records what is live.
type fakeNIC struct {
	live    map[uintptr]uint64
	key     uint32
	regs    int
	failReg error
}

func newFakeNIC() *fakeNIC { return &fakeNIC{live: map[uintptr]uint64{}} }

func (n *fakeNIC) reg(addr uintptr, l uint64) (Region, error) {
	if n.failReg != nil {
		return Region{}, n.failReg
	}
	if _, dup := n.live[addr]; dup {
		return Region{}, fmt.Errorf("double registration of %#x", addr)
	}
	n.key++
	n.regs++
	n.live[addr] = l
	return Region{LKey: n.key, RKey: n.key + 1000}, nil
}

func (n *fakeNIC) dereg(r Region) error {
	if _, ok := n.live[r.Addr]; !ok {
		return fmt.Errorf("deregister of unregistered %#x", r.Addr)
	}
	delete(n.live, r.Addr)
	return nil
}

const seg = 1 << 20

func segBase(i int) uintptr { return uintptr(0x10000000 + i*seg) }

func TestMRCacheRegistersOnceAndLooksUpByRange(t *testing.T) {
	nic := newFakeNIC()
	c := NewMRCache(2, nic.reg, nic.dereg)
	r, rel, err := c.Acquire(segBase(0)+100, 50, segBase(0), seg)
	if err != nil {
		t.Fatal(err)
	}
	rel()
	rel() // idempotent
	r2, rel2, err := c.Acquire(segBase(0)+seg-10, 10, segBase(0), seg)
	if err != nil || r2.LKey != r.LKey || nic.regs != 1 {
		t.Fatalf("second acquire in the same segment: %+v, %v, %d registrations", r2, err, nic.regs)
	}
	rel2()
	if _, ok := c.Lookup(segBase(0)+seg-10, 11); ok {
		t.Error("Lookup of a range crossing the segment end succeeded")
	}
	if _, ok := c.Lookup(segBase(1), 1); ok {
		t.Error("Lookup of an unregistered segment succeeded")
	}
	if got, ok := c.Lookup(segBase(0), seg); !ok || got.RKey != r.RKey {
		t.Errorf("Lookup of the whole segment: %+v %v", got, ok)
	}
	if _, _, err := c.Acquire(segBase(0)+seg-10, 20, segBase(0), seg); err == nil {
		t.Error("Acquire of a range crossing the segment end succeeded")
	}
	if _, _, err := c.Acquire(segBase(1), 1, segBase(0)+seg/2, seg); err == nil {
		t.Error("Acquire of an overlapping segment succeeded")
	}
	if _, _, err := c.Acquire(segBase(5), 10, segBase(6), seg); err == nil {
		t.Error("Acquire of a range outside its segment succeeded")
	}
}

func TestMRCacheEvictsLRUButNeverPinned(t *testing.T) {
	nic := newFakeNIC()
	c := NewMRCache(2, nic.reg, nic.dereg)
	_, rel0, _ := c.Acquire(segBase(0), 1, segBase(0), seg)
	_, rel1, _ := c.Acquire(segBase(1), 1, segBase(1), seg)
	// Both pinned: no room.
	if _, _, err := c.Acquire(segBase(2), 1, segBase(2), seg); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("acquire with every region pinned: %v, want ErrCacheFull", err)
	}
	rel1()
	rel0()
	c.Lookup(segBase(0), 1) // 0 is now more recent than 1
	if _, rel, err := c.Acquire(segBase(2), 1, segBase(2), seg); err != nil {
		t.Fatal(err)
	} else {
		rel()
	}
	if _, ok := nic.live[segBase(1)]; ok {
		t.Error("segment 1 (least recently used) was not deregistered")
	}
	if _, ok := nic.live[segBase(0)]; !ok {
		t.Error("segment 0 (recently used) was evicted")
	}
	if err := c.Close(); err != nil || len(nic.live) != 0 {
		t.Fatalf("Close: %v, %d regions still registered", err, len(nic.live))
	}
	if _, _, err := c.Acquire(segBase(0), 1, segBase(0), seg); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close: %v", err)
	}
}

func TestMRCacheRegisterFailure(t *testing.T) {
	nic := newFakeNIC()
	nic.failReg = errors.New("ENOMEM: locked memory limit")
	c := NewMRCache(2, nic.reg, nic.dereg)
	if _, _, err := c.Acquire(segBase(0), 1, segBase(0), seg); !errors.Is(err, nic.failReg) || c.Len() != 0 {
		t.Fatalf("err %v, len %d", err, c.Len())
	}
}

// A random walk against a model: the cache never holds more than capacity
// regions, the fake NIC's live set always equals the cache's, and a pinned
// region is never deregistered.
func TestMRCacheModel(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		nic := newFakeNIC()
		const capacity, segs = 4, 10
		c := NewMRCache(capacity, nic.reg, nic.dereg)
		pinned := map[int][]func(){}
		for step := 0; step < 500; step++ {
			i := rng.IntN(segs)
			if rng.IntN(3) == 0 && len(pinned[i]) > 0 {
				pinned[i][0]()
				pinned[i] = pinned[i][1:]
				continue
			}
			off := uintptr(rng.IntN(seg - 64))
			_, rel, err := c.Acquire(segBase(i)+off, 64, segBase(i), seg)
			npinned := 0
			for _, p := range pinned {
				if len(p) > 0 {
					npinned++
				}
			}
			if err != nil {
				if !errors.Is(err, ErrCacheFull) || npinned < capacity {
					t.Fatalf("seed %d step %d: %v with %d pinned", seed, step, err, npinned)
				}
				continue
			}
			pinned[i] = append(pinned[i], rel)
			for j, p := range pinned {
				if _, ok := nic.live[segBase(j)]; len(p) > 0 && !ok {
					t.Fatalf("seed %d step %d: pinned segment %d was deregistered", seed, step, j)
				}
			}
			if c.Len() > capacity || len(nic.live) != c.Len() {
				t.Fatalf("seed %d step %d: cache %d, live %d, capacity %d", seed, step, c.Len(), len(nic.live), capacity)
			}
		}
	}
}
