package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/bench/kvbench"
	"github.com/fluxon-dev/fluxon/internal/netlab"
)

// defaults are the flags' defaults, as newRoot sets them.
func defaults(t *testing.T) options {
	t.Helper()
	var o options
	cmd := newRoot()
	require.NoError(t, cmd.ParseFlags(nil))
	f := cmd.Flags()
	o.scale, _ = f.GetString("scale")
	o.workloads, _ = f.GetStringSlice("workloads")
	o.targets, _ = f.GetStringSlice("targets")
	o.modes, _ = f.GetStringSlice("modes")
	o.seed, _ = f.GetUint64("seed")
	o.hosts, _ = f.GetInt("hosts")
	o.xhost, _ = f.GetBool("xhost")
	return o
}

func TestSmallPlan(t *testing.T) {
	p, err := makePlan(defaults(t))
	require.NoError(t, err)
	require.Equal(t, "small", p.scaleName)
	require.Equal(t, []string{"redis", "fluxon-shm"}, p.targets)
	require.Equal(t, []kvbench.GetMode{kvbench.Copy, kvbench.View}, p.modes)
	require.Len(t, p.specs, 3)
	names := []string{p.specs[0].Name, p.specs[1].Name, p.specs[2].Name}
	require.Equal(t, []string{"READ_ZIPF", "READ_AFFINITY", "PUT_ONLY"}, names)
	require.Equal(t, 64, p.specs[0].Keys)
	require.Equal(t, []int{1280 << 10, 2 << 20, 3 << 20, 3840 << 10}, p.specs[0].Sizes, "the issue's sizes divided by 8")
	require.Equal(t, 3, p.specs[1].Groups)
	require.Equal(t, 1000, p.specs[2].Keys)
	require.Equal(t, []int{1000, 10_000, 100_000, 1_000_000, 5_000_000}, p.specs[2].Sizes, "the issue's sizes divided by 10")
	require.Equal(t, 3, p.run.Threads)
	require.Equal(t, 4*time.Second, p.run.Duration)
	require.Equal(t, time.Second, p.run.Warmup)
	require.Equal(t, 2, p.rounds)
	require.EqualValues(t, 1, p.run.Seed)

	// Every run of the small scale together stays within ~3 minutes: 3
	// workloads, redis + fluxon copy + fluxon view on the reads, each round.
	runs := (3 + 3 + 2) * p.rounds
	require.LessOrEqual(t, time.Duration(runs)*(p.run.Duration+p.run.Warmup), 90*time.Second)
}

func TestFullPlanIsTheIssues(t *testing.T) {
	o := defaults(t)
	o.scale = "full"
	p, err := makePlan(o)
	require.NoError(t, err)
	require.Equal(t, kvbench.ReadZipf().Sizes, p.specs[0].Sizes)
	require.Equal(t, kvbench.ReadZipf().Keys, p.specs[0].Keys)
	require.Equal(t, kvbench.PutOnly().Sizes, p.specs[2].Sizes)
	require.Equal(t, kvbench.PutOnly().Keys, p.specs[2].Keys)
}

func TestOverrides(t *testing.T) {
	o := defaults(t)
	o.workloads = []string{"read_zipf", "PUT_ONLY"}
	o.targets = []string{"fluxon-resp", "redis", "fluxon-resp"}
	o.modes = []string{"view"}
	o.threads, o.duration, o.readKeys, o.putKeys = 5, 3*time.Second, 20, 30
	o.readSizes, o.putSizes = "1MiB,2MiB", "10KB"
	o.warmup, o.warmupSet = 0, true
	p, err := makePlan(o)
	require.NoError(t, err)
	require.Equal(t, []string{"fluxon-resp", "redis"}, p.targets, "in order, once each")
	require.Equal(t, []kvbench.GetMode{kvbench.View}, p.modes)
	require.Equal(t, 20, p.specs[0].Keys)
	require.Equal(t, []int{1 << 20, 2 << 20}, p.specs[0].Sizes)
	require.Equal(t, 30, p.specs[1].Keys)
	require.Equal(t, []int{10_000}, p.specs[1].Sizes)
	require.Equal(t, 5, p.run.Threads)
	require.Equal(t, 3*time.Second, p.run.Duration)
	require.Zero(t, p.run.Warmup, "--warmup 0 is kept")

	o = defaults(t)
	o.ops = 500
	p, err = makePlan(o)
	require.NoError(t, err)
	require.EqualValues(t, 500, p.run.Ops)
	require.Zero(t, p.run.Duration, "--ops alone decides the length")
}

func TestThreeHostPlan(t *testing.T) {
	o := defaults(t)
	o.hosts = 3
	p, err := makePlan(o)
	if labErr := netlab.Available(); labErr != nil {
		require.ErrorIs(t, err, ErrNoLab, "without namespaces --hosts 3 is refused, not faked")
		t.Skip("the rest needs root for network namespaces:", labErr)
	}
	require.NoError(t, err)
	require.Equal(t, 3, p.hosts)
	require.Equal(t, []string{"redis", "fluxon-resp", "fluxon-shm"}, p.targets, "every host's clients use its own owner over RESP and shared memory, and the one redis")
	require.Equal(t, 1, p.run.Threads, "small: one client thread per host, three in all as on one host")
	require.Equal(t, 3, p.specs[1].Groups, "READ_AFFINITY's groups are the hosts")
	require.Equal(t, 16, p.xhostKeys)

	o.scale = "full"
	p, err = makePlan(o)
	require.NoError(t, err)
	require.Equal(t, 2, p.run.Threads)
	require.Equal(t, 64, p.xhostKeys)
	require.Equal(t, kvbench.ReadZipf().Sizes, p.specs[0].Sizes, "full is the issue's sizes")

	o = defaults(t)
	o.hosts, o.targets, o.targetsSet, o.xhost = 3, []string{"redis"}, true, false
	p, err = makePlan(o)
	require.NoError(t, err)
	require.Equal(t, []string{"redis"}, p.targets, "--targets is kept")
	require.Zero(t, p.xhostKeys, "--xhost=false skips the cross-host test")

	for name, f := range map[string]func(*options){
		"groups != hosts": func(o *options) { o.groups = 2 },
		"xhost values":    func(o *options) { o.xhostKeys = -1 },
		"too many hosts":  func(o *options) { o.hosts = 100 },
		"only what":       func(o *options) { o.only = "workloads" },
		"only no xhost":   func(o *options) { o.only, o.xhost = onlyXhost, false },
	} {
		o := defaults(t)
		o.hosts = 3
		f(&o)
		_, err := makePlan(o)
		require.Error(t, err, name)
	}
	o = defaults(t)
	o.hosts, o.groups = 3, 3
	_, err = makePlan(o)
	require.NoError(t, err, "--affinity-groups equal to --hosts is fine")

	o = defaults(t)
	o.hosts, o.only = 3, onlyXhost
	p, err = makePlan(o)
	require.NoError(t, err)
	require.True(t, p.xhostOnly)
	require.Empty(t, p.specs, "--only xhost runs no workload")
	require.Equal(t, 16, p.xhostKeys)
}

func TestClusterMemory(t *testing.T) {
	p, err := makePlan(defaults(t))
	require.NoError(t, err)
	p.hosts, p.xhostKeys = 3, 16
	mem, note, err := clusterMemory(p)
	require.NoError(t, err)
	require.Greater(t, mem, uint64(16*xhostSize), "room for the cross-host values")
	require.NotEmpty(t, note)
	p.mem = 10 << 20
	mem, note, err = clusterMemory(p)
	require.NoError(t, err)
	require.Equal(t, uint64(10<<20), mem)
	require.Contains(t, note, "evict")
}

func TestBadOptions(t *testing.T) {
	t.Run("only xhost on one host", func(t *testing.T) {
		o := defaults(t)
		o.only = onlyXhost
		_, err := makePlan(o)
		require.Error(t, err, "the cross-host test needs several hosts")
	})
	cases := map[string]func(*options){
		"hosts 0":          func(o *options) { o.hosts = 0 },
		"scale":            func(o *options) { o.scale = "huge" },
		"workload":         func(o *options) { o.workloads = []string{"READ_ALL"} },
		"no workload":      func(o *options) { o.workloads = nil },
		"target":           func(o *options) { o.targets = []string{"memcached"} },
		"no target":        func(o *options) { o.targets = nil },
		"mode":             func(o *options) { o.modes = []string{"mmap"} },
		"no mode":          func(o *options) { o.modes = nil },
		"threads < groups": func(o *options) { o.threads = 2 },
		"size":             func(o *options) { o.readSizes = "1MiB,lots" },
		"zero size":        func(o *options) { o.putSizes = "0" },
		"mem":              func(o *options) { o.mem = "much" },
		"one group":        func(o *options) { o.groups = 1 },
		"rounds":           func(o *options) { o.rounds = -1 },
	}
	for name, f := range cases {
		o := defaults(t)
		f(&o)
		_, err := makePlan(o)
		require.Error(t, err, name)
	}
}

func TestMemoryFor(t *testing.T) {
	p, err := makePlan(defaults(t))
	require.NoError(t, err)
	mem, note, err := memoryFor(p)
	require.NoError(t, err)
	// PUT_ONLY's 1000 keys of 1.2 MB on average is the largest need.
	require.Greater(t, mem, uint64(1_222_200_000))
	require.Less(t, mem, uint64(2<<30))
	require.NotEmpty(t, note)

	p.mem = 100 << 20
	mem, note, err = memoryFor(p)
	require.NoError(t, err)
	require.Equal(t, uint64(100<<20), mem)
	require.Contains(t, note, "evict", "a cap below the need says what it costs")
}

func TestFloorSizes(t *testing.T) {
	p, err := makePlan(defaults(t))
	require.NoError(t, err)
	var ws []*kvbench.Workload
	for _, s := range p.specs {
		w, err := kvbench.Compile(s, 1)
		require.NoError(t, err)
		ws = append(ws, w)
	}
	sizes := floorSizes(ws)
	require.Len(t, sizes, 9, "4 read sizes, shared by both read workloads, and 5 put sizes")
	for i := 1; i < len(sizes); i++ {
		require.Less(t, sizes[i-1], sizes[i])
	}
}

func TestHelpNamesTheWorkloads(t *testing.T) {
	var b strings.Builder
	cmd := newRoot()
	cmd.SetOut(&b)
	cmd.SetArgs([]string{"--help"})
	require.NoError(t, cmd.Execute())
	for _, w := range []string{"READ_ZIPF", "READ_AFFINITY", "PUT_ONLY", "--scale", "--hosts"} {
		require.Contains(t, b.String(), w)
	}
}
