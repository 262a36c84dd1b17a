package framed

import "testing"

func TestGrowFollowsArrivedBytes(t *testing.T) {
	const total = 256 << 20
	b := grow(nil, 100, total)
	if cap(b) != 100 {
		t.Fatalf("first frame of 100 bytes claiming %d: cap %d, want 100", total, cap(b))
	}
	b = b[:100]
	for got := uint64(100); got < total; {
		n := min(uint64(16<<20), total-got)
		b = grow(b, n, total)[:got+n]
		got += n
		if uint64(cap(b)) > 2*got+16<<20 || uint64(cap(b)) > total {
			t.Fatalf("after %d bytes, cap %d: more than twice what arrived", got, cap(b))
		}
	}
	if len(b) != total || cap(b) != total {
		t.Fatalf("final len %d cap %d, want %d", len(b), cap(b), total)
	}
	if b := grow(nil, 5, 5); cap(b) != 5 {
		t.Fatalf("a single-frame message gets cap %d, want exactly 5", cap(b))
	}
}
