package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fluxon-dev/fluxon/bench/kvbench"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/internal/netlab"
)

// Target names on the command line.
const (
	targetRedis      = "redis"
	targetFluxonShm  = "fluxon-shm"
	targetFluxonGRPC = "fluxon-grpc"
	targetFluxonRESP = "fluxon-resp"
	// peer is the target every other is compared with.
	peer = targetRedis
)

var allTargets = []string{targetRedis, targetFluxonShm, targetFluxonGRPC, targetFluxonRESP}

// ErrNoLab is the answer to --hosts N>1 where network namespaces cannot be
// made (not root, no iproute2).
var ErrNoLab = errors.New("--hosts above 1 runs every host in a network namespace")

// maxHosts bounds --hosts: every host runs an owner and its clients.
const maxHosts = 8

// onlyXhost is --only's value that runs the cross-host test alone.
const onlyXhost = "xhost"

// xhostSize is the value size of the cross-host get test (issue 4: 16 MiB).
const xhostSize = 16 * mib

// scale is a preset of sizes and durations.
type scale struct {
	readKeys, putKeys   int
	readSizes, putSizes []int
	duration, warmup    time.Duration
	threads, rounds     int
	floorPer            time.Duration
	// hostThreads is the client threads per host with --hosts above 1,
	// so that all hosts together run as many as one host does.
	hostThreads int
	// xhostKeys is how many 16 MiB values the cross-host get test reads.
	xhostKeys int
}

const (
	kib = 1 << 10
	mib = 1 << 20
	kb  = 1000
	mb  = 1000 * 1000
)

// scales: "full" is issue 4's sizes; "small" divides key counts and value
// sizes by 8 (reads) and 10 (puts) so a 2-core machine with 24 GiB runs all
// three workloads against two targets in about two minutes. Small runs two
// short rounds rather than one long one: on a shared machine, alternating
// the targets twice evens out the neighbours' noise better.
var scales = map[string]scale{
	"small": {
		readKeys: 64, readSizes: []int{1280 * kib, 2 * mib, 3 * mib, 3840 * kib},
		putKeys: 1000, putSizes: []int{1 * kb, 10 * kb, 100 * kb, 1 * mb, 5 * mb},
		duration: 4 * time.Second, warmup: time.Second, threads: 3, rounds: 2, floorPer: 200 * time.Millisecond,
		hostThreads: 1, xhostKeys: 16,
	},
	"full": {
		readKeys: 512, readSizes: []int{10 * mib, 16 * mib, 24 * mib, 30 * mib},
		putKeys: 10_000, putSizes: []int{10 * kb, 100 * kb, 1 * mb, 10 * mb, 50 * mb},
		duration: 60 * time.Second, warmup: 5 * time.Second, threads: 6, rounds: 1, floorPer: 500 * time.Millisecond,
		hostThreads: 2, xhostKeys: 64,
	},
}

// options are the command-line flags.
type options struct {
	scale               string
	workloads, targets  []string
	modes               []string
	threads, rounds     int
	duration, warmup    time.Duration
	ops                 int64
	readKeys, putKeys   int
	readSizes, putSizes string
	groups              int
	seed                uint64
	mem                 string
	fluxonBin, redisBin string
	pollMode            string
	tcpReactor          string
	redisIOThreads      int
	hosts               int
	xhostKeys           int
	xhost               bool
	only                string
	floor               bool
	keep                bool
	workDir             string
	// warmupSet says --warmup was given (0 is a valid warm-up); for the
	// other numbers 0 means "the scale's default". targetsSet says
	// --targets was given (several hosts have other default targets).
	warmupSet, targetsSet bool
}

// clusterTargets are the default targets with --hosts above 1: the peer,
// and Fluxon through each host's own owner over RESP and shared memory.
var clusterTargets = []string{targetRedis, targetFluxonRESP, targetFluxonShm}

// plan is what a run does, resolved from the options.
type plan struct {
	scaleName string
	specs     []kvbench.Spec
	targets   []string
	modes     []kvbench.GetMode
	run       kvbench.RunConfig
	rounds    int
	mem       uint64 // 0: size from the workloads
	floorPer  time.Duration
	// hosts is the number of namespace hosts (1: this host, no lab); with
	// more, run.Threads is per host.
	hosts int
	// xhostKeys is how many 16 MiB values the cross-host test puts through
	// host 1 and reads from host 2 (0: no cross-host test).
	xhostKeys int
	// xhostOnly skips the workloads and the memcpy floor: only the
	// cross-host test runs (--only xhost).
	xhostOnly bool
}

// parseSizes reads a comma-separated list of sizes ("1MiB,10MB").
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := config.ParseSize(f)
		if err != nil {
			return nil, fmt.Errorf("size %q: %w", f, err)
		}
		if n == 0 || n > 1<<40 {
			return nil, fmt.Errorf("size %q: use 1 byte to 1TiB", f)
		}
		out = append(out, int(n))
	}
	return out, nil
}

// makePlan validates the options and resolves them against the scale.
func makePlan(o options) (plan, error) {
	if o.hosts < 1 {
		return plan{}, fmt.Errorf("--hosts %d: need at least 1", o.hosts)
	}
	if o.hosts > maxHosts {
		return plan{}, fmt.Errorf("--hosts %d: at most %d", o.hosts, maxHosts)
	}
	if o.hosts > 1 {
		if err := netlab.Available(); err != nil {
			return plan{}, fmt.Errorf("%w, which is unavailable here: %v; run as root, or --hosts 1 (this host only)", ErrNoLab, err)
		}
	}
	sc, ok := scales[o.scale]
	if !ok {
		return plan{}, fmt.Errorf("--scale %q: use small or full", o.scale)
	}
	p := plan{scaleName: o.scale, floorPer: sc.floorPer, hosts: o.hosts}
	if o.hosts > 1 {
		sc.threads = sc.hostThreads
		if !o.targetsSet {
			o.targets = clusterTargets
		}
		if o.xhost {
			p.xhostKeys = sc.xhostKeys
			if o.xhostKeys != 0 {
				p.xhostKeys = o.xhostKeys
			}
			if p.xhostKeys < 1 {
				return p, fmt.Errorf("--xhost-values %d: need at least 1", p.xhostKeys)
			}
		}
	}
	if o.readKeys != 0 {
		sc.readKeys = o.readKeys
	}
	if o.putKeys != 0 {
		sc.putKeys = o.putKeys
	}
	var err error
	if o.readSizes != "" {
		if sc.readSizes, err = parseSizes(o.readSizes); err != nil {
			return p, fmt.Errorf("--read-sizes: %w", err)
		}
	}
	if o.putSizes != "" {
		if sc.putSizes, err = parseSizes(o.putSizes); err != nil {
			return p, fmt.Errorf("--put-sizes: %w", err)
		}
	}
	for _, name := range o.workloads {
		var s kvbench.Spec
		switch strings.ToUpper(name) {
		case kvbench.ReadZipfName:
			s = kvbench.ReadZipf()
		case kvbench.ReadAffinityName:
			s = kvbench.ReadAffinity()
			if o.groups != 0 {
				s.Groups = o.groups
			}
			if o.hosts > 1 {
				// Group = host: each host's clients favour their own slice.
				if o.groups != 0 && o.groups != o.hosts {
					return p, fmt.Errorf("--affinity-groups %d: with --hosts %d the groups are the hosts; leave it out", o.groups, o.hosts)
				}
				s.Groups = o.hosts
			}
		case kvbench.PutOnlyName:
			s = kvbench.PutOnly()
		default:
			return p, fmt.Errorf("--workloads: unknown workload %q: use %s, %s or %s", name, kvbench.ReadZipfName, kvbench.ReadAffinityName, kvbench.PutOnlyName)
		}
		if s.Reads() {
			s.Keys, s.Sizes = sc.readKeys, sc.readSizes
		} else {
			s.Keys, s.Sizes = sc.putKeys, sc.putSizes
		}
		if err := s.Validate(); err != nil {
			return p, err
		}
		p.specs = append(p.specs, s)
	}
	switch o.only {
	case "":
	case onlyXhost:
		if o.hosts < 2 || !o.xhost {
			return p, fmt.Errorf("--only %s: the cross-host test needs --hosts 2 or more and --xhost", onlyXhost)
		}
		p.xhostOnly, p.specs = true, nil
	default:
		return p, fmt.Errorf("--only %q: the one part that runs alone is %s", o.only, onlyXhost)
	}
	if len(p.specs) == 0 && !p.xhostOnly {
		return p, errors.New("--workloads: name at least one")
	}
	for _, t := range o.targets {
		if !slices.Contains(allTargets, t) {
			return p, fmt.Errorf("--targets: unknown target %q: use %s", t, strings.Join(allTargets, ", "))
		}
		if !slices.Contains(p.targets, t) {
			p.targets = append(p.targets, t)
		}
	}
	if len(p.targets) == 0 {
		return p, errors.New("--targets: name at least one")
	}
	for _, m := range o.modes {
		gm, err := kvbench.ParseGetMode(m)
		if err != nil {
			return p, fmt.Errorf("--modes: %w", err)
		}
		p.modes = append(p.modes, gm)
	}
	if len(p.modes) == 0 {
		return p, errors.New("--modes: name at least one of copy, view")
	}
	p.run = kvbench.RunConfig{Threads: sc.threads, Duration: sc.duration, Warmup: sc.warmup, Ops: o.ops, Seed: o.seed}
	if o.threads != 0 {
		p.run.Threads = o.threads
	}
	p.rounds = sc.rounds
	if o.rounds != 0 {
		p.rounds = o.rounds
	}
	if p.rounds < 1 {
		return p, fmt.Errorf("--rounds %d: need at least 1", p.rounds)
	}
	if o.duration != 0 {
		p.run.Duration = o.duration
	}
	if o.ops > 0 && o.duration == 0 {
		p.run.Duration = 0 // --ops alone: the op count decides
	}
	if o.warmupSet {
		p.run.Warmup = o.warmup
	}
	if p.run.Threads < 1 {
		return p, fmt.Errorf("--threads %d: need at least 1", p.run.Threads)
	}
	if p.run.Duration <= 0 && p.run.Ops <= 0 {
		return p, errors.New("--duration or --ops must be above 0")
	}
	for _, s := range p.specs {
		// With several hosts every thread of a host is in the host's group.
		if s.Affinity > 0 && p.hosts == 1 && p.run.Threads < s.Groups {
			return p, fmt.Errorf("%s slices the keys among %d client groups but --threads is %d; give every group a thread (--threads %d) or lower --affinity-groups", s.Name, s.Groups, p.run.Threads, s.Groups)
		}
	}
	if o.mem != "" {
		n, err := config.ParseSize(o.mem)
		if err != nil {
			return p, fmt.Errorf("--mem: %w", err)
		}
		p.mem = uint64(n)
	}
	return p, nil
}
