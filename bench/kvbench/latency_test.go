package kvbench

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// relErr is the recorder's promised precision.
const relErr = 1.0 / subBuckets

func requireNear(t *testing.T, want, got time.Duration, msg string) {
	t.Helper()
	require.LessOrEqual(t, math.Abs(float64(got-want)), float64(want)*relErr, "%s: want %v, got %v", msg, want, got)
}

func TestPercentilesOnKnownData(t *testing.T) {
	r := NewRecorder()
	// 1 µs .. 10 ms in 1 µs steps, in shuffled order.
	vals := rand.New(rand.NewPCG(1, 2)).Perm(10_000)
	for _, v := range vals {
		r.Record(time.Duration(v+1) * time.Microsecond)
	}
	require.EqualValues(t, 10_000, r.Count())
	requireNear(t, 5000*time.Microsecond, r.Percentile(0.50), "p50")
	requireNear(t, 9900*time.Microsecond, r.Percentile(0.99), "p99")
	requireNear(t, 9990*time.Microsecond, r.Percentile(0.999), "p999")
	require.Equal(t, time.Microsecond, r.Min())
	require.Equal(t, 10*time.Millisecond, r.Max())
	require.Equal(t, 10*time.Millisecond, r.Percentile(1), "p100 is the exact maximum")
	require.Equal(t, time.Microsecond, r.Percentile(0), "p0 is the exact minimum")
	require.Equal(t, 5000500*time.Nanosecond, r.Mean())
}

func TestSmallValuesAreExact(t *testing.T) {
	r := NewRecorder()
	for v := range 200 {
		r.Record(time.Duration(v))
	}
	require.Equal(t, time.Duration(99), r.Percentile(0.5))
	require.Equal(t, time.Duration(197), r.Percentile(0.99))
	require.Equal(t, time.Duration(0), r.Min())
	require.Equal(t, time.Duration(199), r.Max())
}

func TestOneRepeatedValueIsExact(t *testing.T) {
	r := NewRecorder()
	for range 1000 {
		r.Record(3*time.Millisecond + 17)
	}
	for _, q := range []float64{0, 0.5, 0.99, 0.999, 1} {
		require.Equal(t, 3*time.Millisecond+17, r.Percentile(q), "q=%v", q)
	}
}

func TestSkewedData(t *testing.T) {
	// 990 fast operations and 10 slow ones: p99 is fast, p999 slow.
	r := NewRecorder()
	for range 990 {
		r.Record(100 * time.Microsecond)
	}
	for range 10 {
		r.Record(50 * time.Millisecond)
	}
	requireNear(t, 100*time.Microsecond, r.Percentile(0.99), "p99")
	requireNear(t, 50*time.Millisecond, r.Percentile(0.999), "p999")
}

func TestBucketsCoverEveryValue(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	vals := []int64{0, 1, 255, 256, 257, 511, 512, 1 << 20, 1<<20 + 1, math.MaxInt64, math.MaxInt64 - 1}
	for range 100_000 {
		vals = append(vals, rng.Int64N(math.MaxInt64>>rng.IntN(62)))
	}
	for _, v := range vals {
		i := bucketOf(v)
		require.True(t, i >= 0 && i < numBuckets, "v=%d bucket %d", v, i)
		low, width := bucketBounds(i)
		require.True(t, v >= low && v-low < width, "v=%d not in bucket %d [%d, +%d)", v, i, low, width)
		require.LessOrEqual(t, float64(width), max(1, float64(low)*relErr), "v=%d bucket too wide", v)
	}
	require.Equal(t, numBuckets-1, bucketOf(math.MaxInt64))
}

func TestMergeEqualsOneRecorder(t *testing.T) {
	all, a, b := NewRecorder(), NewRecorder(), NewRecorder()
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 10_000 {
		d := time.Duration(rng.Int64N(int64(time.Second)))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	a.Merge(NewRecorder())
	a.Merge(nil)
	require.Equal(t, all.Count(), a.Count())
	require.Equal(t, all.Min(), a.Min())
	require.Equal(t, all.Max(), a.Max())
	require.InDelta(t, float64(all.Mean()), float64(a.Mean()), 1)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		require.Equal(t, all.Percentile(q), a.Percentile(q), "q=%v", q)
	}
}

func TestEmptyRecorder(t *testing.T) {
	r := NewRecorder()
	require.Zero(t, r.Percentile(0.5))
	require.Zero(t, r.Min())
	require.Zero(t, r.Max())
	require.Zero(t, r.Mean())
	r.Record(-5)
	require.Equal(t, time.Duration(0), r.Max(), "negative durations count as zero")
}
