package kvbench

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRecorderRoundTrip(t *testing.T) {
	r := NewRecorder()
	for _, d := range []time.Duration{3, 700 * time.Microsecond, 2 * time.Millisecond, 2 * time.Millisecond, 40 * time.Millisecond} {
		r.Record(d)
	}
	b, err := json.Marshal(r)
	require.NoError(t, err)
	require.Less(t, len(b), 200, "only the non-empty buckets travel")
	var got Recorder
	require.NoError(t, json.Unmarshal(b, &got))
	require.Equal(t, r.Count(), got.Count())
	require.Equal(t, r.Min(), got.Min())
	require.Equal(t, r.Max(), got.Max())
	require.Equal(t, r.Mean(), got.Mean())
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 1} {
		require.Equal(t, r.Percentile(q), got.Percentile(q), "q=%v", q)
	}

	var empty Recorder
	b, err = json.Marshal(NewRecorder())
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &empty))
	require.Zero(t, empty.Count())
	empty.Record(time.Millisecond)
	require.Equal(t, time.Millisecond, empty.Min(), "an empty recorder from the wire records like a new one")
}

func TestRecorderRejectsBadWire(t *testing.T) {
	var r Recorder
	require.ErrorIs(t, json.Unmarshal([]byte(`{"buckets":[[99999999,1]],"count":1}`), &r), ErrWire)
	require.ErrorIs(t, json.Unmarshal([]byte(`{"buckets":[[5,2]],"count":3}`), &r), ErrWire)
}

func TestResultRoundTrip(t *testing.T) {
	r := result("READ_ZIPF", "fluxon-shm", View, 120, 2*time.Second)
	r.Gets, r.Puts, r.Misses, r.Bytes, r.Round, r.ServerCores = 100, 20, 7, 1<<30, 1, 0.75
	r.Err = errors.New("get \"k\": connection reset")
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var got Result
	require.NoError(t, json.Unmarshal(b, &got))
	require.EqualError(t, got.Err, r.Err.Error())
	got.Err, r.Err = nil, nil
	require.Equal(t, r.Latency.Percentile(0.99), got.Latency.Percentile(0.99))
	got.Latency, got.GetLatency, got.PutLatency = r.Latency, r.GetLatency, r.PutLatency
	require.Equal(t, r, got)

	var none Result
	require.NoError(t, json.Unmarshal([]byte(`{"Workload":"W"}`), &none))
	require.NotNil(t, none.Latency, "missing recorders come back empty, never nil")
}

func hostResult(ops int64, lat time.Duration, elapsed time.Duration) Result {
	r := Result{Workload: "READ_AFFINITY", Target: "redis", Mode: Copy, Threads: 2, Ops: ops, Gets: ops, Bytes: ops * 10, Elapsed: elapsed,
		Latency: NewRecorder(), GetLatency: NewRecorder(), PutLatency: NewRecorder()}
	for range ops {
		r.Latency.Record(lat)
		r.GetLatency.Record(lat)
	}
	return r
}

func TestMergeHosts(t *testing.T) {
	h := []Result{
		hostResult(100, time.Millisecond, 4*time.Second),
		hostResult(100, time.Millisecond, 4100*time.Millisecond),
		hostResult(200, 10*time.Millisecond, 4*time.Second),
	}
	h[1].Misses = 30
	m, err := MergeHosts(h)
	require.NoError(t, err)
	require.EqualValues(t, 400, m.Ops)
	require.EqualValues(t, 400, m.Gets)
	require.EqualValues(t, 30, m.Misses)
	require.EqualValues(t, 4000, m.Bytes)
	require.Equal(t, 6, m.Threads)
	require.Equal(t, 4100*time.Millisecond, m.Elapsed, "the hosts ran together: the window is the longest host's")
	require.InDelta(t, 400/4.1, m.OpsPerSec(), 1e-9)
	require.EqualValues(t, 400, m.Latency.Count())
	require.InDelta(t, float64(time.Millisecond), float64(m.Latency.Percentile(0.5)), float64(time.Millisecond)/100,
		"half the operations took 1ms: the merged p50 is 1ms")
	require.InDelta(t, float64(10*time.Millisecond), float64(m.Latency.Percentile(0.99)), float64(10*time.Millisecond)/100,
		"host 3's slow half decides the p99")
	require.NoError(t, m.Err)
	require.EqualValues(t, 100, h[0].Latency.Count(), "the inputs are not changed")

	h[2].Err = errors.New("boom")
	m, err = MergeHosts(h)
	require.NoError(t, err)
	require.EqualError(t, m.Err, "host 3: boom")

	h[1].Target = "fluxon-shm"
	_, err = MergeHosts(h)
	require.ErrorContains(t, err, "host 2 ran")
	_, err = MergeHosts(nil)
	require.Error(t, err)
}

func TestHostSlotsSplitGroupsAndStreams(t *testing.T) {
	ctx := context.Background()
	w := smallRead(t) // READ_AFFINITY over 30 keys, 3 groups
	m := newMem()
	require.NoError(t, Preload(ctx, m, w, 1))
	logs := map[int][]string{}
	for host := range 3 {
		m.log = nil
		r := Run(ctx, m, w, RunConfig{Threads: 2, Ops: 600, Seed: 5, Host: &HostSlot{Index: host}})
		require.NoError(t, r.Err)
		logs[host] = m.log
		lo, hi := w.Slice(host)
		own := 0
		for _, op := range m.log {
			f := strings.Fields(op)
			var k int
			for i := range w.Keys {
				if w.Key(i) == f[1] {
					k = i
				}
			}
			if k >= lo && k < hi {
				own++
			}
		}
		require.InDelta(t, 0.85, float64(own)/float64(len(m.log)), 0.06, "host %d's ops fall on its own slice", host)
	}
	require.NotEqual(t, logs[0], logs[1], "hosts run different streams")
	lo, hi := HostKeys(30, 2, 3)
	require.Equal(t, [2]int{20, 30}, [2]int{lo, hi})
	slo, shi := w.Slice(2)
	require.Equal(t, [2]int{slo, shi}, [2]int{lo, hi}, "a host's preload share is its affinity slice")
}

func TestPreloadRangeAndGetAll(t *testing.T) {
	ctx := context.Background()
	s := ReadZipf()
	s.Keys, s.Sizes = 12, []int{100, 200}
	w := compile(t, s)
	m := newMem()
	for host := range 3 {
		lo, hi := HostKeys(w.Keys, host, 3)
		require.NoError(t, PreloadRange(ctx, m, w, 2, lo, hi))
		require.Len(t, m.data, hi, "hosts 0..%d wrote their shares", host)
	}
	r := GetAll(ctx, m, w, Copy)
	require.NoError(t, r.Err)
	require.EqualValues(t, 12, r.Gets)
	require.Zero(t, r.Misses)
	require.EqualValues(t, 6*100+6*200, r.Bytes)
	require.Equal(t, m.opened.Load(), m.closed.Load(), "every target closed")
	require.NoError(t, Clear(ctx, m, w))
	r = GetAll(ctx, m, w, Copy)
	require.NoError(t, r.Err, "a miss is counted, not an error")
	require.EqualValues(t, 12, r.Misses)
	require.EqualValues(t, 12, r.Gets)
	require.Zero(t, r.Bytes)
}
