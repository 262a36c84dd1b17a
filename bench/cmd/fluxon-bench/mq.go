package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/bench/benchenv"
	"github.com/fluxon-dev/fluxon/bench/kvbench"
	"github.com/fluxon-dev/fluxon/bench/mqbench"
)

// mqSize is the per-size part of an MQ scale.
type mqSize struct {
	size, messages, window, batch, backlog int
}

// mqScales: small runs the 9 cells on both systems in a few minutes on 2
// cores; full sends ten times the messages.
var mqScales = map[string][]mqSize{
	"small": {
		{size: 256, messages: 60_000, window: 256, batch: 256, backlog: 16384},
		{size: 4 * kib, messages: 30_000, window: 256, batch: 256, backlog: 8192},
		{size: mib, messages: 1200, window: 8, batch: 8, backlog: 256},
	},
	"full": {
		{size: 256, messages: 600_000, window: 256, batch: 256, backlog: 16384},
		{size: 4 * kib, messages: 300_000, window: 256, batch: 256, backlog: 8192},
		{size: mib, messages: 12000, window: 8, batch: 8, backlog: 256},
	},
}

// minBusyPollCPUs: under this many CPUs the owner's busy polling (shared
// memory rings, tcp readers) takes the cores the work needs; fluxon warns
// and advises event_driven.
const minBusyPollCPUs = 4

// mqRounds: on a shared 2-core machine one short round swings by tens of
// percent; small runs two, the systems' order alternating.
var mqRounds = map[string]int{"small": 2, "full": 1}

type mqOptions struct {
	scale     string
	shapes    []string
	sizes     []string
	systems   []string
	messages  int
	rounds    int
	fluxonBin string
	natsBin   string
	pollMode  string
	keep      bool
	workDir   string
	profile   string
}

func newMQCmd() *cobra.Command {
	var o mqOptions
	cmd := &cobra.Command{
		Use:   "mq",
		Short: "Message queue benchmark: fluxon MQ vs NATS JetStream on this host (make bench-mq)",
		Long: `fluxon-bench mq starts 'fluxon up' and nats-server -js on this machine and runs,
cell by cell, the same producers and consumers (goroutines of this process, each
with its own fluxon client or NATS connection) against a fluxon MPMC channel and
a JetStream stream (memory storage, work-queue retention, one durable pull
consumer with explicit acks shared by the consumers). Producers publish
asynchronously with a bounded window; consumers fetch batches and acknowledge
each message. Every message carries its producer, sequence number and send time:
the table has msgs/s, MB/s, p50/p99 end-to-end latency, duplicates and losses,
and fluxon's msgs/s as a ratio of JetStream's in the same cell.`,
		Example: `  fluxon-bench mq --scale small
  fluxon-bench mq --shapes 16x2 --sizes 1MiB --rounds 3`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cells, err := o.cells()
			if err != nil {
				return usageError{err}
			}
			if o.rounds == 0 {
				o.rounds = mqRounds[o.scale]
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			return runMQ(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, cells)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.scale, "scale", "small", "preset of message counts: small or full (ten times small)")
	f.StringSliceVar(&o.shapes, "shapes", []string{"1x1", "4x4", "16x2"}, "producers x consumers of each cell")
	f.StringSliceVar(&o.sizes, "sizes", []string{"256", "4KiB", "1MiB"}, "message sizes (of the scale: 256, 4KiB, 1MiB)")
	f.StringSliceVar(&o.systems, "systems", []string{mqbench.Peer, "fluxon"}, "systems to measure: jetstream, fluxon")
	f.IntVar(&o.messages, "messages", 0, "messages per cell (0: the scale's for the size)")
	f.IntVar(&o.rounds, "rounds", 0, "rounds of the matrix, added up in the table; the systems' order alternates from cell to cell and round to round (0: the scale's, small 2, full 1)")
	f.StringVar(&o.fluxonBin, "fluxon", "bin/fluxon", "the fluxon binary (make build)")
	f.StringVar(&o.natsBin, "nats-server", "nats-server", "the nats-server binary")
	f.StringVar(&o.pollMode, "poll-mode", "", "fluxon's network.poll_mode: busy_poll or event_driven (default: event_driven under 4 CPUs, as fluxon's own warning advises, else fluxon's)")
	f.BoolVar(&o.keep, "keep", false, "keep the work directory (server logs) after the run")
	f.StringVar(&o.workDir, "work-dir", "", "where the temporary work directory goes (default $TMPDIR)")
	f.StringVar(&o.profile, "cpuprofile", "", "write this process's CPU profile (producers, consumers, both client libraries) here")
	return cmd
}

// cells resolves the matrix: every shape at every size.
func (o mqOptions) cells() ([]mqbench.Cell, error) {
	sc, ok := mqScales[o.scale]
	if !ok {
		return nil, fmt.Errorf("--scale %q: small or full", o.scale)
	}
	if o.rounds < 0 {
		return nil, fmt.Errorf("--rounds %d: at least 1 (0: the scale's)", o.rounds)
	}
	for _, s := range o.systems {
		if s != mqbench.Peer && s != "fluxon" {
			return nil, fmt.Errorf("--systems: %q is not jetstream or fluxon", s)
		}
	}
	sizes, err := parseSizes(strings.Join(o.sizes, ","))
	if err != nil {
		return nil, err
	}
	var cells []mqbench.Cell
	for _, size := range sizes {
		i := slices.IndexFunc(sc, func(s mqSize) bool { return s.size == size })
		if i < 0 {
			return nil, fmt.Errorf("--sizes: %d is not one of the scale's (256, 4KiB, 1MiB)", size)
		}
		s := sc[i]
		for _, sh := range o.shapes {
			ps, cs, ok := strings.Cut(sh, "x")
			p, err1 := strconv.Atoi(ps)
			c, err2 := strconv.Atoi(cs)
			if !ok || err1 != nil || err2 != nil || p < 1 || c < 1 || p > 256 || c > 256 {
				return nil, fmt.Errorf("--shapes: %q is not PxC (1 to 256 each)", sh)
			}
			n := s.messages
			if o.messages > 0 {
				n = o.messages
			}
			cells = append(cells, mqbench.Cell{Producers: p, Consumers: c, Size: size, Messages: max(n, p),
				Window: s.window, Batch: s.batch, Backlog: max(s.backlog, p)})
		}
	}
	return cells, nil
}

// runMQ starts the servers, runs the matrix and prints the table.
func runMQ(ctx context.Context, out, log io.Writer, o mqOptions, cells []mqbench.Cell) (err error) {
	dir, err := os.MkdirTemp(o.workDir, "fluxon-bench-mq-")
	if err != nil {
		return err
	}
	defer func() { dropWorkDir(log, dir, o.keep, err) }()
	// Both systems hold at most the largest backlog in memory; room for it
	// three times over (stored, prefetched, being written) and a margin.
	var most uint64
	for _, c := range cells {
		most = max(most, uint64(c.Backlog)*uint64(c.Size))
	}
	mem := 3*most + 256<<20

	var stops []func() error
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			if serr := stops[i](); serr != nil {
				fmt.Fprintf(log, "stopping servers: %v\n", serr)
			}
		}
	}()
	if o.pollMode == "" && runtime.NumCPU() < minBusyPollCPUs {
		o.pollMode = "event_driven"
	}
	var systems []mqbench.System
	var natsVer, fluxonVer string
	for _, s := range o.systems {
		switch s {
		case mqbench.Peer:
			ndir := filepath.Join(dir, "nats")
			if err := os.MkdirAll(ndir, 0o755); err != nil {
				return err
			}
			fmt.Fprintf(log, "starting nats-server -js (memory store %s)...\n", benchenv.FormatMiB(mem))
			n, err := benchenv.StartNATS(ctx, benchenv.NATSOptions{Bin: o.natsBin, Dir: ndir, MaxMemoryStore: mem, MaxPayload: 8 << 20})
			if err != nil {
				return err
			}
			stops = append(stops, n.Stop)
			natsVer = n.Version
			fmt.Fprintf(log, "  nats-server on %s (pid %d)\n", n.URL, n.PID())
			systems = append(systems, &mqbench.JetStream{URL: n.URL, PID: n.PID()})
		case "fluxon":
			fdir := filepath.Join(dir, "fluxon")
			if err := os.MkdirAll(fdir, 0o755); err != nil {
				return err
			}
			fmt.Fprintf(log, "starting fluxon up (pool %s)...\n", benchenv.FormatMiB(mem))
			fx, err := benchenv.StartFluxon(ctx, benchenv.FluxonOptions{Bin: o.fluxonBin, Dir: fdir, PoolSize: mem, PollMode: o.pollMode})
			if err != nil {
				return err
			}
			stops = append(stops, fx.Stop)
			fluxonVer = fx.Version
			fmt.Fprintf(log, "  fluxon up: gRPC %s (pid %d)\n", fx.GRPC, fx.PID())
			systems = append(systems, &mqbench.Fluxon{ClusterName: fx.ClusterName, SharedFilePath: fx.SharedFilePath,
				Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})), PID: fx.PID()})
		}
	}

	if o.profile != "" {
		pf, err := os.Create(o.profile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var results []mqbench.Result
	var runErr error
	turn := 0
run:
	for round := range o.rounds {
		for _, c := range cells {
			order := slices.Clone(systems)
			if turn%2 == 1 {
				slices.Reverse(order)
			}
			turn++
			for _, s := range order {
				id := fmt.Sprintf("r%dp%dc%ds%d", round, c.Producers, c.Consumers, c.Size)
				r := mqbench.Run(ctx, s, c, id)
				if ctx.Err() != nil {
					runErr = ctx.Err()
					break run
				}
				results = append(results, r)
				status := "ok"
				if r.Err != nil {
					status = "FAILED: " + r.Err.Error()
				}
				fmt.Fprintf(log, "round %d %s %s: %d msgs in %s, %.0f msgs/s, p99 %s, dups %d, lost %d, %s\n", round+1, c.Key(), s.Name(),
					r.Unique, r.Elapsed.Round(time.Millisecond), r.MsgsPerSec(), r.P99.Round(time.Microsecond), r.Dups, r.Lost, status)
			}
		}
	}
	results = sumRounds(results)
	// Within a cell, the peer's row first.
	slices.SortStableFunc(results, func(a, b mqbench.Result) int {
		ca, cb := slices.Index(cells, a.Cell), slices.Index(cells, b.Cell)
		if ca != cb {
			return ca - cb
		}
		return boolInt(b.System == mqbench.Peer) - boolInt(a.System == mqbench.Peer)
	})

	var h header
	h.collect()
	fmt.Fprintf(out, "fluxon-bench mq, %s, scale %s, %d round(s)\n", h.date, o.scale, o.rounds)
	fmt.Fprintf(out, "machine: %s, %d CPUs (%s), %s RAM, Linux %s, %s\n", h.host, h.ncpu, h.cpu, benchenv.FormatMiB(h.memTotal), h.kern, runtime.Version())
	if natsVer != "" {
		fmt.Fprintf(out, "jetstream: %s -js; stream: memory storage, work-queue retention; one durable pull consumer (explicit ack, max ack pending unlimited) shared by the consumers; nats.go legacy JetStreamContext\n", natsVer)
		fmt.Fprintf(out, "           publish: PublishAsync, PublishAsyncMaxPending = window; consume: FetchBatch(batch, 100ms) and msg.Ack() per message (ack not confirmed by the server, as fluxon's Ack commits in the background)\n")
	}
	if fluxonVer != "" {
		pm := o.pollMode
		if pm == "" {
			pm = "fluxon's default"
		}
		fmt.Fprintf(out, "fluxon: %s, fluxon up (network.poll_mode %s); MPMC channel; publish: PutAsync, Pending.Wait on the oldest past the window; consume: Get(batch, 100ms) and Ack of every message\n", fluxonVer, pm)
	}
	fmt.Fprintf(out, "clients: goroutines of this process, each producer and consumer with its own fluxon client / NATS connection\n")
	fmt.Fprintf(out, "each cell: messages shared by the producers; sent-and-not-received bounded (backlog) for both; msgs/s = distinct messages / (first send .. last receipt); latency = receipt - send time in the payload\n")
	seen := map[int]bool{}
	for _, c := range cells {
		if !seen[c.Size] {
			seen[c.Size] = true
			fmt.Fprintf(out, "  %s: %d msgs per cell, window %d per producer, batch %d, backlog %d\n", kvbench.FormatSize(c.Size), c.Messages, c.Window, c.Batch, c.Backlog)
		}
	}
	fmt.Fprintln(out)
	if err := mqbench.PrintTable(out, results); err != nil {
		return err
	}
	fmt.Fprintln(out)
	if slices.Contains(o.systems, "fluxon") && slices.Contains(o.systems, mqbench.Peer) {
		mqbench.PrintTargets(out, results)
	}
	if errors.Is(runErr, context.Canceled) {
		fmt.Fprintln(out, "\ninterrupted: the table holds the runs that completed")
	}
	if runErr == nil {
		for _, r := range results {
			if r.Err != nil || r.Lost > 0 || r.Bad > 0 {
				runErr = errors.New("a run failed or lost messages (see above)")
				break
			}
		}
	}
	return runErr
}

// sumRounds folds the rounds of a cell and system into one row: counts
// and time add up, the latency percentiles are the worst round's.
func sumRounds(rs []mqbench.Result) []mqbench.Result {
	var out []mqbench.Result
	for _, r := range rs {
		i := slices.IndexFunc(out, func(o mqbench.Result) bool { return o.System == r.System && o.Cell == r.Cell })
		if i < 0 {
			out = append(out, r)
			continue
		}
		o := &out[i]
		o.Elapsed += r.Elapsed
		o.Unique += r.Unique
		o.Dups += r.Dups
		o.Lost += r.Lost
		o.Bad += r.Bad
		o.P50, o.P99 = max(o.P50, r.P50), max(o.P99, r.P99)
		o.ServerCPU += r.ServerCPU
		o.ClientCPU += r.ClientCPU
		o.Err = errors.Join(o.Err, r.Err)
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
