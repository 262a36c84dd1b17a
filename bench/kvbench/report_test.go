package kvbench

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func result(workload, target string, mode GetMode, ops int64, elapsed time.Duration) Result {
	r := Result{Workload: workload, Target: target, Mode: mode, Threads: 2, Ops: ops, Gets: ops, Bytes: ops << 20,
		Elapsed: elapsed, Latency: NewRecorder(), GetLatency: NewRecorder(), PutLatency: NewRecorder()}
	for range ops {
		r.Latency.Record(time.Millisecond)
	}
	return r
}

func TestRatioAgainstThePeer(t *testing.T) {
	rs := []Result{
		result("A", "redis", Copy, 100, time.Second),
		result("A", "fluxon-shm", Copy, 300, time.Second),
		result("A", "fluxon-shm", View, 1000, 2*time.Second),
		result("B", "fluxon-shm", NoGet, 50, time.Second),
		result("B", "redis", NoGet, 200, time.Second),
		result("C", "fluxon-shm", Copy, 10, time.Second),
	}
	cases := []struct {
		i    int
		want float64
		ok   bool
	}{
		{1, 3, true},
		{2, 5, true}, // a view is compared with the peer's copy
		{3, 0.25, true},
		{5, 0, false}, // no peer ran C
	}
	for _, c := range cases {
		got, ok := Ratio(rs, rs[c.i], "redis")
		require.Equal(t, c.ok, ok, "row %d", c.i)
		require.InDelta(t, c.want, got, 1e-9, "row %d", c.i)
	}
	failed := rs[0]
	failed.Err = errors.New("boom")
	_, ok := Ratio([]Result{failed, rs[1]}, rs[1], "redis")
	require.False(t, ok, "a failed peer is no reference")
}

func TestPrintTable(t *testing.T) {
	rs := []Result{
		result("READ_ZIPF", "redis", Copy, 100, time.Second),
		result("READ_ZIPF", "fluxon-shm", Copy, 250, time.Second),
		result("PUT_ONLY", "fluxon-shm", NoGet, 10, time.Second),
	}
	rs[0].Misses, rs[0].Gets = 5, 100 // Gets counts the misses too
	rs[1].ServerCores = 1.25
	rs[2].Err = errors.New("pool full")
	var b strings.Builder
	require.NoError(t, PrintTable(&b, rs, "redis"))
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	require.Len(t, lines, 5, b.String())
	require.Regexp(t, `workload\s+target\s+get\s+threads\s+ops\s+ops/s\s+MiB/s\s+p50\s+p99\s+p999\s+miss\s+srv cores\s+vs redis`, lines[0])
	require.Regexp(t, `READ_ZIPF\s+redis\s+copy\s+2\s+100\s+100\.0\s+100\.0\s+1\.00ms\s+1\.00ms\s+1\.00ms\s+5\.0%\s+-\s+peer`, lines[1])
	require.Regexp(t, `READ_ZIPF\s+fluxon-shm\s+copy\s+2\s+250\s+250\.0\s+250\.0\s+1\.00ms\s+1\.00ms\s+1\.00ms\s+0\s+1\.25\s+2\.50x`, lines[2])
	require.Regexp(t, `PUT_ONLY\s+fluxon-shm\s+-\s.*FAILED`, lines[3])
	require.Equal(t, "FAILED PUT_ONLY fluxon-shm -: pool full", lines[4])
}

func TestFormatting(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "-",
		512:                      "512ns",
		1500:                     "1.50µs",
		812 * time.Microsecond:   "812µs",
		12340 * time.Microsecond: "12.3ms",
		2 * time.Second:          "2.00s",
	} {
		require.Equal(t, want, FormatDuration(d), "%d", d)
	}
	for n, want := range map[int]string{
		10 << 20:   "10MiB",
		1280 << 10: "1280KiB",
		10_000:     "10KB",
		50_000_000: "50MB",
		1 << 30:    "1GiB",
		999:        "999B",
		1500:       "1.5KiB",
	} {
		require.Equal(t, want, FormatSize(n), "%d", n)
	}
	require.Equal(t, "1KB/10MiB", FormatSizes([]int{1000, 10 << 20}))
}

func TestGetModes(t *testing.T) {
	for _, m := range []GetMode{Copy, View} {
		got, err := ParseGetMode(m.String())
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
	_, err := ParseGetMode("mmap")
	require.Error(t, err)
	require.Equal(t, "-", NoGet.String())
}

func TestTouchReadsEveryPage(t *testing.T) {
	b := make([]byte, 3*pageSize+10)
	for i := range b {
		if i%pageSize == 0 || i == len(b)-1 {
			b[i] = 1
		}
	}
	require.EqualValues(t, 5, touch(b), "4 page starts and the last byte")
	require.Zero(t, touch(nil))
}

func TestCombineMergesRounds(t *testing.T) {
	a := result("W", "redis", Copy, 100, time.Second)
	a.ServerCores = 1
	b := result("W", "redis", Copy, 300, time.Second)
	b.Round, b.ServerCores, b.Misses = 1, 0.5, 3
	c := result("W", "fluxon-shm", Copy, 50, time.Second)
	d := result("W", "fluxon-shm", Copy, 50, time.Second)
	d.Round, d.Err = 1, errors.New("boom")
	got := Combine([]Result{a, c, b, d})
	require.Len(t, got, 2)
	require.Equal(t, "redis", got[0].Target, "first-seen order")
	require.EqualValues(t, 400, got[0].Ops)
	require.EqualValues(t, 3, got[0].Misses)
	require.Equal(t, 2*time.Second, got[0].Elapsed)
	require.InDelta(t, 200, got[0].OpsPerSec(), 1e-9)
	require.InDelta(t, 0.75, got[0].ServerCores, 1e-9)
	require.EqualValues(t, 400, got[0].Latency.Count())
	require.EqualValues(t, 100, a.Latency.Count(), "the inputs are not modified")
	require.Error(t, got[1].Err, "a failed round fails the row")
}

func TestPrintTableWithRounds(t *testing.T) {
	var raw []Result
	for round, ops := range [][2]int64{{100, 200}, {100, 300}} {
		p := result("W", "redis", Copy, ops[0], time.Second)
		f := result("W", "fluxon-shm", Copy, ops[1], time.Second)
		p.Round, f.Round = round, round
		raw = append(raw, p, f)
	}
	lo, hi, ok := RatioRange(raw, raw[1], "redis")
	require.True(t, ok)
	require.InDelta(t, 2, lo, 1e-9)
	require.InDelta(t, 3, hi, 1e-9)
	var b strings.Builder
	require.NoError(t, PrintTable(&b, raw, "redis"))
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	require.Len(t, lines, 3, b.String())
	require.Regexp(t, `vs redis\s+2 rounds$`, lines[0])
	require.Regexp(t, `redis\s+copy\s+2\s+200\s+100\.0 .*peer$`, lines[1])
	require.Regexp(t, `fluxon-shm\s+copy\s+2\s+500\s+250\.0 .*2\.50x\s+2\.00-3\.00x$`, lines[2])
}

func TestMeasureFloor(t *testing.T) {
	// Only the shape is checked: rates are printed, never asserted.
	defer func(r int) { floorRegion = r }(floorRegion)
	floorRegion = 4 << 20
	floors, err := MeasureFloor(context.Background(), []int{4096, 1 << 20}, 2, 20*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, floors, 2)
	for _, f := range floors {
		for _, v := range []float64{f.HotOne, f.HotAll, f.ColdOne, f.ColdAll} {
			require.Positive(t, v)
		}
		require.Equal(t, 2, f.Threads)
	}
	var b strings.Builder
	require.NoError(t, PrintFloor(&b, floors))
	require.Contains(t, b.String(), "4KiB")
	require.Contains(t, b.String(), "1MiB")
	require.Contains(t, b.String(), "cold, 2 threads")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = MeasureFloor(ctx, []int{4096}, 1, time.Second)
	require.ErrorIs(t, err, context.Canceled)
}
