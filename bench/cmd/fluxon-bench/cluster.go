package main

// --hosts N: the workloads on N network-namespace hosts (make bench-cluster).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fluxon-dev/fluxon/bench/benchenv"
	"github.com/fluxon-dev/fluxon/bench/kvbench"
	"github.com/fluxon-dev/fluxon/internal/netlab"
)

const (
	// labPrefix names the benchmark's namespaces and links ("fb<octet>-h1").
	labPrefix = "fb"
	// startSlack is how far ahead of now the parent sets a run's start, so
	// every host's worker is up and waiting when it comes.
	startSlack = 1500 * time.Millisecond
	// workerGrace bounds a worker beyond its run's planned length.
	workerGrace = 2 * time.Minute
	// xhostTarget is the share of iperf3's throughput the cross-host get
	// should reach (issue 4).
	xhostTarget = 0.70
	// xhostName labels the cross-host test's keys and rows.
	xhostName = "XHOST_16MiB"
)

// cluster is what runs for --hosts N: the lab and its servers.
type cluster struct {
	lab    *netlab.Lab
	etcd   *benchenv.Etcd
	master *benchenv.Proc
	owners []*benchenv.Owner
	redis  *benchenv.Redis
	self   string
	dir    string
	stops  []func() error
}

// stop stops everything started, in reverse order, and removes the lab.
func (c *cluster) stop() error {
	var errs []error
	for i := len(c.stops) - 1; i >= 0; i-- {
		errs = append(errs, c.stops[i]())
	}
	c.stops = nil
	return errors.Join(errs...)
}

// clusterMemory sizes each owner's pool and redis's maxmemory: what the
// largest workload (or the cross-host test) needs on one system, as if
// every key ended up on one owner; the owners together may take
// memShare of the available memory, and redis as much again.
func clusterMemory(p plan) (perOwner uint64, note string, err error) {
	threads := p.run.Threads * p.hosts
	var need uint64
	for _, s := range p.specs {
		need = max(need, benchenv.PoolSizeFor(s.WorkingSet(), s.MaxSize(), threads))
	}
	if p.xhostKeys > 0 {
		need = max(need, benchenv.PoolSizeFor(uint64(p.xhostKeys)*xhostSize, xhostSize, 1))
	}
	if p.mem > 0 {
		note = "--mem"
		if p.mem < need {
			note += fmt.Sprintf("; the largest workload wants %s, so both systems evict and gets may miss", benchenv.FormatMiB(need))
		}
		return p.mem, note, nil
	}
	avail, err := benchenv.MemAvailable()
	if err != nil {
		return need, "sized to the workloads (available memory unknown)", nil
	}
	limit := uint64(float64(avail) * memShare / float64(p.hosts))
	if need > limit {
		return limit, fmt.Sprintf("capped at %.0f%% of available memory for the %d owners together; the largest workload wants %s, so both systems evict and gets may miss",
			memShare*100, p.hosts, benchenv.FormatMiB(need)), nil
	}
	return need, "sized to the workloads", nil
}

// startCluster builds the lab and starts etcd, the master and redis on the
// gateway, and an owner in every host. On error, what was started is
// stopped.
func startCluster(ctx context.Context, log io.Writer, o options, p plan, dir string, mem uint64, h *header) (c *cluster, err error) {
	c = &cluster{dir: dir}
	defer func() {
		if err != nil {
			if serr := c.stop(); serr != nil {
				fmt.Fprintf(log, "stopping servers: %v\n", serr)
			}
		}
	}()
	if c.self, err = os.Executable(); err != nil {
		return c, err
	}
	fmt.Fprintf(log, "making %d network-namespace hosts...\n", p.hosts)
	if c.lab, err = netlab.Start(labPrefix, p.hosts); err != nil {
		return c, err
	}
	c.stops = append(c.stops, func() error { c.lab.Close(); return nil })
	for _, host := range c.lab.Hosts {
		fmt.Fprintf(log, "  %s: namespace %s, %s\n", host.Name, host.NS, host.IP)
	}
	mkdir := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		return d, os.MkdirAll(d, 0o755)
	}

	edir, err := mkdir("etcd")
	if err != nil {
		return c, err
	}
	if c.etcd, err = benchenv.StartEtcd(ctx, edir, c.lab.Gateway); err != nil {
		return c, err
	}
	c.stops = append(c.stops, c.etcd.Stop)
	h.etcd = c.etcd.Version
	fmt.Fprintf(log, "  etcd on %s (pid %d)\n", c.etcd.URL, c.etcd.PID())

	mdir, err := mkdir("master")
	if err != nil {
		return c, err
	}
	if c.master, err = benchenv.StartMaster(ctx, o.fluxonBin, mdir, c.etcd.URL, c.lab.Gateway); err != nil {
		return c, err
	}
	c.stops = append(c.stops, c.master.Stop)
	fmt.Fprintf(log, "  fluxon master on %s (pid %d)\n", c.lab.Gateway, c.master.PID())

	needFluxon := slices.ContainsFunc(p.targets, func(t string) bool { return strings.HasPrefix(t, "fluxon") }) || p.xhostKeys > 0
	if needFluxon {
		for i, host := range c.lab.Hosts {
			odir, err := mkdir(host.Name)
			if err != nil {
				return c, err
			}
			ow, err := benchenv.StartOwner(ctx, benchenv.OwnerOptions{Bin: o.fluxonBin, Dir: odir, Key: fmt.Sprintf("o%d", i+1),
				NS: host.NS, IP: host.IP, Etcd: c.etcd.URL, PoolSize: mem, PollMode: o.pollMode, TCPReactor: o.tcpReactor})
			if err != nil {
				return c, err
			}
			c.owners = append(c.owners, ow)
			c.stops = append(c.stops, ow.Stop)
			fmt.Fprintf(log, "  fluxon owner o%d in %s: RESP %s, gRPC %s (pid %d)\n", i+1, host.Name, ow.RESP, ow.GRPC, ow.PID())
		}
		if err := benchenv.WaitForOwners(ctx, o.fluxonBin, c.etcd.URL, p.hosts); err != nil {
			return c, err
		}
		ver, _ := exec.Command(o.fluxonBin, "version").Output()
		h.fluxon = strings.SplitN(strings.TrimSpace(string(ver)), "\n", 2)[0]
	}

	if slices.Contains(p.targets, targetRedis) || p.xhostKeys > 0 {
		rdir, err := mkdir("redis")
		if err != nil {
			return c, err
		}
		if c.redis, err = benchenv.StartRedis(ctx, benchenv.RedisOptions{Bin: o.redisBin, Dir: rdir, MaxMemory: mem, IOThreads: o.redisIOThreads, Host: c.lab.Gateway}); err != nil {
			return c, err
		}
		c.stops = append(c.stops, c.redis.Stop)
		h.redis = c.redis.Version
		fmt.Fprintf(log, "  redis-server on %s (pid %d)\n", c.redis.Addr, c.redis.PID())
	}
	return c, nil
}

// target returns how host i reaches target name.
func (c *cluster) target(name string, i int) targetSpec {
	switch name {
	case targetRedis:
		return targetSpec{Name: name, Addr: c.redis.Addr}
	case targetFluxonRESP:
		return targetSpec{Name: name, Addr: c.owners[i].RESP}
	case targetFluxonGRPC:
		return targetSpec{Name: name, Addr: c.owners[i].GRPC}
	}
	return targetSpec{Name: name, ClusterName: benchenv.ClusterName, SharedFilePath: c.owners[i].SharedFilePath}
}

// serverPIDs are the processes that serve target name: its CPU is theirs.
func (c *cluster) serverPIDs(name string) []int {
	if name == targetRedis {
		return []int{c.redis.PID()}
	}
	var pids []int
	for _, ow := range c.owners {
		pids = append(pids, ow.PID())
	}
	return pids
}

// worker runs job j in host i's namespace and returns its reply.
func (c *cluster) worker(ctx context.Context, i int, j job) reply {
	j.Host, j.Hosts = i, len(c.lab.Hosts)
	in, err := json.Marshal(j)
	if err != nil {
		return reply{Err: err.Error()}
	}
	limit := j.Duration + j.Warmup + time.Until(j.StartAt) + workerGrace
	if j.Phase != phaseRun {
		limit = workerGrace * 5 // preloads and clears of the full scale's gigabytes
	}
	cmd := c.lab.Hosts[i].Command(c.self, "worker")
	cmd.Stdin = bytes.NewReader(in)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// Its own process group, killed with the benchmark; Ctrl-C reaches the
	// parent only, which then kills the group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return reply{Err: err.Error()}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return reply{Err: ctx.Err().Error()}
	case <-time.After(limit):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return reply{Err: fmt.Sprintf("worker on %s did not finish within %s", c.lab.Hosts[i].Name, limit)}
	}
	var r reply
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return reply{Err: fmt.Sprintf("worker on %s: %v (%v); stderr: %s", c.lab.Hosts[i].Name, werr, err, strings.TrimSpace(errOut.String()))}
	}
	return r
}

// onHosts runs j on the given hosts at once and returns their replies in
// host order.
func (c *cluster) onHosts(ctx context.Context, hosts []int, j job) []reply {
	out := make([]reply, len(hosts))
	var wg sync.WaitGroup
	for k, i := range hosts {
		wg.Go(func() { out[k] = c.worker(ctx, i, j) })
	}
	wg.Wait()
	return out
}

func (c *cluster) allHosts() []int {
	hs := make([]int, len(c.lab.Hosts))
	for i := range hs {
		hs[i] = i
	}
	return hs
}

// phaseErr joins the errors of a phase's replies, naming the hosts.
func (c *cluster) phaseErr(rs []reply, hosts []int) error {
	var errs []error
	for k, r := range rs {
		if r.Err != "" {
			errs = append(errs, fmt.Errorf("%s: %s", c.lab.Hosts[hosts[k]].Name, r.Err))
		}
	}
	return errors.Join(errs...)
}

// controlSample is what the control plane has used at one moment.
type controlSample struct {
	at         time.Time
	masterCPU  time.Duration
	serversCPU time.Duration
	etcd       benchenv.EtcdCounters
	err        error
}

func (c *cluster) sample(ctx context.Context, pids []int) controlSample {
	s := controlSample{at: time.Now()}
	var errs []error
	var err error
	s.masterCPU, err = benchenv.CPUTime(c.master.PID())
	errs = append(errs, err)
	for _, pid := range pids {
		d, err := benchenv.CPUTime(pid)
		s.serversCPU += d
		errs = append(errs, err)
	}
	s.etcd, err = c.etcd.Counters(ctx)
	s.err = errors.Join(append(errs, err)...)
	return s
}

// clusterRun is one measured run on every host with what the control
// plane did meanwhile.
type clusterRun struct {
	hosts  []kvbench.Result
	merged kvbench.Result
	// window is the parent's measured window: from the hosts' planned
	// start (after the warm-up) to the last host's end.
	window    time.Duration
	masterCPU time.Duration
	etcd      benchenv.EtcdCounters
	sampleErr error
}

// runOnHosts makes one measured run of w against target name on every host.
func (c *cluster) runOnHosts(ctx context.Context, p plan, w *kvbench.Workload, name string, mode kvbench.GetMode, round int) clusterRun {
	j := job{Phase: phaseRun, Spec: w.Spec, Seed: p.run.Seed, Threads: p.run.Threads, Mode: mode, Round: round,
		Duration: p.run.Duration, Warmup: p.run.Warmup, Ops: p.run.Ops, StartAt: time.Now().Add(startSlack)}
	pids := c.serverPIDs(name)
	var s0 controlSample
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		select {
		case <-time.After(time.Until(j.StartAt.Add(p.run.Warmup))):
		case <-ctx.Done():
		}
		s0 = c.sample(ctx, pids)
	}()
	hosts := c.allHosts()
	replies := make([]reply, len(hosts))
	var wg sync.WaitGroup
	for _, i := range hosts {
		jj := j
		jj.Target = c.target(name, i)
		wg.Go(func() { replies[i] = c.worker(ctx, i, jj) })
	}
	wg.Wait()
	<-sampled
	s1 := c.sample(ctx, pids)

	run := clusterRun{sampleErr: errors.Join(s0.err, s1.err)}
	for i, r := range replies {
		res := kvbench.Result{Workload: w.Name, Target: name, Mode: mode, Round: round, Threads: p.run.Threads,
			Latency: kvbench.NewRecorder(), GetLatency: kvbench.NewRecorder(), PutLatency: kvbench.NewRecorder()}
		if !w.Reads() {
			res.Mode = kvbench.NoGet
		}
		if r.Result != nil {
			res = *r.Result
		}
		if r.Err != "" && res.Err == nil {
			res.Err = fmt.Errorf("%s: %s", c.lab.Hosts[i].Name, r.Err)
		}
		run.hosts = append(run.hosts, res)
	}
	merged, err := kvbench.MergeHosts(run.hosts)
	if err != nil {
		merged = run.hosts[0]
		merged.Err = err
	}
	run.window = s1.at.Sub(s0.at)
	if run.window > 0 {
		run.masterCPU = s1.masterCPU - s0.masterCPU
		run.etcd = s1.etcd.Sub(s0.etcd)
		merged.ServerCores = (s1.serversCPU - s0.serversCPU).Seconds() / run.window.Seconds()
	}
	run.merged = merged
	return run
}

// runCluster is run for --hosts above 1.
func runCluster(ctx context.Context, out, log io.Writer, o options, p plan) (err error) {
	var workloads []*kvbench.Workload
	for _, s := range p.specs {
		w, err := kvbench.Compile(s, p.run.Seed)
		if err != nil {
			return usageError{err}
		}
		workloads = append(workloads, w)
	}
	mem, memNote, err := clusterMemory(p)
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
	if o.floor && !p.xhostOnly {
		fmt.Fprintf(log, "measuring the memcpy floor...\n")
		if floors, err = kvbench.MeasureFloor(ctx, floorSizes(workloads), p.run.Threads*p.hosts, p.floorPer); err != nil {
			return err
		}
	}
	if p.xhostKeys > 0 {
		ip, err := benchenv.NewIperf3()
		if err != nil {
			return err
		}
		h.iperf3 = ip.Version
	}

	c, err := startCluster(ctx, log, o, p, dir, mem, &h)
	if err != nil {
		return err
	}
	defer func() {
		if serr := c.stop(); serr != nil {
			fmt.Fprintf(log, "stopping servers: %v\n", serr)
		}
	}()
	h.lab = fmt.Sprintf("%d namespace hosts %s..%s on a veth star, bridge %s; etcd, fluxon master and redis-server on the gateway, a fluxon owner in each host",
		p.hosts, c.lab.Hosts[0].IP, c.lab.Hosts[len(c.lab.Hosts)-1].IP, c.lab.Gateway)

	var runs []clusterRun
	runErr := c.runAll(ctx, log, p, workloads, func(r clusterRun) { runs = append(runs, r) })
	var xh *xhostResult
	if runErr == nil && p.xhostKeys > 0 {
		xh, runErr = c.crossHost(ctx, log, p)
	}

	h.print(out)
	if len(floors) > 0 {
		fmt.Fprintln(out)
		if err := kvbench.PrintFloor(out, floors); err != nil {
			return err
		}
	}
	var results []kvbench.Result
	for _, r := range runs {
		results = append(results, r.merged)
	}
	if !p.xhostOnly {
		if err := printResults(out, results); err != nil {
			return err
		}
		fmt.Fprintln(out)
		if err := printControl(out, runs, c.lab); err != nil {
			return err
		}
	}
	if xh != nil {
		fmt.Fprintln(out)
		if err := xh.print(out); err != nil {
			return err
		}
	}
	if errors.Is(runErr, context.Canceled) {
		fmt.Fprintln(out, "\ninterrupted: the tables hold the runs that completed")
	}
	if runErr == nil {
		if n := countFailed(results); n > 0 {
			runErr = fmt.Errorf("%d run(s) failed (see FAILED above)", n)
		}
	}
	return runErr
}

// runAll is the multi-host runAll: for each workload, round and target,
// every host preloads its share of the keys, all hosts run each get mode
// together, and every host clears the keys.
func (c *cluster) runAll(ctx context.Context, log io.Writer, p plan, ws []*kvbench.Workload, emit func(clusterRun)) error {
	hosts := c.allHosts()
	for _, w := range ws {
		for round := range p.rounds {
			order := slices.Clone(p.targets)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, name := range order {
				if err := c.runTarget(ctx, log, p, w, name, round, hosts, emit); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *cluster) runTarget(ctx context.Context, log io.Writer, p plan, w *kvbench.Workload, name string, round int, hosts []int, emit func(clusterRun)) error {
	perHost := func(phase string) error {
		replies := make([]reply, len(hosts))
		var wg sync.WaitGroup
		for _, i := range hosts {
			j := job{Phase: phase, Spec: w.Spec, Seed: p.run.Seed, Threads: p.run.Threads, Target: c.target(name, i)}
			wg.Go(func() { replies[i] = c.worker(ctx, i, j) })
		}
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.phaseErr(replies, hosts)
	}
	start := time.Now()
	if err := perHost(phasePreload); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failed := kvbench.Result{Workload: w.Name, Target: name, Mode: kvbench.Copy, Threads: p.run.Threads * p.hosts, Round: round,
			Latency: kvbench.NewRecorder(), GetLatency: kvbench.NewRecorder(), PutLatency: kvbench.NewRecorder(), Err: fmt.Errorf("preload: %w", err)}
		emit(clusterRun{merged: failed})
		fmt.Fprintf(log, "%s %s: preload FAILED: %v\n", w.Name, name, err)
		return nil
	}
	if w.Reads() {
		fmt.Fprintf(log, "%s %s: %d hosts preloaded %d keys in %s\n", w.Name, name, p.hosts, w.Keys, time.Since(start).Round(time.Millisecond))
	}
	modes := []kvbench.GetMode{kvbench.Copy}
	if w.Reads() {
		modes = nil
		b, _ := c.target(name, 0).backend()
		for _, m := range p.modes {
			if slices.Contains(b.Modes(), m) {
				modes = append(modes, m)
			}
		}
	}
	for _, m := range modes {
		r := c.runOnHosts(ctx, p, w, name, m, round)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		emit(r)
		status := "ok"
		if r.merged.Err != nil {
			status = "FAILED: " + r.merged.Err.Error()
		}
		fmt.Fprintf(log, "round %d %s %s %s: %d ops on %d hosts in %s, %.1f ops/s, %.1f MiB/s, %d misses, %s\n", round+1, w.Name, name, r.merged.Mode,
			r.merged.Ops, p.hosts, r.merged.Elapsed.Round(time.Millisecond), r.merged.OpsPerSec(), r.merged.MiBPerSec(), r.merged.Misses, status)
	}
	if err := perHost(phaseClear); err != nil {
		return fmt.Errorf("%s: clearing %s: %w", name, w.Name, err)
	}
	return nil
}

// controlKey identifies a row of the control table.
type controlKey struct {
	workload, target string
	mode             kvbench.GetMode
}

// printControl writes, per workload, target and mode (rounds added up),
// what the control plane did during the measured runs, and each host's
// share of the operations and misses.
func printControl(w io.Writer, runs []clusterRun, lab *netlab.Lab) error {
	type agg struct {
		window, masterCPU time.Duration
		etcd              benchenv.EtcdCounters
		hostOps, hostGets []int64
		hostMiss          []int64
		hostElapsed       []time.Duration
		sampleErr         error
	}
	var keys []controlKey
	rows := map[controlKey]*agg{}
	for _, r := range runs {
		if len(r.hosts) == 0 {
			continue
		}
		k := controlKey{r.merged.Workload, r.merged.Target, r.merged.Mode}
		a, ok := rows[k]
		if !ok {
			n := len(r.hosts)
			a = &agg{hostOps: make([]int64, n), hostGets: make([]int64, n), hostMiss: make([]int64, n), hostElapsed: make([]time.Duration, n)}
			rows[k] = a
			keys = append(keys, k)
		}
		a.window += r.window
		a.masterCPU += r.masterCPU
		a.etcd.Writes += r.etcd.Writes
		a.etcd.Proposals += r.etcd.Proposals
		a.sampleErr = errors.Join(a.sampleErr, r.sampleErr)
		for i, hr := range r.hosts {
			a.hostOps[i] += hr.Ops
			a.hostGets[i] += hr.Gets
			a.hostMiss[i] += hr.Misses
			a.hostElapsed[i] += hr.Elapsed
		}
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "workload\ttarget\tget\tmaster CPU\tetcd writes/s\tetcd proposals/s\t")
	for _, h := range lab.Hosts {
		fmt.Fprintf(tw, "%s ops/s\t%s miss\t", h.Name, h.Name)
	}
	fmt.Fprintln(tw)
	for _, k := range keys {
		a := rows[k]
		secs := a.window.Seconds()
		cpu, writes, props := "-", "-", "-"
		if secs > 0 && a.sampleErr == nil {
			cpu = fmt.Sprintf("%.1f%%", 100*a.masterCPU.Seconds()/secs)
			writes = fmt.Sprintf("%.1f", a.etcd.Writes/secs)
			props = fmt.Sprintf("%.1f", a.etcd.Proposals/secs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t", k.workload, k.target, k.mode, cpu, writes, props)
		for i := range a.hostOps {
			rate := 0.0
			if a.hostElapsed[i] > 0 {
				rate = float64(a.hostOps[i]) / a.hostElapsed[i].Seconds()
			}
			miss := "0"
			if a.hostMiss[i] > 0 {
				miss = fmt.Sprintf("%.1f%%", 100*float64(a.hostMiss[i])/float64(max(a.hostGets[i], 1)))
			}
			fmt.Fprintf(tw, "%.1f\t%s\t", rate, miss)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeTrimmed(w, b.String()); err != nil {
		return err
	}
	for _, k := range keys {
		if err := rows[k].sampleErr; err != nil {
			fmt.Fprintf(w, "control-plane figures of %s %s %s unavailable: %v\n", k.workload, k.target, k.mode, err)
		}
	}
	return nil
}
