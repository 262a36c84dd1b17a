package kvbench

import (
	"math"
	"math/bits"
	"time"
)

// The recorder keeps HDR-style logarithmic buckets: exact below 2*subBuckets
// nanoseconds, and above that subBuckets buckets per power of two, so any
// recorded value lies within 1/subBuckets (0.8 %) of its bucket's bounds.
const (
	subBucketBits = 7
	subBuckets    = 1 << subBucketBits // 128
	// numBuckets covers every int64: values below 256 ns each have their own
	// bucket, then 56 powers of two of 128 buckets each.
	numBuckets = 2*subBuckets + (63-subBucketBits-1)*subBuckets
)

// Recorder collects latencies. Its memory is fixed (numBuckets counters,
// about 58 KiB) whatever it records. A Recorder is not safe for concurrent
// use: give each thread its own and Merge them.
type Recorder struct {
	counts   []uint64
	count    uint64
	sum      float64
	min, max int64
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{counts: make([]uint64, numBuckets), min: math.MaxInt64}
}

// bucketOf returns the bucket of v (v >= 0).
func bucketOf(v int64) int {
	if v < 2*subBuckets {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - subBucketBits - 1 // v>>e is in [128, 256)
	return subBuckets + e*subBuckets + int(v>>e) - subBuckets
}

// bucketBounds returns the smallest value of bucket i and its width.
func bucketBounds(i int) (low, width int64) {
	if i < 2*subBuckets {
		return int64(i), 1
	}
	e := (i - subBuckets) / subBuckets
	m := int64((i-subBuckets)%subBuckets + subBuckets)
	return m << e, 1 << e
}

// Record adds one latency. Negative durations count as zero.
func (r *Recorder) Record(d time.Duration) {
	v := max(int64(d), 0)
	r.counts[bucketOf(v)]++
	r.count++
	r.sum += float64(v)
	r.min = min(r.min, v)
	r.max = max(r.max, v)
}

// Merge adds every latency of o to r.
func (r *Recorder) Merge(o *Recorder) {
	if o == nil || o.count == 0 {
		return
	}
	for i, c := range o.counts {
		r.counts[i] += c
	}
	r.count += o.count
	r.sum += o.sum
	r.min = min(r.min, o.min)
	r.max = max(r.max, o.max)
}

// Count returns how many latencies were recorded.
func (r *Recorder) Count() uint64 { return r.count }

// Min returns the smallest latency recorded (0 if none).
func (r *Recorder) Min() time.Duration {
	if r.count == 0 {
		return 0
	}
	return time.Duration(r.min)
}

// Max returns the largest latency recorded (exact).
func (r *Recorder) Max() time.Duration { return time.Duration(r.max) }

// Mean returns the average latency (exact).
func (r *Recorder) Mean() time.Duration {
	if r.count == 0 {
		return 0
	}
	return time.Duration(r.sum / float64(r.count))
}

// Percentile returns the latency below or at which a fraction q (0..1) of
// the recorded latencies lie: the middle of the bucket holding the
// ceil(q*count)-th smallest one, clamped to the exact minimum and maximum.
// It is within 1/128 of the exact value. With nothing recorded it is 0.
func (r *Recorder) Percentile(q float64) time.Duration {
	if r.count == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(r.count)))
	switch {
	case rank <= 1:
		return time.Duration(r.min)
	case rank >= r.count:
		return time.Duration(r.max)
	}
	var seen uint64
	for i, c := range r.counts {
		seen += c
		if seen >= rank {
			low, width := bucketBounds(i)
			v := low + (width-1)/2
			return time.Duration(min(max(v, r.min), r.max))
		}
	}
	return time.Duration(r.max)
}
