package kvbench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memBackend is an in-memory Backend that logs every operation, so tests
// can check what the runner did without a server.
type memBackend struct {
	mu     sync.Mutex
	data   map[string]int // key -> stored size
	log    []string       // "put key size" / "get key" / "rm key", in order per target
	opened atomic.Int32
	closed atomic.Int32
	// failAt, when above 0, makes the failAt-th operation (over all
	// targets) fail.
	failAt int64
	ops    atomic.Int64
	// lie, when set, makes gets return a length no put wrote.
	lie bool
}

func newMem() *memBackend { return &memBackend{data: map[string]int{}} }

func (m *memBackend) Name() string     { return "mem" }
func (m *memBackend) Modes() []GetMode { return []GetMode{Copy, View} }
func (m *memBackend) Open(context.Context) (Target, error) {
	m.opened.Add(1)
	return &memTarget{m: m}, nil
}

type memTarget struct {
	m   *memBackend
	ops []string // this target's operations, in order
}

var errInjected = errors.New("injected failure")

func (t *memTarget) fail() error {
	if n := t.m.ops.Add(1); t.m.failAt > 0 && n == t.m.failAt {
		return errInjected
	}
	return nil
}

func (t *memTarget) Put(_ context.Context, key string, value []byte) error {
	if err := t.fail(); err != nil {
		return err
	}
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	t.m.data[key] = len(value)
	t.ops = append(t.ops, fmt.Sprintf("put %s %d", key, len(value)))
	return nil
}

func (t *memTarget) Get(_ context.Context, key string, _ GetMode) (int, error) {
	if err := t.fail(); err != nil {
		return 0, err
	}
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	t.ops = append(t.ops, "get "+key)
	n, ok := t.m.data[key]
	if !ok {
		return 0, ErrMiss
	}
	if t.m.lie {
		return n + 1, nil
	}
	return n, nil
}

func (t *memTarget) Remove(_ context.Context, key string) error {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	delete(t.m.data, key)
	return nil
}

func (t *memTarget) Close() error {
	t.m.mu.Lock()
	t.m.log = append(t.m.log, t.ops...)
	t.m.mu.Unlock()
	t.m.closed.Add(1)
	return nil
}

func smallRead(t *testing.T) *Workload {
	s := ReadAffinity()
	s.Keys, s.Sizes = 30, []int{100, 200, 300}
	return compile(t, s)
}

func TestPreloadWritesEveryKeyAndClearRemovesThem(t *testing.T) {
	ctx := context.Background()
	w := smallRead(t)
	m := newMem()
	require.NoError(t, Preload(ctx, m, w, 4))
	require.Len(t, m.data, w.Keys)
	for k := range w.Keys {
		require.Equal(t, w.PreloadSize(k), m.data[w.Key(k)], "key %d", k)
	}
	require.NoError(t, Clear(ctx, m, w))
	require.Empty(t, m.data)
	require.Equal(t, m.opened.Load(), m.closed.Load(), "every target closed")

	put := compile(t, PutOnly())
	require.NoError(t, Preload(ctx, m, put, 4))
	require.Empty(t, m.data, "a workload without gets is not preloaded")
}

func TestRunWithOpCountIsExactAndRepeatable(t *testing.T) {
	ctx := context.Background()
	w := smallRead(t)
	cfg := RunConfig{Threads: 3, Ops: 1000, Seed: 99, Mode: Copy}
	var logs [2][]string
	for i := range logs {
		m := newMem()
		require.NoError(t, Preload(ctx, m, w, 1))
		m.log = nil
		r := Run(ctx, m, w, cfg)
		require.NoError(t, r.Err)
		require.EqualValues(t, 1000, r.Ops)
		require.Equal(t, r.Ops, r.Gets+r.Puts)
		require.Zero(t, r.Misses, "every key was preloaded")
		require.EqualValues(t, r.Ops, r.Latency.Count())
		require.EqualValues(t, r.Gets, r.GetLatency.Count())
		require.EqualValues(t, r.Puts, r.PutLatency.Count())
		require.InDelta(t, 0.9, float64(r.Gets)/float64(r.Ops), 0.05)
		require.Greater(t, r.Bytes, r.Ops*100-1, "every op moved at least the smallest value")
		require.Greater(t, r.OpsPerSec(), 0.0)
		require.Equal(t, ReadAffinityName, r.Workload)
		require.Equal(t, "mem", r.Target)
		require.Equal(t, m.opened.Load(), m.closed.Load(), "every target closed")
		logs[i] = m.log
	}
	require.ElementsMatch(t, logs[0], logs[1], "two targets see the same operations for the same seed")
}

func TestRunCountsBytesAndMisses(t *testing.T) {
	ctx := context.Background()
	s := ReadZipf()
	s.Keys, s.Sizes, s.GetFraction = 10, []int{1000}, 1
	w := compile(t, s)
	m := newMem()
	// No preload: every get misses.
	r := Run(ctx, m, w, RunConfig{Threads: 2, Ops: 100, Seed: 1})
	require.NoError(t, r.Err)
	require.EqualValues(t, 100, r.Misses)
	require.Zero(t, r.Bytes)
	require.NoError(t, Preload(ctx, m, w, 2))
	r = Run(ctx, m, w, RunConfig{Threads: 2, Ops: 100, Seed: 1})
	require.NoError(t, r.Err)
	require.Zero(t, r.Misses)
	require.EqualValues(t, 100*1000, r.Bytes)
}

func TestRunByDuration(t *testing.T) {
	w := smallRead(t)
	m := newMem()
	r := Run(context.Background(), m, w, RunConfig{Threads: 3, Duration: 50 * time.Millisecond, Warmup: 10 * time.Millisecond, Seed: 1})
	require.NoError(t, r.Err)
	require.Greater(t, r.Ops, int64(0))
	require.GreaterOrEqual(t, r.Elapsed, 50*time.Millisecond)
	require.EqualValues(t, r.Ops, r.Latency.Count(), "warm-up operations are not recorded")
	require.Greater(t, m.ops.Load(), r.Ops, "the warm-up ran operations too")
}

func TestRunStopsOnTheFirstError(t *testing.T) {
	w := smallRead(t)
	m := newMem()
	m.failAt = 50
	r := Run(context.Background(), m, w, RunConfig{Threads: 3, Ops: 1000, Seed: 1})
	require.ErrorIs(t, r.Err, errInjected)
	require.Less(t, r.Ops, int64(1000))
	require.Regexp(t, `^(get|put) "kvb/READ_AFFINITY/\d+"`, r.Err.Error(), "the error names the operation")
	require.Equal(t, m.opened.Load(), m.closed.Load(), "every target closed")
}

func TestRunRejectsAWrongLength(t *testing.T) {
	ctx := context.Background()
	w := smallRead(t)
	m := newMem()
	require.NoError(t, Preload(ctx, m, w, 1))
	m.lie = true
	r := Run(ctx, m, w, RunConfig{Threads: 1, Ops: 100, Seed: 1})
	require.ErrorContains(t, r.Err, "a size no put writes")
}

func TestRunHonoursCancel(t *testing.T) {
	w := smallRead(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := Run(ctx, newMem(), w, RunConfig{Threads: 2, Duration: time.Hour, Seed: 1})
	require.ErrorIs(t, r.Err, context.Canceled)
}

func TestRunNeedsThreadsAndALength(t *testing.T) {
	w := smallRead(t)
	require.Error(t, Run(context.Background(), newMem(), w, RunConfig{Threads: 0, Ops: 10}).Err)
	require.Error(t, Run(context.Background(), newMem(), w, RunConfig{Threads: 1}).Err)
}

func TestPutOnlyResultHasNoGetMode(t *testing.T) {
	s := PutOnly()
	s.Keys, s.Sizes = 10, []int{10}
	r := Run(context.Background(), newMem(), compile(t, s), RunConfig{Threads: 1, Ops: 10, Mode: View})
	require.NoError(t, r.Err)
	require.Equal(t, NoGet, r.Mode)
	require.EqualValues(t, 10, r.Puts)
}

func TestServerCPUIsSampled(t *testing.T) {
	w := smallRead(t)
	var calls atomic.Int32
	cpu := func() (time.Duration, error) {
		return time.Duration(calls.Add(1)) * 10 * time.Millisecond, nil
	}
	r := Run(context.Background(), newMem(), w, RunConfig{Threads: 1, Duration: 20 * time.Millisecond, Seed: 1, ServerCPU: cpu})
	require.NoError(t, r.Err)
	require.EqualValues(t, 2, calls.Load(), "sampled at the start and the end of the measured run")
	require.InDelta(t, (10*time.Millisecond).Seconds()/r.Elapsed.Seconds(), r.ServerCores, 1e-9)
}

func TestMissesAreCountedAmongGets(t *testing.T) {
	s := ReadZipf()
	s.Keys, s.Sizes, s.GetFraction = 10, []int{1000}, 1
	w := compile(t, s)
	r := Run(context.Background(), newMem(), w, RunConfig{Threads: 1, Ops: 40, Seed: 1})
	require.NoError(t, r.Err)
	require.EqualValues(t, 40, r.Gets, "a get that misses is still a get")
	require.EqualValues(t, 40, r.Misses)
	var b strings.Builder
	require.NoError(t, PrintTable(&b, []Result{r}, "redis"))
	require.Contains(t, b.String(), "100.0%", "every get missed: the miss column says 100%, not 50%")
}
