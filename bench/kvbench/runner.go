package kvbench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// RunConfig says how long and how wide one measured run is.
type RunConfig struct {
	// Threads is the number of client threads, each with its own Target.
	Threads int
	// Duration bounds the measured run; Ops, when above 0, fixes the number
	// of operations instead (split evenly among threads), which makes every
	// target execute exactly the same operations.
	Duration time.Duration
	Ops      int64
	// Warmup runs the workload (from a different seed) this long before the
	// measured run, unrecorded.
	Warmup time.Duration
	Seed   uint64
	Mode   GetMode
	// ServerCPU, if set, returns the CPU time the server process has used so
	// far; the result then says how many cores it kept busy.
	ServerCPU func() (time.Duration, error)
	// Host, when set, makes this run one client host's share of a run that
	// several hosts (processes) make at the same time.
	Host *HostSlot
}

// HostSlot places one host's client threads among all hosts' threads.
type HostSlot struct {
	// Index is the host's number from 0. Every thread of the host is in
	// client group Index (so READ_AFFINITY maps groups to hosts), and its
	// thread t draws the stream of global thread Index*Threads+t, so no two
	// hosts run the same operations.
	Index int
}

// stream returns the client group and global thread number of thread t.
func (cfg RunConfig) stream(t, groups int) (group, thread int) {
	if cfg.Host == nil {
		return t % groups, t
	}
	return cfg.Host.Index % groups, cfg.Host.Index*cfg.Threads + t
}

// warmupSalt keeps the warm-up's operations apart from the measured ones.
const warmupSalt = 0x5741524d // "WARM"

// Result is one measured run of a workload against a backend.
type Result struct {
	Workload string
	Target   string
	Mode     GetMode
	Threads  int
	// Round numbers repeated runs of the same workload, target and mode
	// (from 0); Combine merges them.
	Round int

	// Gets counts every get, the Misses among them included.
	Ops, Gets, Puts, Misses int64
	// Bytes counts value bytes moved: put sizes plus the lengths gets
	// returned.
	Bytes   int64
	Elapsed time.Duration
	// ServerCores is the server's CPU time over Elapsed (0: not measured).
	ServerCores float64

	Latency, GetLatency, PutLatency *Recorder
	// Err is why the run stopped early; its counts cover what ran.
	Err error
}

// OpsPerSec is the throughput in operations.
func (r Result) OpsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// MiBPerSec is the throughput in value bytes.
func (r Result) MiBPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / r.Elapsed.Seconds()
}

// Combine merges the rounds of each (workload, target, mode) into one
// result, in the order they first appear: counts, bytes and time add up,
// latencies merge, server cores are averaged over time. A failed round
// makes the combined result failed.
func Combine(results []Result) []Result {
	type id struct {
		workload, target string
		mode             GetMode
	}
	var out []Result
	at := map[id]int{}
	for _, r := range results {
		k := id{r.Workload, r.Target, r.Mode}
		i, ok := at[k]
		if !ok {
			at[k] = len(out)
			c := r
			c.Round = 0
			c.Latency, c.GetLatency, c.PutLatency = NewRecorder(), NewRecorder(), NewRecorder()
			c.Latency.Merge(r.Latency)
			c.GetLatency.Merge(r.GetLatency)
			c.PutLatency.Merge(r.PutLatency)
			out = append(out, c)
			continue
		}
		c := &out[i]
		cpu := c.ServerCores*c.Elapsed.Seconds() + r.ServerCores*r.Elapsed.Seconds()
		c.Ops += r.Ops
		c.Gets += r.Gets
		c.Puts += r.Puts
		c.Misses += r.Misses
		c.Bytes += r.Bytes
		c.Elapsed += r.Elapsed
		if c.Elapsed > 0 {
			c.ServerCores = cpu / c.Elapsed.Seconds()
		}
		c.Latency.Merge(r.Latency)
		c.GetLatency.Merge(r.GetLatency)
		c.PutLatency.Merge(r.PutLatency)
		if c.Err == nil {
			c.Err = r.Err
		}
	}
	return out
}

// open opens n targets, closing them all if one fails.
func open(ctx context.Context, b Backend, n int) ([]Target, error) {
	ts := make([]Target, 0, n)
	for range n {
		t, err := b.Open(ctx)
		if err != nil {
			closeAll(ts)
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

func closeAll(ts []Target) error {
	var errs []error
	for _, t := range ts {
		errs = append(errs, t.Close())
	}
	return errors.Join(errs...)
}

// parallel runs f(i) for i in [0, n) on n goroutines and returns the first
// error; the context f gets is cancelled on that error.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := f(ctx, i); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// Preload writes every key of a read workload once (key i gets
// PreloadSize(i) bytes), with threads clients in parallel. It does nothing
// for a workload without gets.
func Preload(ctx context.Context, b Backend, w *Workload, threads int) error {
	return PreloadRange(ctx, b, w, threads, 0, w.Keys)
}

// PreloadRange is Preload of the keys [lo, hi) only: on several hosts, each
// host writes its own share of the keys.
func PreloadRange(ctx context.Context, b Backend, w *Workload, threads, lo, hi int) error {
	lo, hi = max(lo, 0), min(hi, w.Keys)
	if !w.Reads() || lo >= hi {
		return nil
	}
	threads = max(min(threads, hi-lo), 1)
	ts, err := open(ctx, b, threads)
	if err != nil {
		return err
	}
	defer closeAll(ts)
	return parallel(ctx, threads, func(ctx context.Context, t int) error {
		for k := lo + t; k < hi; k += threads {
			if err := ts[t].Put(ctx, w.Key(k), w.Value(w.PreloadSize(k))); err != nil {
				return fmt.Errorf("preloading %s on %s: put %q: %w", w.Name, b.Name(), w.Key(k), err)
			}
		}
		return nil
	})
}

// Clear removes every key of the workload, so the next workload starts on
// an empty store.
func Clear(ctx context.Context, b Backend, w *Workload) error {
	ts, err := open(ctx, b, 1)
	if err != nil {
		return err
	}
	defer closeAll(ts)
	for k := range w.Keys {
		if err := ts[0].Remove(ctx, w.Key(k)); err != nil {
			return fmt.Errorf("clearing %s on %s: remove %q: %w", w.Name, b.Name(), w.Key(k), err)
		}
	}
	return nil
}

// HostKeys returns host i's share [lo, hi) of keys among n hosts: contiguous
// slices, the same as READ_AFFINITY's when its groups are the hosts.
func HostKeys(keys, i, n int) (lo, hi int) {
	n = max(n, 1)
	return i * keys / n, (i + 1) * keys / n
}

// GetAll reads every key of w once, in order, on one client, and records
// it like a measured run: how fast one client reads values it has not read
// before (on several hosts: values another host wrote). A miss is counted,
// not an error.
func GetAll(ctx context.Context, b Backend, w *Workload, mode GetMode) Result {
	res := Result{Workload: w.Name, Target: b.Name(), Mode: mode, Threads: 1,
		Latency: NewRecorder(), GetLatency: NewRecorder(), PutLatency: NewRecorder()}
	ts, err := open(ctx, b, 1)
	if err != nil {
		res.Err = err
		return res
	}
	defer closeAll(ts)
	start := time.Now()
	for k := range w.Keys {
		if err := ctx.Err(); err != nil {
			res.Err = err
			break
		}
		t0 := time.Now()
		n, err := ts[0].Get(ctx, w.Key(k), mode)
		lat := time.Since(t0)
		switch {
		case errors.Is(err, ErrMiss):
			res.Misses++
			n = 0
		case err != nil:
			res.Err = fmt.Errorf("get %q: %w", w.Key(k), err)
		case !w.ValidSize(n):
			res.Err = fmt.Errorf("get %q returned %d bytes, a size no put writes", w.Key(k), n)
		}
		if res.Err != nil {
			break
		}
		res.Ops++
		res.Gets++
		res.Bytes += int64(n)
		res.Latency.Record(lat)
		res.GetLatency.Record(lat)
	}
	res.Elapsed = time.Since(start)
	return res
}

// threadStats is one thread's share of a Result.
type threadStats struct {
	ops, gets, puts, misses, bytes int64
	all, get, put                  *Recorder
}

// Run measures w against b: cfg.Threads clients, each with its own Target
// and operation stream (thread t is in client group t%Groups), run together
// for cfg.Duration or cfg.Ops operations after an unrecorded warm-up. A get
// that returns a length no put wrote is an error (a broken client or
// server), as is any error other than a miss; the first one stops the run
// and is returned in Result.Err.
func Run(ctx context.Context, b Backend, w *Workload, cfg RunConfig) Result {
	res := Result{Workload: w.Name, Target: b.Name(), Mode: cfg.Mode, Threads: cfg.Threads,
		Latency: NewRecorder(), GetLatency: NewRecorder(), PutLatency: NewRecorder()}
	if !w.Reads() {
		res.Mode = NoGet
	}
	if cfg.Threads < 1 || (cfg.Duration <= 0 && cfg.Ops <= 0) {
		res.Err = fmt.Errorf("kvbench: a run needs at least 1 thread and a duration or an op count")
		return res
	}
	ts, err := open(ctx, b, cfg.Threads)
	if err != nil {
		res.Err = err
		return res
	}
	defer closeAll(ts)

	groups := max(w.Groups, 1)
	if cfg.Warmup > 0 {
		wctx, cancel := context.WithTimeout(ctx, cfg.Warmup+time.Minute)
		deadline := time.Now().Add(cfg.Warmup)
		err := parallel(wctx, cfg.Threads, func(ctx context.Context, t int) error {
			group, thread := cfg.stream(t, groups)
			g := w.Generator(cfg.Seed^warmupSalt, group, thread)
			_, err := drive(ctx, ts[t], w, g, cfg.Mode, deadline, -1, false)
			return err
		})
		cancel()
		if err != nil {
			res.Err = fmt.Errorf("warm-up: %w", err)
			return res
		}
	}

	stats := make([]*threadStats, cfg.Threads)
	var cpu0 time.Duration
	if cfg.ServerCPU != nil {
		cpu0, _ = cfg.ServerCPU()
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	err = parallel(ctx, cfg.Threads, func(ctx context.Context, t int) error {
		quota := int64(-1)
		if cfg.Ops > 0 {
			quota = cfg.Ops / int64(cfg.Threads)
			if int64(t) < cfg.Ops%int64(cfg.Threads) {
				quota++
			}
		}
		group, thread := cfg.stream(t, groups)
		var err error
		stats[t], err = drive(ctx, ts[t], w, w.Generator(cfg.Seed, group, thread), cfg.Mode, deadline, quota, true)
		return err
	})
	res.Elapsed = time.Since(start)
	if cfg.ServerCPU != nil {
		if cpu1, err := cfg.ServerCPU(); err == nil && res.Elapsed > 0 {
			res.ServerCores = (cpu1 - cpu0).Seconds() / res.Elapsed.Seconds()
		}
	}
	res.Err = err
	for _, s := range stats {
		if s == nil {
			continue
		}
		res.Ops += s.ops
		res.Gets += s.gets
		res.Puts += s.puts
		res.Misses += s.misses
		res.Bytes += s.bytes
		res.Latency.Merge(s.all)
		res.GetLatency.Merge(s.get)
		res.PutLatency.Merge(s.put)
	}
	return res
}

// drive runs one thread's operations until the deadline (quota < 0) or
// until quota operations are done.
func drive(ctx context.Context, t Target, w *Workload, g *Generator, mode GetMode, deadline time.Time, quota int64, record bool) (*threadStats, error) {
	s := &threadStats{all: NewRecorder(), get: NewRecorder(), put: NewRecorder()}
	for {
		if quota >= 0 && s.ops >= quota {
			return s, nil
		}
		if err := ctx.Err(); err != nil {
			return s, err
		}
		now := time.Now()
		if quota < 0 && !now.Before(deadline) {
			return s, nil
		}
		op := g.Next()
		key := w.Key(op.Key)
		var n int
		var err error
		if op.Get {
			n, err = t.Get(ctx, key, mode)
		} else {
			n = op.Size
			err = t.Put(ctx, key, w.Value(op.Size))
		}
		lat := time.Since(now)
		switch {
		case op.Get && errors.Is(err, ErrMiss):
			s.misses++
			n = 0
		case err != nil:
			verb := "put"
			if op.Get {
				verb = "get"
			}
			return s, fmt.Errorf("%s %q: %w", verb, key, err)
		case op.Get && !w.ValidSize(n):
			return s, fmt.Errorf("get %q returned %d bytes, a size no put writes", key, n)
		}
		if !record {
			continue
		}
		s.ops++
		s.bytes += int64(n)
		s.all.Record(lat)
		if op.Get {
			s.gets++
			s.get.Record(lat)
		} else {
			s.puts++
			s.put.Record(lat)
		}
	}
}
