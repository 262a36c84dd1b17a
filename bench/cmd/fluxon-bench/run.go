package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/bench/benchenv"
	"github.com/fluxon-dev/fluxon/bench/kvbench"
)

// memShare is the share of available memory each system may take when
// --mem is not given: two systems, and room left for the clients.
const memShare = 0.35

// backend is a system under test with the process that serves it.
type backend struct {
	kvbench.Backend
	pid int
}

// run starts the servers, runs every workload against every target and
// prints the results. Servers are stopped however it ends.
func run(ctx context.Context, out, log io.Writer, o options, p plan) (err error) {
	var workloads []*kvbench.Workload
	for _, s := range p.specs {
		w, err := kvbench.Compile(s, p.run.Seed)
		if err != nil {
			return usageError{err}
		}
		workloads = append(workloads, w)
	}
	mem, memNote, err := memoryFor(p)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp(o.workDir, "fluxon-bench-")
	if err != nil {
		return err
	}
	defer func() { dropWorkDir(log, dir, o.keep, err) }()

	h := header{plan: p, mem: mem, memNote: memNote, workloads: workloads}
	h.collect()

	var floors []kvbench.Floor
	if o.floor {
		fmt.Fprintf(log, "measuring the memcpy floor...\n")
		if floors, err = kvbench.MeasureFloor(ctx, floorSizes(workloads), p.run.Threads, p.floorPer); err != nil {
			return err
		}
	}

	backends, stop, err := startBackends(ctx, log, o, p, dir, mem, &h)
	defer func() {
		if serr := stop(); serr != nil {
			fmt.Fprintf(log, "stopping servers: %v\n", serr)
		}
	}()
	if err != nil {
		return err
	}

	var results []kvbench.Result
	runErr := runAll(ctx, log, p, workloads, backends, func(r kvbench.Result) { results = append(results, r) })

	h.print(out)
	if len(floors) > 0 {
		fmt.Fprintln(out)
		if err := kvbench.PrintFloor(out, floors); err != nil {
			return err
		}
	}
	if err := printResults(out, results); err != nil {
		return err
	}
	if errors.Is(runErr, context.Canceled) {
		fmt.Fprintln(out, "\ninterrupted: the table holds the runs that completed")
	}
	if runErr == nil {
		for _, r := range results {
			if r.Err != nil {
				runErr = fmt.Errorf("%d run(s) failed (see FAILED above)", countFailed(results))
				break
			}
		}
	}
	return runErr
}

func countFailed(rs []kvbench.Result) int {
	n := 0
	for _, r := range rs {
		if r.Err != nil {
			n++
		}
	}
	return n
}

// memoryFor sizes fluxon's pool and redis's maxmemory: what the largest
// workload needs, capped by --mem or a share of the available memory.
func memoryFor(p plan) (uint64, string, error) {
	var need uint64
	for _, s := range p.specs {
		need = max(need, benchenv.PoolSizeFor(s.WorkingSet(), s.MaxSize(), p.run.Threads))
	}
	if p.mem > 0 {
		note := "--mem"
		if p.mem < need {
			note += fmt.Sprintf("; the largest workload wants %s, so both systems evict and gets may miss", benchenv.FormatMiB(need))
		}
		return p.mem, note, nil
	}
	avail, err := benchenv.MemAvailable()
	if err != nil {
		return need, "sized to the workloads (available memory unknown)", nil
	}
	limit := uint64(float64(avail) * memShare)
	if need > limit {
		return limit, fmt.Sprintf("capped at %.0f%% of available memory; the largest workload wants %s, so both systems evict and gets may miss", memShare*100, benchenv.FormatMiB(need)), nil
	}
	return need, "sized to the workloads", nil
}

// floorSizes lists every value size of the workloads once, ascending.
func floorSizes(ws []*kvbench.Workload) []int {
	var sizes []int
	for _, w := range ws {
		for _, n := range w.Sizes {
			if !slices.Contains(sizes, n) {
				sizes = append(sizes, n)
			}
		}
	}
	slices.Sort(sizes)
	return sizes
}

// startBackends starts the servers the targets need and returns the
// backends in the order of --targets, and a function that stops every server
// started (also when starting one failed).
func startBackends(ctx context.Context, log io.Writer, o options, p plan, dir string, mem uint64, h *header) ([]backend, func() error, error) {
	var stops []func() error
	stop := func() error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i]())
		}
		return errors.Join(errs...)
	}
	needFluxon := slices.ContainsFunc(p.targets, func(t string) bool { return strings.HasPrefix(t, "fluxon") })

	var redis *benchenv.Redis
	if slices.Contains(p.targets, targetRedis) {
		rdir := filepath.Join(dir, "redis")
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			return nil, stop, err
		}
		fmt.Fprintf(log, "starting redis-server (maxmemory %s)...\n", benchenv.FormatMiB(mem))
		var err error
		redis, err = benchenv.StartRedis(ctx, benchenv.RedisOptions{Bin: o.redisBin, Dir: rdir, MaxMemory: mem, IOThreads: o.redisIOThreads})
		if err != nil {
			return nil, stop, err
		}
		stops = append(stops, redis.Stop)
		h.redis = redis.Version
		fmt.Fprintf(log, "  redis-server on %s (pid %d)\n", redis.Addr, redis.PID())
	}
	var fx *benchenv.Fluxon
	if needFluxon {
		fdir := filepath.Join(dir, "fluxon")
		if err := os.MkdirAll(fdir, 0o755); err != nil {
			return nil, stop, err
		}
		fmt.Fprintf(log, "starting fluxon up (pool %s)...\n", benchenv.FormatMiB(mem))
		var err error
		fx, err = benchenv.StartFluxon(ctx, benchenv.FluxonOptions{Bin: o.fluxonBin, Dir: fdir, PoolSize: mem, PollMode: o.pollMode})
		if err != nil {
			return nil, stop, err
		}
		stops = append(stops, fx.Stop)
		h.fluxon = fx.Version
		fmt.Fprintf(log, "  fluxon up: gRPC %s, RESP %s (pid %d)\n", fx.GRPC, fx.RESP, fx.PID())
	}
	var out []backend
	for _, t := range p.targets {
		switch t {
		case targetRedis:
			out = append(out, backend{&kvbench.Redis{Addr: redis.Addr}, redis.PID()})
		case targetFluxonShm:
			out = append(out, backend{&kvbench.Fluxon{Config: fluxon.Config{ClusterName: fx.ClusterName, SharedFilePath: fx.SharedFilePath, Name: "fluxon-bench"}}, fx.PID()})
		case targetFluxonGRPC:
			out = append(out, backend{&kvbench.Fluxon{Config: fluxon.Config{Address: fx.GRPC, RemoteOnly: true, Name: "fluxon-bench"}}, fx.PID()})
		case targetFluxonRESP:
			out = append(out, backend{&kvbench.Redis{Label: targetFluxonRESP, Addr: fx.RESP}, fx.PID()})
		}
	}
	return out, stop, nil
}

// runAll runs, for each workload and each backend: the preload, one
// measured run per get mode, and the clean-up. A failed run is reported in
// its row and the others go on; an interrupt stops everything.
func runAll(ctx context.Context, log io.Writer, p plan, ws []*kvbench.Workload, bs []backend, emit func(kvbench.Result)) error {
	for _, w := range ws {
		for round := range p.rounds {
			if err := runRound(ctx, log, p, w, bs, round, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// runRound runs one round of a workload on every backend; odd rounds take
// the backends in reverse order, so neither always goes first.
func runRound(ctx context.Context, log io.Writer, p plan, w *kvbench.Workload, bs []backend, round int, emit func(kvbench.Result)) error {
	order := slices.Clone(bs)
	if round%2 == 1 {
		slices.Reverse(order)
	}
	for _, b := range order {
		start := time.Now()
		if err := kvbench.Preload(ctx, b, w, p.run.Threads); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			emit(kvbench.Result{Workload: w.Name, Target: b.Name(), Mode: kvbench.Copy, Threads: p.run.Threads, Round: round,
				Latency: kvbench.NewRecorder(), GetLatency: kvbench.NewRecorder(), PutLatency: kvbench.NewRecorder(), Err: err})
			continue
		}
		if w.Reads() {
			fmt.Fprintf(log, "%s %s: preloaded %d keys in %s\n", w.Name, b.Name(), w.Keys, time.Since(start).Round(time.Millisecond))
		}
		modes := []kvbench.GetMode{kvbench.Copy}
		if w.Reads() {
			modes = nil
			for _, m := range p.modes {
				if slices.Contains(b.Modes(), m) {
					modes = append(modes, m)
				}
			}
		}
		for _, m := range modes {
			cfg := p.run
			cfg.Mode = m
			pid := b.pid
			cfg.ServerCPU = func() (time.Duration, error) { return benchenv.CPUTime(pid) }
			r := kvbench.Run(ctx, b, w, cfg)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.Round = round
			emit(r)
			status := "ok"
			if r.Err != nil {
				status = "FAILED: " + r.Err.Error()
			}
			fmt.Fprintf(log, "round %d %s %s %s: %d ops in %s, %.1f ops/s, %.1f MiB/s, %s\n", round+1, w.Name, b.Name(), r.Mode,
				r.Ops, r.Elapsed.Round(time.Millisecond), r.OpsPerSec(), r.MiBPerSec(), status)
		}
		if err := kvbench.Clear(ctx, b, w); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: %w", b.Name(), err)
		}
	}
	return nil
}

// header is the run's context, printed above the tables.
type header struct {
	plan                  plan
	workloads             []*kvbench.Workload
	mem                   uint64
	memNote               string
	date, host, cpu, kern string
	ncpu                  int
	memTotal              uint64
	redis, fluxon         string
	// With --hosts above 1: the lab, etcd's and iperf3's versions.
	lab, etcd, iperf3 string
}

func (h *header) collect() {
	h.date = time.Now().UTC().Format("2006-01-02 15:04 MST")
	h.host, _ = os.Hostname()
	h.ncpu = runtime.NumCPU()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.kern = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb uint64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			h.memTotal = kb << 10
		}
	}
}

func (h *header) print(out io.Writer) {
	p := h.plan
	fmt.Fprintf(out, "fluxon-bench, %s, scale %s, seed %d\n", h.date, p.scaleName, p.run.Seed)
	fmt.Fprintf(out, "machine: %s, %d CPUs (%s), %s RAM, Linux %s, %s\n", h.host, h.ncpu, h.cpu, benchenv.FormatMiB(h.memTotal), h.kern, runtime.Version())
	if h.redis != "" {
		fmt.Fprintf(out, "redis:   %s\n", h.redis)
	}
	if h.fluxon != "" {
		fmt.Fprintf(out, "fluxon:  %s\n", h.fluxon)
	}
	if h.etcd != "" {
		fmt.Fprintf(out, "etcd:    %s\n", h.etcd)
	}
	if h.iperf3 != "" {
		fmt.Fprintf(out, "iperf3:  %s\n", h.iperf3)
	}
	if h.lab != "" {
		fmt.Fprintf(out, "hosts:   %s\n", h.lab)
	}
	perSystem := "per system"
	if p.hosts > 1 {
		perSystem = "for redis and for each owner"
	}
	fmt.Fprintf(out, "memory:  %s %s (%s)\n", benchenv.FormatMiB(h.mem), perSystem, h.memNote)
	length := fmt.Sprintf("%s per run after a %s warm-up", p.run.Duration, p.run.Warmup)
	if p.run.Ops > 0 {
		length = fmt.Sprintf("%d ops per run after a %s warm-up", p.run.Ops, p.run.Warmup)
	}
	threads := fmt.Sprintf("%d client threads", p.run.Threads)
	if p.hosts > 1 {
		threads = fmt.Sprintf("%d client thread(s) on each of %d hosts", p.run.Threads, p.hosts)
	}
	fmt.Fprintf(out, "runs:    %s, %s, %d round(s), the targets' order alternating\n", threads, length, p.rounds)
	for _, w := range h.workloads {
		desc := fmt.Sprintf("%.0f%% get, ", 100*w.GetFraction)
		if w.Zipf > 0 {
			desc += fmt.Sprintf("Zipf %.2f", w.Zipf)
		} else {
			desc += "uniform"
		}
		desc += fmt.Sprintf(" over %d keys, values %s", w.Keys, kvbench.FormatSizes(w.Sizes))
		if w.Affinity > 0 {
			groups := "client groups'"
			if p.hosts > 1 {
				groups = "hosts'"
			}
			desc += fmt.Sprintf(", %.0f%% of each of %d %s ops on its own key slice", 100*w.Affinity, w.Groups, groups)
		}
		fmt.Fprintf(out, "  %-14s %s\n", w.Name, desc)
	}
}

// printResults writes the results table and its latency split, each after
// a blank line.
func printResults(out io.Writer, results []kvbench.Result) error {
	fmt.Fprintln(out)
	if err := kvbench.PrintTable(out, results, peer); err != nil {
		return err
	}
	fmt.Fprintln(out)
	return kvbench.PrintLatencySplit(out, results)
}

// dropWorkDir removes a run's work directory, unless it is to be kept or
// the run failed (other than by an interrupt): then it says where it is.
func dropWorkDir(log io.Writer, dir string, keep bool, err error) {
	if keep || err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(log, "work directory (server logs) kept: %s\n", dir)
		return
	}
	os.RemoveAll(dir)
}
