package logtest

import (
	"fmt"
	"sync"
	"testing"
)

func TestBufferConcurrentWritesAndLines(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { fmt.Fprintf(&b, "writer %d: no RDMA device\nwriter %d: other\n", i, i) })
	}
	wg.Wait()
	if n := b.Lines("no RDMA device"); n != 8 {
		t.Fatalf("Lines = %d, want 8:\n%s", n, b.String())
	}
	if n := b.Lines("absent"); n != 0 {
		t.Fatalf("Lines(absent) = %d", n)
	}
}
