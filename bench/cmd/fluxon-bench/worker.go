package main

// The worker: with --hosts above 1, the benchmark re-executes itself inside
// each namespace host (`ip netns exec <ns> fluxon-bench worker`) to run one
// phase of a workload against one target from that host, and reads the
// outcome as JSON on the worker's stdout.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/bench/kvbench"
)

// Worker phases.
const (
	// phasePreload writes the host's share of the keys (kvbench.HostKeys),
	// or every key when the job says so.
	phasePreload = "preload"
	// phaseRun is the host's share of a measured run.
	phaseRun = "run"
	// phaseClear removes every key of the workload through the host's
	// target (each host's owner may hold keys of its own).
	phaseClear = "clear"
	// phaseGetAll reads every key once (the cross-host test).
	phaseGetAll = "getall"
)

// targetSpec says how a worker reaches a target from its host.
type targetSpec struct {
	Name string
	// Addr is the RESP or gRPC endpoint (redis, fluxon-resp, fluxon-grpc).
	Addr string `json:",omitempty"`
	// ClusterName and SharedFilePath find the host's owner (fluxon-shm).
	ClusterName    string `json:",omitempty"`
	SharedFilePath string `json:",omitempty"`
}

// backend opens the target as the single-host benchmark does.
func (t targetSpec) backend() (kvbench.Backend, error) {
	switch t.Name {
	case targetRedis:
		return &kvbench.Redis{Addr: t.Addr}, nil
	case targetFluxonRESP:
		return &kvbench.Redis{Label: targetFluxonRESP, Addr: t.Addr}, nil
	case targetFluxonShm:
		return &kvbench.Fluxon{Config: fluxon.Config{ClusterName: t.ClusterName, SharedFilePath: t.SharedFilePath, Name: "fluxon-bench"}}, nil
	case targetFluxonGRPC:
		return &kvbench.Fluxon{Config: fluxon.Config{Address: t.Addr, RemoteOnly: true, Name: "fluxon-bench"}}, nil
	}
	return nil, fmt.Errorf("unknown target %q", t.Name)
}

// job is what the parent asks a worker to do, as JSON on its stdin.
type job struct {
	Phase  string
	Spec   kvbench.Spec
	Seed   uint64
	Target targetSpec
	// Host is the worker's host, from 0, of Hosts.
	Host, Hosts int
	// AllKeys makes a preload write every key, not the host's share.
	AllKeys bool `json:",omitempty"`
	Threads int
	Mode    kvbench.GetMode
	Round   int
	// Duration, Ops and Warmup are the run's length (kvbench.RunConfig).
	Duration, Warmup time.Duration
	Ops              int64
	// StartAt is when every host's run starts: the parent starts the
	// workers of all hosts together, and each waits for this moment so the
	// measured windows line up.
	StartAt time.Time
}

// reply is what a worker prints on stdout.
type reply struct {
	Result *kvbench.Result `json:",omitempty"`
	Err    string          `json:",omitempty"`
}

// errJob reports a job a worker cannot run.
var errJob = errors.New("worker: bad job")

func newWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "worker",
		Short:  "Run one phase of a workload from this host (used by --hosts; reads a JSON job on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var j job
			if err := json.NewDecoder(cmd.InOrStdin()).Decode(&j); err != nil {
				return fmt.Errorf("%w: %v", errJob, err)
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			return writeReply(cmd.OutOrStdout(), runJob(ctx, j))
		},
	}
}

func writeReply(w io.Writer, r reply) error {
	return json.NewEncoder(w).Encode(r)
}

// runJob runs j; every failure is in the reply, not the exit status, so
// the parent always has something to show.
func runJob(ctx context.Context, j job) reply {
	fail := func(err error) reply { return reply{Err: err.Error()} }
	w, err := kvbench.Compile(j.Spec, j.Seed)
	if err != nil {
		return fail(err)
	}
	b, err := j.Target.backend()
	if err != nil {
		return fail(fmt.Errorf("%w: %v", errJob, err))
	}
	switch j.Phase {
	case phasePreload:
		lo, hi := kvbench.HostKeys(w.Keys, j.Host, j.Hosts)
		if j.AllKeys {
			lo, hi = 0, w.Keys
		}
		if err := kvbench.PreloadRange(ctx, b, w, j.Threads, lo, hi); err != nil {
			return fail(err)
		}
		return reply{}
	case phaseClear:
		if err := kvbench.Clear(ctx, b, w); err != nil {
			return fail(err)
		}
		return reply{}
	case phaseGetAll:
		r := kvbench.GetAll(ctx, b, w, j.Mode)
		r.Round = j.Round
		return reply{Result: &r}
	case phaseRun:
		if d := time.Until(j.StartAt); d > 0 {
			select {
			case <-ctx.Done():
				return fail(ctx.Err())
			case <-time.After(d):
			}
		}
		r := kvbench.Run(ctx, b, w, kvbench.RunConfig{Threads: j.Threads, Duration: j.Duration, Ops: j.Ops, Warmup: j.Warmup,
			Seed: j.Seed, Mode: j.Mode, Host: &kvbench.HostSlot{Index: j.Host}})
		r.Round = j.Round
		return reply{Result: &r}
	}
	return fail(fmt.Errorf("%w: phase %q", errJob, j.Phase))
}
