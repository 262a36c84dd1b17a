package kvbench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Floor is the physical floor for one value size: how fast this machine
// copies values of that size with a plain memcpy (Go's copy) into one
// reused buffer, as a get that copies its value out does, on one thread and
// on several at once. Cold copies read from memory the caches do not hold
// (a floorRegion of values per thread, cycled through), as a rarely read
// value is; hot copies read the same value again and again, as a very
// popular (Zipf) value may be. A get that copies cannot beat the floor of
// where its value lies; a zero-copy get may, since it moves no bytes.
type Floor struct {
	Size    int
	Threads int
	// GiB/s on one thread and, summed, on Threads threads.
	HotOne, HotAll, ColdOne, ColdAll float64
}

// MeasureFloor measures memcpy of each size for per in each of the four
// ways (hot or cold, one thread or threads threads).
func MeasureFloor(ctx context.Context, sizes []int, threads int, per time.Duration) ([]Floor, error) {
	threads = max(threads, 1)
	var out []Floor
	for _, n := range sizes {
		f := Floor{Size: n, Threads: threads}
		for _, m := range []struct {
			rate           *float64
			threads, slots int
		}{
			{&f.HotOne, 1, 1}, {&f.HotAll, threads, 1},
			{&f.ColdOne, 1, max(1, floorRegion/n)}, {&f.ColdAll, threads, max(1, floorRegion/n)},
		} {
			var err error
			if *m.rate, err = copyRate(ctx, n, m.threads, m.slots, per); err != nil {
				return out, err
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// copyBatchBytes is about how many bytes a thread copies between two
// reads of the clock.
const copyBatchBytes = 1 << 20

// floorRegion is how much source memory each thread cycles through for a
// cold copy: several times the last-level cache of today's servers (tens of
// MiB), so sources come from DRAM. A variable only so tests can shrink it.
var floorRegion = 128 << 20

// copyRate returns the GiB/s of threads goroutines each copying n-byte
// values, cycling through its own slots of them, into its own reused buffer
// for d. Every buffer is written before timing, so page faults are not
// counted.
func copyRate(ctx context.Context, n, threads, slots int, d time.Duration) (float64, error) {
	type bufs struct{ src, dst []byte }
	b := make([]bufs, threads)
	for i := range b {
		b[i] = bufs{make([]byte, slots*n), make([]byte, n)}
		for j := range b[i].src {
			b[i].src[j] = byte(j)
		}
		copy(b[i].dst, b[i].src)
	}
	// Small copies are batched between clock reads, so the clock does not
	// dominate what is measured.
	batch := max(1, copyBatchBytes/n)
	var wg sync.WaitGroup
	copied := make([]int64, threads)
	start := time.Now()
	deadline := start.Add(d)
	for i := range threads {
		wg.Go(func() {
			src, dst, k := b[i].src, b[i].dst, 0
			for time.Now().Before(deadline) && ctx.Err() == nil {
				for range batch {
					copy(dst, src[k*n:(k+1)*n])
					if k++; k == slots {
						k = 0
					}
				}
				copied[i] += int64(n * batch)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var total int64
	for _, c := range copied {
		total += c
	}
	return float64(total) / (1 << 30) / time.Since(start).Seconds(), nil
}

// PrintFloor writes the memcpy floor as a table.
func PrintFloor(w io.Writer, floors []Floor) error {
	tw := newTable(w)
	n := 0
	if len(floors) > 0 {
		n = floors[0].Threads
	}
	fmt.Fprintf(tw, "memcpy GiB/s\thot, 1 thread\thot, %d threads\tcold, 1 thread\tcold, %d threads\t\n", n, n)
	for _, f := range floors {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", FormatSize(f.Size), f.HotOne, f.HotAll, f.ColdOne, f.ColdAll)
	}
	return tw.flush()
}
