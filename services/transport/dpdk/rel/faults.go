package rel

import (
	"math/rand/v2"
	"sync"
)

// Faults injects datagram faults into an Output function: loss,
// duplication, reordering and corruption, each with its probability, from a
// seeded generator so that a failing run can be replayed. It stands in for
// tc netem where the kernel has no sch_netem, and works on any link (the
// in-memory one in tests, a DPDK port).
type Faults struct {
	Loss, Duplicate, Reorder, Corrupt float64
	Seed                              uint64
}

// Active reports whether any fault is configured.
func (f Faults) Active() bool {
	return f.Loss > 0 || f.Duplicate > 0 || f.Reorder > 0 || f.Corrupt > 0
}

// Wrap returns an Output that applies the faults before out. A reordered
// datagram is held back and sent after the next one.
func (f Faults) Wrap(out func([]byte) error) func([]byte) error {
	if !f.Active() {
		return out
	}
	var (
		mu   sync.Mutex
		rng  = rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
		held []byte
	)
	return func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if rng.Float64() < f.Loss {
			return nil
		}
		if rng.Float64() < f.Corrupt {
			b = append([]byte(nil), b...)
			i := rng.IntN(len(b))
			b[i] ^= byte(1 + rng.IntN(255))
		}
		if held == nil && rng.Float64() < f.Reorder {
			held = append([]byte(nil), b...)
			return nil
		}
		err := out(b)
		if rng.Float64() < f.Duplicate {
			_ = out(b)
		}
		if held != nil {
			h := held
			held = nil
			_ = out(h)
		}
		return err
	}
}
