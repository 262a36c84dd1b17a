package fluxon

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestParallelCopy(t *testing.T) {
	for _, n := range []int{0, 1, parallelCopyMin - 1, parallelCopyMin, parallelCopyMin + 1, 3*parallelCopyMin + 12345} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(rand.IntN(256))
		}
		for _, dn := range []int{n, n / 2, n + 10} {
			dst := make([]byte, dn)
			got := parallelCopy(dst, src)
			want := min(n, dn)
			if got != want {
				t.Fatalf("n=%d dst=%d: copied %d, want %d", n, dn, got, want)
			}
			if !bytes.Equal(dst[:want], src[:want]) {
				t.Fatalf("n=%d dst=%d: bytes differ", n, dn)
			}
			for _, b := range dst[want:] {
				if b != 0 {
					t.Fatalf("n=%d dst=%d: wrote past the copy", n, dn)
				}
			}
		}
	}
}
