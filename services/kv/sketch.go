package kv

import "sync/atomic"

// sketch is a count-min sketch of access frequencies (the TinyLFU part of
// eviction): 4 rows of 4-bit-saturating counters held in bytes, halved
// ("aged") after every resetAfter increments so that old popularity fades.
// Lock-free: counters are updated with atomic adds on 32-bit words.
type sketch struct {
	rows       [4][]atomic.Uint32 // each word packs 4 8-bit counters
	mask       uint64
	adds       atomic.Uint64
	resetAfter uint64
}

const sketchMax = 15

func newSketch(width int) *sketch {
	n := 64
	for n < width {
		n <<= 1
	}
	s := &sketch{mask: uint64(n*4 - 1), resetAfter: uint64(n * 10)}
	for i := range s.rows {
		s.rows[i] = make([]atomic.Uint32, n)
	}
	return s
}

func (s *sketch) slot(row int, h uint64) (*atomic.Uint32, uint) {
	h = (h ^ (h >> 29)) * (0x9E3779B97F4A7C15 + uint64(row)*0x632BE59BD9B4E019)
	idx := (h >> 17) & s.mask
	return &s.rows[row][idx>>2], uint(idx&3) * 8
}

// add counts one access of the key with hash h.
func (s *sketch) add(h uint64) {
	for r := range s.rows {
		w, shift := s.slot(r, h)
		for {
			old := w.Load()
			if (old>>shift)&0xff >= sketchMax {
				break
			}
			if w.CompareAndSwap(old, old+(1<<shift)) {
				break
			}
		}
	}
	if s.adds.Add(1)%s.resetAfter == 0 {
		s.age()
	}
}

// estimate returns the key's approximate access count (0..15).
func (s *sketch) estimate(h uint64) uint32 {
	est := uint32(sketchMax)
	for r := range s.rows {
		w, shift := s.slot(r, h)
		est = min(est, (w.Load()>>shift)&0xff)
	}
	return est
}

// age halves every counter.
func (s *sketch) age() {
	for r := range s.rows {
		for i := range s.rows[r] {
			for {
				old := s.rows[r][i].Load()
				if s.rows[r][i].CompareAndSwap(old, (old>>1)&0x7f7f7f7f) {
					break
				}
			}
		}
	}
}
