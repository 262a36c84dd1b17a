package transportbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fluxon-dev/fluxon/bench/benchenv"
	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
	"github.com/fluxon-dev/fluxon/internal/netlab"
)

// Settings of the transport command.
const (
	cpingPort  = 5299
	cpingCount = 20000
	// roundDuration is the busy-poll measurement of one interleaved round
	// (--rounds), about as long as cping's cpingCount round trips.
	roundDuration      = 250 * time.Millisecond
	iperfFor           = 5 * time.Second
	transportLabPrefix = "ftb"
	cpingStartTimeout  = 20 * time.Second
	// DefaultDuration is the measured time per cell.
	DefaultDuration = 400 * time.Millisecond
	// DefaultMinOps is the fewest operations per cell.
	DefaultMinOps = 8
)

// CommandOptions say where the command is mounted.
type CommandOptions struct {
	// Reexec is the arguments after the executable that reach this command
	// again (["bench", "transport"] for fluxon): --netns runs this binary in
	// each namespace with them.
	Reexec []string
	// Usage marks an error the caller must fix (a flag), so the binary exits
	// with its usage status. Nil: errors are returned as they are.
	Usage func(error) error
}

type cliOpts struct {
	variants    []string
	sizes       []string
	concurrency []int
	duration    time.Duration
	minOps      int
	netns       bool
	cping       string
	rounds      int
	dir         string
	listen      string
	connect     string
	rdmaDevices []string
	dpdk        dpdkFlags
}

// dpdkFlags are one side's DPDK port settings.
type dpdkFlags struct {
	address  string
	vdevs    []string
	pci      []string
	ealArgs  []string
	noHuge   bool
	memoryMB int
}

// add puts the flags on f (every command that builds transports has them).
func (d *dpdkFlags) add(f *pflag.FlagSet) {
	f.StringVar(&d.address, "dpdk-address", "", "this side's DPDK port as dpdk://<device>:<port>; a server listens on that service port, a client dials from the device")
	f.StringArrayVar(&d.vdevs, "dpdk-vdev", nil, "a virtual device for the EAL, e.g. net_af_packet0,iface=eth1 (repeat for more)")
	f.StringArrayVar(&d.pci, "dpdk-pci", nil, "a PCI NIC the EAL may probe, e.g. 0000:3b:00.0 (repeat for more; none: --no-pci)")
	f.StringArrayVar(&d.ealArgs, "dpdk-eal-arg", nil, "a further EAL option, e.g. --log-level=lib.eal:debug (repeat for more)")
	f.BoolVar(&d.noHuge, "dpdk-no-huge", false, "run the EAL without hugepages")
	f.IntVar(&d.memoryMB, "dpdk-memory-mb", 0, "the EAL's memory in MiB (0: cgo/dpdk's default)")
}

// args gives the flags back as a command line, for a re-executed side.
func (d dpdkFlags) args() []string {
	if d.address == "" {
		return nil
	}
	a := []string{"--dpdk-address", d.address, "--dpdk-memory-mb", strconv.Itoa(d.memoryMB)}
	for _, v := range d.vdevs {
		a = append(a, "--dpdk-vdev", v)
	}
	for _, v := range d.pci {
		a = append(a, "--dpdk-pci", v)
	}
	for _, v := range d.ealArgs {
		a = append(a, "--dpdk-eal-arg", v)
	}
	if d.noHuge {
		a = append(a, "--dpdk-no-huge")
	}
	return a
}

// NewCommand is the `transport` command: `fluxon bench transport` and
// `fluxon-bench transport` are this one implementation.
func NewCommand(co CommandOptions) *cobra.Command {
	var o cliOpts
	self := strings.Join(append([]string{filepath.Base(os.Args[0])}, co.Reexec...), " ")
	usage := co.Usage
	if usage == nil {
		usage = func(err error) error { return err }
	}
	cmd := &cobra.Command{
		Use:   "transport",
		Short: "Throughput and latency of every transport, per message size and concurrency",
		Long: `transport measures each transport (tcp, tcp-busypoll, quic, websocket, ucx,
rdma, dpdk) at each message size (64 B to 16 MiB by default): ping-pong latency
(a request echoed back; p50, p99), streaming throughput (one-way messages back
to back, timed until the server has them all) and bulk reads (ReadRemote into
the caller's buffer), at each concurrency over one connection, and prints a
table with ratios against tcp. A transport that cannot run (not compiled in,
no RDMA device, no DPDK port) is listed as skipped with the reason.

Between two hosts: run --listen ADDR on one (tcp takes ADDR's port, every
other transport the ports after it, in --transports order), then --connect
ADDR on the other; the client prints the table. Ctrl-C stops the server.

With --netns (root) the server and the client run in two network namespaces
joined by one veth link, and the same run measures iperf3 (one stream) and
bench/cping (a C ping-pong of 64 B, TCP_NODELAY) over that link: the table
ends with tcp bulk as a share of iperf3 and tcp busy-poll's 64 B round trip
as a multiple of the C one. Otherwise everything runs over loopback.`,
		Example: fmt.Sprintf(`  %[1]s
  %[1]s --transports tcp,quic --sizes 64,1048576 --concurrency 1
  %[1]s --listen 0.0.0.0:7500 --transports tcp,quic,rdma     # on host A
  %[1]s --connect hostA:7500 --transports tcp,quic,rdma      # on host B
  %[1]s --netns --cping bin/cping`, self),
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := o.plan()
			if err != nil {
				return usage(err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			switch {
			case o.listen != "":
				return runListen(ctx, out, self, o)
			case o.connect != "":
				return runConnect(ctx, out, o, plan)
			case o.netns:
				return runNetns(ctx, out, cmd.ErrOrStderr(), co.Reexec, o, plan)
			}
			return runLoopback(ctx, out, o, plan)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.variants, "transports", DefaultVariants, "transports to measure (tcp-busypoll: tcp with the busy-poll reactor on both sides)")
	var sizes []string
	for _, s := range DefaultSizes {
		sizes = append(sizes, strconv.Itoa(s))
	}
	f.StringSliceVar(&o.sizes, "sizes", sizes, "message sizes in bytes")
	f.IntSliceVar(&o.concurrency, "concurrency", []int{1, 8}, "calls in flight over one connection")
	f.DurationVar(&o.duration, "duration", DefaultDuration, "measured time per cell")
	f.IntVar(&o.minOps, "min-ops", DefaultMinOps, "operations per cell at least")
	f.StringVar(&o.listen, "listen", "", "serve every transport on this host:port until Ctrl-C, for a --connect from another host")
	f.StringVar(&o.connect, "connect", "", "measure against a --listen server at this host:port")
	f.StringSliceVar(&o.rdmaDevices, "rdma-devices", nil, "RDMA devices rdma may use, as ibv_devices lists them (default: any)")
	o.dpdk.add(f)
	f.BoolVar(&o.netns, "netns", false, "run server and client in two network namespaces over one veth link, with iperf3 and cping (root)")
	f.StringVar(&o.cping, "cping", "bin/cping", "with --netns: the C ping-pong binary (make bench-transport builds it from bench/cping)")
	f.IntVar(&o.rounds, "rounds", 7, "with --netns: rounds that alternate the spinning C ping-pong and tcp busy-poll's 64 B round trip (0: none)")
	f.StringVar(&o.dir, "dir", "", "with --netns: where logs go (default: a temporary directory)")
	cmd.MarkFlagsMutuallyExclusive("listen", "connect", "netns")
	cmd.AddCommand(newServeCmd(), newClientCmd())
	return cmd
}

func (o cliOpts) env() Env {
	e := Env{RDMADevices: o.rdmaDevices}
	if d := o.dpdk; d.address != "" {
		e.DPDK = &DPDKPort{Address: d.address, EAL: cdpdk.EAL{NoHuge: d.noHuge, MemoryMB: d.memoryMB, VDevs: d.vdevs, PCI: d.pci, Extra: d.ealArgs}}
	}
	return e
}

func (o cliOpts) plan() (Plan, error) {
	p := Plan{Concurrency: o.concurrency, Duration: o.duration, MinOps: o.minOps}
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
	for _, v := range o.variants {
		if !contains(DefaultVariants, v) {
			return p, fmt.Errorf("--transports: %w %q; use %s", ErrUnknownVariant, v, strings.Join(DefaultVariants, ","))
		}
	}
	if o.duration <= 0 {
		return p, fmt.Errorf("--duration %s: give a positive duration", o.duration)
	}
	return p, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func runLoopback(ctx context.Context, out io.Writer, o cliOpts, p Plan) error {
	s, err := Serve(ctx, "127.0.0.1:0", o.variants, o.env())
	if err != nil {
		return err
	}
	defer s.Close()
	var rows []Row
	skipped := MeasureAll(ctx, Hello{Addrs: s.Addrs, Skipped: s.Skipped}, o.variants, p, o.env(), func(r Row) { rows = append(rows, r) })
	Print(out, rows, Peers{Link: "loopback (127.0.0.1)"}, skipped)
	return nil
}

// runListen serves until ctx ends, after printing what it serves.
func runListen(ctx context.Context, out io.Writer, self string, o cliOpts) error {
	s, err := Serve(ctx, o.listen, o.variants, o.env())
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(out, "listening on %s; on the other host run: %s --connect <this host>:%s\n", s.Control, self, portOf(s.Control))
	for _, v := range o.variants {
		if a, ok := s.Addrs[v]; ok {
			fmt.Fprintf(out, "  serving: %s %s\n", v, a)
		}
	}
	printSkipped(out, s.Skipped)
	<-ctx.Done()
	return nil
}

func portOf(addr string) string {
	i := strings.LastIndex(addr, ":")
	return addr[i+1:]
}

func printSkipped(w io.Writer, skipped map[string]string) {
	names := make([]string, 0, len(skipped))
	for v := range skipped {
		names = append(names, v)
	}
	sort.Strings(names)
	for _, v := range names {
		fmt.Fprintf(w, "  skipped: %s: %s\n", v, skipped[v])
	}
}

func runConnect(ctx context.Context, out io.Writer, o cliOpts, p Plan) error {
	h, err := Dial(ctx, o.connect, o.env())
	if err != nil {
		return err
	}
	var rows []Row
	skipped := MeasureAll(ctx, h, o.variants, p, o.env(), func(r Row) { rows = append(rows, r) })
	Print(out, rows, Peers{Link: "the network to " + o.connect}, skipped)
	return nil
}

func newServeCmd() *cobra.Command {
	var host string
	var o cliOpts
	cmd := &cobra.Command{
		Use: "serve", Hidden: true, Args: cobra.NoArgs,
		Short: "Serve every transport on --host until stdin closes, printing Hello as JSON (used by --netns)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := Serve(cmd.Context(), host+":0", o.variants, o.env())
			if err != nil {
				return err
			}
			defer s.Close()
			if err := json.NewEncoder(cmd.OutOrStdout()).Encode(Hello{Addrs: s.Addrs, Skipped: s.Skipped}); err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, cmd.InOrStdin())
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "127.0.0.1", "address to listen on")
	cmd.Flags().StringSliceVar(&o.variants, "transports", DefaultVariants, "transports")
	cmd.Flags().StringSliceVar(&o.rdmaDevices, "rdma-devices", nil, "")
	o.dpdk.add(cmd.Flags())
	return cmd
}

// clientSkip is a client output line naming a variant it did not measure.
type clientSkip struct {
	Skipped string `json:"skipped"`
	Why     string `json:"why"`
}

func newClientCmd() *cobra.Command {
	var o cliOpts
	var hello string
	cmd := &cobra.Command{
		Use: "client", Hidden: true, Args: cobra.NoArgs,
		Short: "Measure the server of --hello (JSON), one JSON row per line (used by --netns)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := o.plan()
			if err != nil {
				return err
			}
			var h Hello
			if err := json.Unmarshal([]byte(hello), &h); err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			skipped := MeasureAll(cmd.Context(), h, o.variants, p, o.env(), func(r Row) { _ = enc.Encode(r) })
			for v, why := range skipped {
				_ = enc.Encode(clientSkip{Skipped: v, Why: why})
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&hello, "hello", "", "the server's Hello, JSON")
	f.StringSliceVar(&o.variants, "transports", DefaultVariants, "")
	f.StringSliceVar(&o.sizes, "sizes", nil, "")
	f.IntSliceVar(&o.concurrency, "concurrency", []int{1}, "")
	f.DurationVar(&o.duration, "duration", DefaultDuration, "")
	f.IntVar(&o.minOps, "min-ops", DefaultMinOps, "")
	f.StringSliceVar(&o.rdmaDevices, "rdma-devices", nil, "")
	o.dpdk.add(f)
	return cmd
}

func runNetns(ctx context.Context, out, logw io.Writer, reexec []string, o cliOpts, p Plan) error {
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
	peers := Peers{Link: fmt.Sprintf("one veth link, server %s (%s) <- client (%s)", srvIP, srv.NS, cli.NS)}
	env := os.Environ()
	if os.Getenv("UCX_TLS") == "" {
		env = append(env, "UCX_TLS=tcp")
	}
	inNS := func(ns string, args ...string) []string {
		return append(append([]string{"netns", "exec", ns, self}, reexec...), args...)
	}
	var concs, sizes []string
	for _, c := range p.Concurrency {
		concs = append(concs, strconv.Itoa(c))
	}
	for _, s := range p.Sizes {
		sizes = append(sizes, strconv.Itoa(s))
	}
	// serve starts a server in the first namespace over variants; its
	// Hello (JSON) goes to the clients. stop ends it.
	serve := func(variants []string, srvDPDK dpdkFlags) (hello string, stop func(), err error) {
		cmd := exec.CommandContext(ctx, "ip", inNS(srv.NS, append(append([]string{"serve", "--host", srvIP, "--transports", strings.Join(variants, ",")}, rdmaArgs(o)...), srvDPDK.args()...)...)...)
		cmd.Env = env
		cmd.Stderr = logw
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return "", nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return "", nil, err
		}
		if err := cmd.Start(); err != nil {
			return "", nil, err
		}
		stop = func() { stdin.Close(); _ = cmd.Wait() }
		line, err := bufio.NewReader(stdout).ReadBytes('\n')
		if err == nil && !json.Valid(line) {
			err = fmt.Errorf("printed %q", line)
		}
		if err != nil {
			stop()
			return "", nil, fmt.Errorf("transport server in %s: %w", srv.NS, err)
		}
		return strings.TrimSpace(string(line)), stop, nil
	}
	// client measures the server of hello from the second namespace.
	client := func(hello string, variants, sizes, concs []string, d time.Duration, cliDPDK dpdkFlags) ([]Row, map[string]string, error) {
		cmd := exec.CommandContext(ctx, "ip", inNS(cli.NS, append(append([]string{"client", "--hello", hello,
			"--sizes", strings.Join(sizes, ","), "--concurrency", strings.Join(concs, ","),
			"--duration", d.String(), "--min-ops", strconv.Itoa(p.MinOps), "--transports", strings.Join(variants, ",")},
			rdmaArgs(o)...), cliDPDK.args()...)...)...)
		cmd.Env = env
		cmd.Stderr = logw
		cout, err := cmd.Output()
		if err != nil {
			return nil, nil, fmt.Errorf("transport client in %s: %w", cli.NS, err)
		}
		return parseClient(cout)
	}
	// pair runs a server in the first namespace and a client in the second
	// over variants and returns the client's rows.
	pair := func(variants []string, srvDPDK, cliDPDK dpdkFlags) ([]Row, map[string]string, error) {
		hello, stop, err := serve(variants, srvDPDK)
		if err != nil {
			return nil, nil, err
		}
		defer stop()
		return client(hello, variants, sizes, concs, p.Duration, cliDPDK)
	}

	// DPDK's pollers spin a core in each process for as long as their port
	// is open: on a small machine that would starve the kernel transports
	// measured beside them, so dpdk runs in a server/client pair of its own,
	// after the others.
	var rest []string
	for _, v := range o.variants {
		if v != "dpdk" {
			rest = append(rest, v)
		}
	}
	rows, skipped, err := pair(rest, dpdkFlags{}, dpdkFlags{})
	if err != nil {
		return err
	}
	if contains(o.variants, "dpdk") {
		srvDPDK, cliDPDK := netnsDPDK(o)
		drows, dskipped, err := pair([]string{"dpdk"}, srvDPDK, cliDPDK)
		if err != nil {
			return err
		}
		rows = append(rows, drows...)
		for k, v := range dskipped {
			skipped[k] = v
		}
	}

	// The peers over the same link, in the same run.
	ip, err := benchenv.NewIperf3()
	if err == nil {
		peers.IperfBps, peers.IperfErr = ip.Measure(ctx, dir, srv.NS, srvIP, cli.NS, iperfFor)
	} else {
		peers.IperfErr = err
	}
	peers.CpingP50, peers.CpingP99, peers.CpingErr = runCping(ctx, o.cping, srv, cli, srvIP, false)
	peers.SpinP50, peers.SpinP99, peers.SpinErr = runCping(ctx, o.cping, srv, cli, srvIP, true)
	// The busy-poll target again, in rounds that alternate the spinning C
	// ping-pong with a short busy-poll measurement: on a shared VM either
	// one alone swings by tens of percent from one moment to the next.
	if contains(o.variants, "tcp-busypoll") && contains(o.sizes, strconv.Itoa(SmallSize)) && peers.SpinErr == nil && o.rounds > 0 {
		peers.Rounds, peers.RoundsErr = func() ([]Round, error) {
			hello, stop, err := serve([]string{"tcp-busypoll"}, dpdkFlags{})
			if err != nil {
				return nil, err
			}
			defer stop()
			var rounds []Round
			for range o.rounds {
				c, _, err := runCping(ctx, o.cping, srv, cli, srvIP, true)
				if err != nil {
					return rounds, err
				}
				rows, _, err := client(hello, []string{"tcp-busypoll"}, []string{strconv.Itoa(SmallSize)}, []string{"1"}, roundDuration, dpdkFlags{})
				if err != nil {
					return rounds, err
				}
				r, ok := find(rows, "tcp-busypoll", "pingpong", SmallSize, 1)
				if !ok {
					return rounds, errors.New("the busy-poll client measured no round trip")
				}
				rounds = append(rounds, Round{P50: r.P50, CP50: c})
			}
			return rounds, nil
		}()
	}
	Print(out, rows, peers, skipped)
	return nil
}

// netnsDPDKPort is the server's dpdk service port in --netns runs.
const netnsDPDKPort = 7100

// netnsDPDK is each side's DPDK port in --netns runs: an af_packet port on
// its end of the veth link (netlab.StartChain names them r1 and l1), no
// hugepages. Nothing when dpdk is not measured; the user's --dpdk-* flags,
// if any, are taken as they are for both sides (their vdevs must then name
// the namespaces' interfaces).
func netnsDPDK(o cliOpts) (srv, cli dpdkFlags) {
	if !contains(o.variants, "dpdk") {
		return dpdkFlags{}, dpdkFlags{}
	}
	if o.dpdk.address != "" {
		return o.dpdk, o.dpdk
	}
	side := func(iface string, port int) dpdkFlags {
		return dpdkFlags{address: fmt.Sprintf("dpdk://net_af_packet0:%d", port), vdevs: []string{"net_af_packet0,iface=" + iface},
			noHuge: true, memoryMB: cdpdk.DefaultMemoryMB, ealArgs: o.dpdk.ealArgs}
	}
	return side("r1", netnsDPDKPort), side("l1", 0)
}

// rdmaArgs passes --rdma-devices on to a re-executed side.
func rdmaArgs(o cliOpts) []string {
	if len(o.rdmaDevices) == 0 {
		return nil
	}
	return []string{"--rdma-devices", strings.Join(o.rdmaDevices, ",")}
}

// parseClient reads the hidden client's lines: rows and skipped variants.
func parseClient(out []byte) ([]Row, map[string]string, error) {
	var rows []Row
	skipped := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		var s clientSkip
		if err := json.Unmarshal([]byte(l), &s); err == nil && s.Skipped != "" {
			skipped[s.Skipped] = s.Why
			continue
		}
		var r Row
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Mode == "" {
			return nil, nil, fmt.Errorf("client output %q: not a row (%v)", l, err)
		}
		rows = append(rows, r)
	}
	return rows, skipped, nil
}

// runCping runs bench/cping's server in srv and its client in cli; spin:
// both poll their socket instead of sleeping in read.
func runCping(ctx context.Context, bin string, srv, cli *netlab.Host, srvIP string, spin bool) (p50, p99 float64, err error) {
	mode := []string{}
	if spin {
		mode = []string{"spin"}
	}
	bin, err = filepath.Abs(bin)
	if err != nil {
		return 0, 0, err
	}
	if _, err := os.Stat(bin); err != nil {
		return 0, 0, fmt.Errorf("%w; build it: gcc -O2 -o bin/cping bench/cping/cping.c (make bench-transport does)", err)
	}
	server := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", srv.NS, bin, "server", srvIP, strconv.Itoa(cpingPort)}, mode...)...)
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
	o, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", cli.NS, bin, "client", srvIP, strconv.Itoa(cpingPort), strconv.Itoa(cpingCount)}, mode...)...).CombinedOutput()
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
