// Command fluxon-bench runs the KV benchmark of issue 4 side by side: it
// starts redis-server and `fluxon up` on this machine, drives both with the
// same operations (same generator, same seed), prints one table with every
// target's throughput as a ratio against Redis measured in the same run,
// next to the memcpy floor of the same value sizes, and stops everything,
// also on Ctrl-C.
//
//	fluxon-bench --scale small
//	fluxon-bench --scale full --workloads READ_ZIPF --targets redis,fluxon-shm,fluxon-resp
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/bench/kvbench"
	"github.com/fluxon-dev/fluxon/bench/transportbench"
)

// Exit statuses.
const (
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130
)

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func newRoot() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "fluxon-bench",
		Short: "Side-by-side KV benchmark: fluxon vs redis-server on this host",
		Long: `fluxon-bench starts redis-server (no persistence, protected mode off, maxmemory
sized to the workload) and 'fluxon up' (its own work directory, embedded etcd on
free ports, a pool under /dev/shm sized to the workload) on this machine, runs
the workloads of issue 4 against both with the same operations, prints ops/s,
MiB/s, p50/p99/p999 and the ratio against redis, and stops both.

Workloads (sizes at --scale full; --scale small divides keys and sizes by 8
for reads and 10 for puts):
  READ_ZIPF      90% get / 10% put, Zipf 0.99 over 512 keys, values 10/16/24/30 MiB
  READ_AFFINITY  as READ_ZIPF; 85% of each client group's ops on its own key slice
                 (client thread t is in group t % --affinity-groups)
  PUT_ONLY       100% put, uniform over 10,000 keys, values 10KB/100KB/1MB/10MB/50MB

Targets: redis (the peer), fluxon-shm (Go client, shared memory), fluxon-grpc
(Go client, gRPC), fluxon-resp (fluxon's RESP endpoint, same client as redis).
Get modes: copy (into the client's buffer; the fair comparison) and view (hold
the zero-copy value, read one byte per page; shared memory only).

--hosts 3 (make bench-cluster, root) runs 3 network-namespace hosts on a veth
star: etcd, a fluxon master and redis-server on the gateway, a fluxon owner in
each host, and each host's clients (this binary re-executed in the namespace)
against its own owner (fluxon-resp, fluxon-shm) and the one redis. READ_AFFINITY's
groups are the hosts. It adds the master's CPU, etcd's writes/s, and cross-host
gets of 16 MiB values next to iperf3 over the same link.`,
		Example: `  fluxon-bench --scale small
  fluxon-bench --hosts 3 --scale small
  fluxon-bench --scale small --workloads PUT_ONLY --duration 20s
  fluxon-bench --scale full --targets redis,fluxon-shm,fluxon-resp`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.warmupSet = cmd.Flags().Changed("warmup")
			o.targetsSet = cmd.Flags().Changed("targets")
			p, err := makePlan(o)
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			if p.hosts > 1 {
				return runCluster(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, p)
			}
			return run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, p)
		},
	}
	cmd.AddCommand(newWorkerCmd(), transportbench.NewCommand(transportbench.CommandOptions{
		Reexec: []string{"transport"}, Usage: func(err error) error { return usageError{err} },
	}), newMQCmd())
	f := cmd.Flags()
	f.StringVar(&o.scale, "scale", "small", "preset of keys, value sizes, duration and threads: small or full")
	f.StringSliceVar(&o.workloads, "workloads", []string{kvbench.ReadZipfName, kvbench.ReadAffinityName, kvbench.PutOnlyName}, "workloads to run")
	f.StringSliceVar(&o.targets, "targets", []string{targetRedis, targetFluxonShm}, "systems to measure: redis, fluxon-shm, fluxon-grpc, fluxon-resp")
	f.StringSliceVar(&o.modes, "modes", []string{"copy", "view"}, "get modes to measure where the target has them: copy, view")
	f.IntVar(&o.threads, "threads", 0, "client threads per run, per host with --hosts (0: the scale's, small 3, full 6; per host small 1, full 2)")
	f.DurationVar(&o.duration, "duration", 0, "measured time per run (0: the scale's, small 4s, full 60s)")
	f.IntVar(&o.rounds, "rounds", 0, "rounds of every run, the targets' order alternating; the table adds them up (0: the scale's, small 2, full 1)")
	f.DurationVar(&o.warmup, "warmup", 0, "unrecorded warm-up per run (default: the scale's, small 1s, full 5s)")
	f.Int64Var(&o.ops, "ops", 0, "operations per run instead of a duration: every target then runs exactly the same operations")
	f.IntVar(&o.readKeys, "read-keys", 0, "keys of the read workloads (0: the scale's)")
	f.IntVar(&o.putKeys, "put-keys", 0, "keys of PUT_ONLY (0: the scale's)")
	f.StringVar(&o.readSizes, "read-sizes", "", "value sizes of the read workloads, e.g. 1MiB,2MiB (default: the scale's)")
	f.StringVar(&o.putSizes, "put-sizes", "", "value sizes of PUT_ONLY, e.g. 10KB,1MB (default: the scale's)")
	f.IntVar(&o.groups, "affinity-groups", 0, "client groups (hosts) READ_AFFINITY slices the keys among (0: 3, the issue's hosts)")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the operation generator (the same for every target)")
	f.StringVar(&o.mem, "mem", "", "memory for each system: fluxon's pool and redis's maxmemory (default: the workloads' need, at most 35% of available memory each)")
	f.StringVar(&o.fluxonBin, "fluxon", "bin/fluxon", "the fluxon binary (make build)")
	f.StringVar(&o.redisBin, "redis-server", "redis-server", "the redis-server binary")
	f.StringVar(&o.tcpReactor, "tcp-reactor", "", "with --hosts: the owners' network.tcp_reactor_mode, busy_poll or event_driven (default: fluxon's)")
	f.StringVar(&o.pollMode, "poll-mode", "", "fluxon's network.poll_mode: busy_poll or event_driven (default: fluxon's, busy_poll)")
	f.IntVar(&o.redisIOThreads, "redis-io-threads", 1, "redis-server io-threads (1: Debian's default, single-threaded I/O)")
	f.IntVar(&o.hosts, "hosts", 1, "hosts; 1 runs on this host, more runs each in a network namespace (root) with its own owner and clients (make bench-cluster)")
	f.IntVar(&o.xhostKeys, "xhost-values", 0, "with --hosts: 16 MiB values the cross-host get test reads (0: the scale's, small 16, full 64)")
	f.BoolVar(&o.xhost, "xhost", true, "with --hosts: run the cross-host 16 MiB get test next to iperf3")
	f.StringVar(&o.only, "only", "", "with --hosts: run one part alone; xhost runs the cross-host test without the workloads and the memcpy floor")
	f.BoolVar(&o.floor, "memcpy", true, "measure the memcpy floor of the value sizes first")
	f.BoolVar(&o.keep, "keep", false, "keep the work directory (server logs) after the run")
	f.StringVar(&o.workDir, "work-dir", "", "where the temporary work directory goes (default $TMPDIR)")
	return cmd
}

// signalContext ends on Ctrl-C or SIGTERM.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

func main() {
	err := newRoot().Execute()
	if err == nil {
		return
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "fluxon-bench:", err)
		os.Exit(exitUsage)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "fluxon-bench: interrupted; servers stopped")
		os.Exit(exitInterrupted)
	}
	fmt.Fprintln(os.Stderr, "fluxon-bench:", err)
	os.Exit(exitFailure)
}
