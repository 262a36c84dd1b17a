package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/bench/benchenv"
	"github.com/fluxon-dev/fluxon/bench/transportbench"
	"github.com/fluxon-dev/fluxon/internal/netlab"
)

// Settings of `fluxon-bench transport`.
const (
	cpingPort          = 5299
	cpingCount         = 20000
	iperfFor           = 5 * time.Second
	transportLabPrefix = "ftb"
	cpingStartTimeout  = 20 * time.Second
)

type transportOpts struct {
	variants    []string
	sizes       []string
	concurrency []int
	duration    time.Duration
	minOps      int
	netns       bool
	cping       string
	dir         string
}

func newTransportCmd() *cobra.Command {
	var o transportOpts
	cmd := &cobra.Command{
		Use:   "transport",
		Short: "Throughput and latency of every transport, next to iperf3 and a C ping-pong on the same link",
		Long: `transport measures each transport (tcp, tcp-busypoll, quic, websocket, ucx where
built) at each message size: ping-pong latency (a request echoed back; p50,
p99) and streaming throughput (one-way messages back to back, timed until the
server has them all), at each concurrency over one connection, and prints a
table with ratios against tcp.

With --netns (root) the server and the client run in two network namespaces
joined by one veth link, and the same run measures iperf3 (one stream) and
bench/cping (a C ping-pong of 64 B, TCP_NODELAY) over that link: the table
ends with tcp bulk as a share of iperf3 and tcp busy-poll's 64 B round trip
as a multiple of the C one. Without --netns everything runs over loopback.`,
		Example: `  fluxon-bench transport
  fluxon-bench transport --netns --cping bin/cping`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := o.plan()
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			if o.netns {
				return runTransportNetns(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, plan)
			}
			return runTransportLoopback(ctx, cmd.OutOrStdout(), o, plan)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.variants, "transports", transportbench.DefaultVariants, "transports to measure (tcp-busypoll: tcp with the busy-poll reactor on both sides)")
	f.StringSliceVar(&o.sizes, "sizes", []string{"64", "4096", "65536", "1048576", "16777216"}, "message sizes in bytes")
	f.IntSliceVar(&o.concurrency, "concurrency", []int{1, 8}, "calls in flight over one connection")
	f.DurationVar(&o.duration, "duration", 400*time.Millisecond, "measured time per cell")
	f.IntVar(&o.minOps, "min-ops", 8, "operations per cell at least")
	f.BoolVar(&o.netns, "netns", false, "run server and client in two network namespaces over one veth link, with iperf3 and cping (root)")
	f.StringVar(&o.cping, "cping", "bin/cping", "the C ping-pong binary (make bench-transport builds it from bench/cping)")
	f.StringVar(&o.dir, "dir", "", "where logs go (default: a temporary directory)")
	cmd.AddCommand(newTransportServeCmd(), newTransportClientCmd())
	return cmd
}

func (o transportOpts) plan() (transportbench.Plan, error) {
	p := transportbench.Plan{Concurrency: o.concurrency, Duration: o.duration, MinOps: o.minOps}
	for _, s := range o.sizes {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, fmt.Errorf("--sizes %q: give sizes in bytes, at least 1", s)
		}
		p.Sizes = append(p.Sizes, n)
	}
	for _, c := range o.concurrency {
		if c < 1 {
			return p, fmt.Errorf("--concurrency %d: at least 1", c)
		}
	}
	return p, nil
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func runTransportLoopback(ctx context.Context, out io.Writer, o transportOpts, p transportbench.Plan) error {
	s, err := transportbench.Serve(ctx, "127.0.0.1", o.variants, quietLog())
	if err != nil {
		return err
	}
	defer s.Close()
	var rows []transportbench.Row
	for _, v := range o.variants {
		addr, ok := s.Addrs[v]
		if !ok {
			continue
		}
		if err := transportbench.Measure(ctx, v, addr, p, quietLog(), func(r transportbench.Row) { rows = append(rows, r) }); err != nil {
			s.Skipped[v] = err.Error()
		}
	}
	transportbench.Print(out, rows, transportbench.Peers{Link: "loopback (127.0.0.1)"}, s.Skipped)
	return nil
}

// serveReply is what `transport serve` prints once listening.
type serveReply struct {
	Addrs   map[string]string `json:"addrs"`
	Skipped map[string]string `json:"skipped"`
}

func newTransportServeCmd() *cobra.Command {
	var host string
	var variants []string
	cmd := &cobra.Command{
		Use: "serve", Hidden: true, Args: cobra.NoArgs,
		Short: "Serve every transport on --host until stdin closes (used by --netns)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := transportbench.Serve(cmd.Context(), host, variants, quietLog())
			if err != nil {
				return err
			}
			defer s.Close()
			if err := json.NewEncoder(cmd.OutOrStdout()).Encode(serveReply{Addrs: s.Addrs, Skipped: s.Skipped}); err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, cmd.InOrStdin())
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "127.0.0.1", "address to listen on")
	cmd.Flags().StringSliceVar(&variants, "transports", transportbench.DefaultVariants, "transports")
	return cmd
}

func newTransportClientCmd() *cobra.Command {
	var o transportOpts
	var addrs string
	cmd := &cobra.Command{
		Use: "client", Hidden: true, Args: cobra.NoArgs,
		Short: "Measure the transports of --addrs (JSON), one JSON row per line (used by --netns)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := o.plan()
			if err != nil {
				return err
			}
			var m map[string]string
			if err := json.Unmarshal([]byte(addrs), &m); err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			for _, v := range o.variants {
				addr, ok := m[v]
				if !ok {
					continue
				}
				if err := transportbench.Measure(cmd.Context(), v, addr, p, quietLog(), func(r transportbench.Row) { _ = enc.Encode(r) }); err != nil {
					_ = enc.Encode(transportbench.Row{Transport: v, Err: err.Error()})
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addrs, "addrs", "", "transport -> address, JSON")
	f.StringSliceVar(&o.variants, "transports", transportbench.DefaultVariants, "")
	f.StringSliceVar(&o.sizes, "sizes", nil, "")
	f.IntSliceVar(&o.concurrency, "concurrency", []int{1}, "")
	f.DurationVar(&o.duration, "duration", 400*time.Millisecond, "")
	f.IntVar(&o.minOps, "min-ops", 8, "")
	return cmd
}

func runTransportNetns(ctx context.Context, out, logw io.Writer, o transportOpts, p transportbench.Plan) error {
	if err := netlab.Available(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "fluxon-bench-transport-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	lab, err := netlab.StartChain(transportLabPrefix, 2)
	if err != nil {
		return err
	}
	defer lab.Close()
	srv, cli := lab.Hosts[0], lab.Hosts[1]
	srvIP := lab.ChainAddr(1, true)
	peers := transportbench.Peers{Link: fmt.Sprintf("one veth link, server %s (%s) <- client (%s)", srvIP, srv.NS, cli.NS)}
	env := os.Environ()
	if os.Getenv("UCX_TLS") == "" {
		env = append(env, "UCX_TLS=tcp")
	}

	// The server, in the first namespace.
	serve := exec.CommandContext(ctx, "ip", "netns", "exec", srv.NS, self, "transport", "serve", "--host", srvIP, "--transports", strings.Join(o.variants, ","))
	serve.Env = env
	serve.Stderr = logw
	stdin, err := serve.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := serve.StdoutPipe()
	if err != nil {
		return err
	}
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() { stdin.Close(); _ = serve.Wait() }()
	var sr serveReply
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &sr)
	}
	if err != nil {
		return fmt.Errorf("transport server in %s: %w", srv.NS, err)
	}

	// The client, in the second.
	addrs, _ := json.Marshal(sr.Addrs)
	var concs, sizes []string
	for _, c := range p.Concurrency {
		concs = append(concs, strconv.Itoa(c))
	}
	for _, s := range p.Sizes {
		sizes = append(sizes, strconv.Itoa(s))
	}
	client := exec.CommandContext(ctx, "ip", "netns", "exec", cli.NS, self, "transport", "client", "--addrs", string(addrs),
		"--transports", strings.Join(o.variants, ","), "--sizes", strings.Join(sizes, ","), "--concurrency", strings.Join(concs, ","),
		"--duration", p.Duration.String(), "--min-ops", strconv.Itoa(p.MinOps))
	client.Env = env
	client.Stderr = logw
	cout, err := client.Output()
	if err != nil {
		return fmt.Errorf("transport client in %s: %w", cli.NS, err)
	}
	var rows []transportbench.Row
	for _, l := range strings.Split(strings.TrimSpace(string(cout)), "\n") {
		var r transportbench.Row
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			return fmt.Errorf("client output %q: %w", l, err)
		}
		if r.Mode == "" {
			sr.Skipped[r.Transport] = r.Err
			continue
		}
		rows = append(rows, r)
	}

	// The peers over the same link, in the same run.
	ip, err := benchenv.NewIperf3()
	if err == nil {
		peers.IperfBps, peers.IperfErr = ip.Measure(ctx, dir, srv.NS, srvIP, cli.NS, iperfFor)
	} else {
		peers.IperfErr = err
	}
	peers.CpingP50, peers.CpingP99, peers.CpingErr = runCping(ctx, o.cping, srv, cli, srvIP)
	transportbench.Print(out, rows, peers, sr.Skipped)
	return nil
}

// runCping runs bench/cping's server in srv and its client in cli.
func runCping(ctx context.Context, bin string, srv, cli *netlab.Host, srvIP string) (p50, p99 float64, err error) {
	bin, err = filepath.Abs(bin)
	if err != nil {
		return 0, 0, err
	}
	if _, err := os.Stat(bin); err != nil {
		return 0, 0, fmt.Errorf("%w; build it: gcc -O2 -o bin/cping bench/cping/cping.c (make bench-transport does)", err)
	}
	server := exec.CommandContext(ctx, "ip", "netns", "exec", srv.NS, bin, "server", srvIP, strconv.Itoa(cpingPort))
	sout, err := server.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := server.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { _ = server.Process.Kill(); _ = server.Wait() }()
	ready := make(chan error, 1)
	go func() { _, err := bufio.NewReader(sout).ReadString('\n'); ready <- err }()
	select {
	case err := <-ready:
		if err != nil {
			return 0, 0, fmt.Errorf("cping server: %w", err)
		}
	case <-time.After(cpingStartTimeout):
		return 0, 0, errors.New("cping server did not start")
	}
	o, err := exec.CommandContext(ctx, "ip", "netns", "exec", cli.NS, bin, "client", srvIP, strconv.Itoa(cpingPort), strconv.Itoa(cpingCount)).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("cping client: %w: %s", err, o)
	}
	f := strings.Fields(string(o))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("cping client printed %q", o)
	}
	a, err1 := strconv.ParseFloat(f[0], 64)
	b, err2 := strconv.ParseFloat(f[1], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return a / 1e3, b / 1e3, nil
}
