// Package transportbench measures the transports (tcp, tcp busy-poll,
// quic, websocket, ucx, rdma) with the same load: ping-pong latency (a
// request of N bytes echoed back), streaming throughput (one-way messages
// of N bytes sent back to back, timed until the server has received them
// all) and bulk reads, at a given concurrency over one connection.
//
// NewCommand is the one command line over it, mounted as `fluxon bench
// transport` and `fluxon-bench transport`: over loopback, between two
// network namespaces next to iperf3 and a C ping-pong (bench/cping) on the
// same link, or between two hosts (--listen on one, --connect on the other).
package transportbench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/dpdk"
	"github.com/fluxon-dev/fluxon/services/transport/quic"
	"github.com/fluxon-dev/fluxon/services/transport/rdma"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/ucx"
	"github.com/fluxon-dev/fluxon/services/transport/websocket"
)

// Paths the bench server serves.
const (
	pathEcho  = "/bench/echo"
	pathSink  = "/bench/sink"
	pathCount = "/bench/count"
	pathHello = "/bench/hello"
)

// DefaultVariants is every variant, in the order tables list them.
var DefaultVariants = []string{"tcp", "tcp-busypoll", "quic", "websocket", "ucx", "rdma", "dpdk"}

// DefaultSizes are the message sizes of the issue: 64 B to 16 MiB.
var DefaultSizes = []int{64, 4 << 10, 64 << 10, 1 << 20, 16 << 20}

// ErrUnknownVariant: a variant name New does not know.
var ErrUnknownVariant = errors.New("transportbench: unknown transport variant")

// ErrDPDKNotConfigured: dpdk is compiled in but has no port to use.
var ErrDPDKNotConfigured = errors.New("dpdk: no DPDK port configured; give --dpdk-address and --dpdk-vdev on each side (each host needs its own port: frames a port sends to itself never come back, so one process over loopback cannot measure it; --netns sets them up)")

// Env is what building a variant needs besides its name.
type Env struct {
	// Log receives the transports' logs (nil: discarded).
	Log *slog.Logger
	// RDMADevices restricts rdma to these devices (empty: any).
	RDMADevices []string
	// DPDK is this side's DPDK port (nil: dpdk is not measured).
	DPDK *DPDKPort
}

// DPDKPort is one side's DPDK setup: the EAL, and the address whose device
// is the port to open (a server also listens on its service port).
type DPDKPort struct {
	Address string
	EAL     cdpdk.EAL
}

// dpdkOpen holds the process's one DPDK port: the EAL starts once per
// process, so every dpdk transport of a run shares it.
var dpdkOpen struct {
	once sync.Once
	ep   *dpdk.Endpoint
	err  error
}

func dpdkEndpoint(p DPDKPort) (*dpdk.Endpoint, error) {
	dpdkOpen.once.Do(func() {
		a, _, err := dpdk.ParseAddr(p.Address)
		if err != nil {
			dpdkOpen.err = fmt.Errorf("--dpdk-address: %w", err)
			return
		}
		dpdkOpen.ep, dpdkOpen.err = dpdk.OpenDPDK(p.EAL, a.Device, dpdk.EndpointConfig{})
	})
	return dpdkOpen.ep, dpdkOpen.err
}

func (e Env) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

// New builds a variant: a transport name, or tcp-busypoll (tcp with the
// busy-poll reactor on both sides). A transport that cannot run here (not
// compiled in, no device) returns the error that says why.
func New(variant string, env Env) (transport.Transport, error) {
	o := transport.Options{Log: env.log()}
	switch variant {
	case "tcp":
		return tcp.New(tcp.Options{Options: o, Reactor: tcp.ReactorEventDriven})
	case "tcp-busypoll":
		return tcp.New(tcp.Options{Options: o, Reactor: tcp.ReactorBusyPoll})
	case "quic":
		return quic.New(quic.Options{Options: o})
	case "websocket":
		return websocket.New(websocket.Options{Options: o})
	case "ucx":
		return ucx.New(ucx.Options{Options: o})
	case "rdma":
		ctl, err := tcp.New(tcp.Options{Options: o, Reactor: tcp.ReactorEventDriven})
		if err != nil {
			return nil, err
		}
		return rdma.New(rdma.Options{Options: o, Control: ctl, DeviceNames: env.RDMADevices, Segments: bulkSegments})
	case "dpdk":
		if !cdpdk.Supported() {
			return nil, cdpdk.ErrNotSupported
		}
		if env.DPDK == nil || env.DPDK.Address == "" {
			return nil, ErrDPDKNotConfigured
		}
		ep, err := dpdkEndpoint(*env.DPDK)
		if err != nil {
			return nil, err
		}
		return dpdk.New(dpdk.Options{Options: o, Endpoints: []*dpdk.Endpoint{ep}})
	}
	return nil, fmt.Errorf("%w %q; use %v", ErrUnknownVariant, variant, DefaultVariants)
}

// Identities of the two sides.
var (
	serverID = transport.Identity{ClusterName: "bench", InstanceKey: "server", StartTime: time.Unix(1, 0), Role: "owner"}
	clientID = transport.Identity{ClusterName: "bench", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "owner"}
)

// Server serves every variant it can build on one host.
type Server struct {
	// Addrs maps a variant to its listener's address.
	Addrs map[string]string
	// Skipped maps a variant that cannot run here to why.
	Skipped map[string]string
	// Control is the tcp listener's address: what a client connects to
	// first (Hello), and the tcp variant's.
	Control string
	lns     []transport.Listener
	sunk    atomic.Uint64
}

// Hello is what a server tells a client about itself (Server.Addrs and
// Server.Skipped).
type Hello struct {
	Addrs   map[string]string `json:"addrs"`
	Skipped map[string]string `json:"skipped"`
}

// Serve listens on addr ("host:port") with tcp, which answers Hello and is
// the tcp variant, and on every other variant on the same host: on port+1,
// port+2, … in variants' order (firewall-friendly), or on ports the kernel
// picks when addr's port is 0. A variant that cannot run or listen here is
// recorded in Skipped with why; only the tcp listener's failure fails Serve.
func Serve(ctx context.Context, addr string, variants []string, env Env) (*Server, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w; use host:port", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("listen address %q: the port must be a number 0..65535", addr)
	}
	s := &Server{Addrs: map[string]string{}, Skipped: map[string]string{}}
	h := s.handler()
	ctl, err := New("tcp", env)
	if err != nil {
		return nil, err
	}
	ln, err := ctl.Listen(ctx, addr, serverID, h, nil)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s.lns = append(s.lns, ln)
	s.Control = ln.Addr()
	next := port
	for _, v := range variants {
		if v == "tcp" {
			s.Addrs[v] = s.Control
			continue
		}
		if _, dup := s.Addrs[v]; dup {
			continue
		}
		tr, err := New(v, env)
		if err != nil {
			s.Skipped[v] = err.Error()
			continue
		}
		la := net.JoinHostPort(host, "0")
		switch {
		case v == "dpdk":
			la = env.DPDK.Address // New built it, so it is set
		case port != 0:
			next++
			la = net.JoinHostPort(host, strconv.Itoa(next))
		}
		ln, err := tr.Listen(ctx, la, serverID, h, nil)
		if err != nil {
			s.Skipped[v] = err.Error()
			continue
		}
		s.lns = append(s.lns, ln)
		s.Addrs[v] = ln.Addr()
	}
	return s, nil
}

func (s *Server) hello() ([]byte, error) {
	return json.Marshal(Hello{Addrs: s.Addrs, Skipped: s.Skipped})
}

func (s *Server) handler() transport.Handler {
	return transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, path string, p []byte) ([]byte, error) {
			switch path {
			case pathEcho:
				return p, nil
			case pathSink:
				s.sunk.Add(uint64(len(p)))
				return nil, nil
			case pathCount:
				return binary.BigEndian.AppendUint64(nil, s.sunk.Load()), nil
			case pathHello:
				return s.hello()
			}
			return nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: path}
		},
		// Every path is a counter or returns its input: inline is safe,
		// and it is how a latency-sensitive member serves.
		Inline: func(string) bool { return true },
		// Bulk reads are served from one buffer, zero copy on this side,
		// as an owner serves a pinned value.
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			src := bulkSrc()
			if ref.Offset > uint64(len(src)) || ref.Length > uint64(len(src))-ref.Offset {
				return nil, nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: "range outside the bench buffer"}
			}
			return src[ref.Offset : ref.Offset+ref.Length], func() {}, nil
		},
	}
}

// Close closes the listeners.
func (s *Server) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
}

// Dial asks the server listening at addr (its tcp address) what it serves.
// Addresses on a wildcard host ("0.0.0.0", "::") are given addr's host, the
// one this client reached.
func Dial(ctx context.Context, addr string, env Env) (Hello, error) {
	tr, err := New("tcp", env)
	if err != nil {
		return Hello{}, err
	}
	c, err := tr.Dial(ctx, addr, clientID, nil)
	if err != nil {
		return Hello{}, fmt.Errorf("connect %s: %w; is `bench transport --listen` running there?", addr, err)
	}
	defer c.Close()
	b, err := c.Request(ctx, pathHello, nil)
	if err != nil {
		return Hello{}, fmt.Errorf("ask %s what it serves: %w", addr, err)
	}
	var h Hello
	if err := json.Unmarshal(b, &h); err != nil {
		return Hello{}, fmt.Errorf("hello from %s: %w", addr, err)
	}
	reached, _, _ := net.SplitHostPort(addr)
	for v, a := range h.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			h.Addrs[v] = net.JoinHostPort(reached, port)
		}
	}
	for v, why := range h.Skipped {
		h.Skipped[v] = "on the server: " + why
	}
	return h, nil
}

// MeasureAll measures each of variants that the server of h serves,
// reporting rows to emit, and returns the variants not measured with why:
// the server's reason, or this side's (built without it, no device, dial
// failed).
func MeasureAll(ctx context.Context, h Hello, variants []string, p Plan, env Env, emit func(Row)) map[string]string {
	skipped := map[string]string{}
	for _, v := range variants {
		if why, ok := h.Skipped[v]; ok {
			skipped[v] = why
			continue
		}
		addr, ok := h.Addrs[v]
		if !ok {
			skipped[v] = "the server does not serve it; add it to the server's --transports"
			continue
		}
		if err := Measure(ctx, v, addr, p, env, emit); err != nil {
			skipped[v] = err.Error()
		}
	}
	return skipped
}

// Row is one measured cell.
type Row struct {
	Transport   string  `json:"transport"`
	Mode        string  `json:"mode"` // "pingpong", "stream" or "read"
	Size        int     `json:"size"`
	Concurrency int     `json:"concurrency"`
	Ops         int     `json:"ops"`
	MBps        float64 `json:"mbps"` // payload bytes (one way) per second / 1e6
	P50         float64 `json:"p50_us"`
	P99         float64 `json:"p99_us"`
	Err         string  `json:"err,omitempty"`
}

// Plan is what a client measures.
type Plan struct {
	Sizes       []int
	Concurrency []int
	// Duration of each cell; a cell makes at least MinOps operations.
	Duration time.Duration
	MinOps   int
}

// Measure dials addr with variant and runs the plan, reporting each row
// to emit as it is measured.
func Measure(ctx context.Context, variant, addr string, p Plan, env Env, emit func(Row)) error {
	tr, err := New(variant, env)
	if err != nil {
		return err
	}
	c, err := tr.Dial(ctx, addr, clientID, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, size := range p.Sizes {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i)
		}
		for _, conc := range p.Concurrency {
			emit(pingPong(ctx, c, variant, payload, conc, p))
			emit(stream(ctx, c, variant, payload, conc, p))
			emit(readBulk(ctx, c, variant, size, conc, p))
		}
	}
	return nil
}

func pingPong(ctx context.Context, c transport.Conn, variant string, payload []byte, conc int, p Plan) Row {
	row := Row{Transport: variant, Mode: "pingpong", Size: len(payload), Concurrency: conc}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	start := time.Now()
	deadline := start.Add(p.Duration)
	minEach := max((p.MinOps+conc-1)/conc, 1) // at least MinOps in all
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			// Two clock reads per round trip, as in bench/cping: the
			// start of one is also the end-of-run check.
			for n := 0; ; n++ {
				t0 := time.Now()
				if n >= minEach && !t0.Before(deadline) {
					break
				}
				resp, err := c.Request(ctx, pathEcho, payload)
				if err == nil && len(resp) != len(payload) {
					err = fmt.Errorf("echo of %d bytes came back as %d", len(payload), len(resp))
				}
				if err != nil {
					mu.Lock()
					firstErr = cmp(firstErr, err)
					mu.Unlock()
					break
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		row.Err = firstErr.Error()
	}
	row.Ops = len(lat)
	if len(lat) == 0 {
		return row
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	row.P50 = us(lat[len(lat)/2])
	row.P99 = us(lat[len(lat)*99/100])
	row.MBps = float64(len(lat)*len(payload)) / took.Seconds() / 1e6
	return row
}

func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func sunk(ctx context.Context, c transport.Conn) (uint64, error) {
	b, err := c.Request(ctx, pathCount, nil)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("count reply of %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

var (
	bulkOnce   sync.Once
	bulkMem    []byte
	bulkMapped bool // bulkMem is an mmap, not Go memory
)

// bulkSrc is what the server's bulk reads serve: the largest size measured,
// mapped outside the Go heap so that rdma may register it (the GC never
// moves it) and mapped only by a process that serves reads.
func bulkSrc() []byte {
	bulkOnce.Do(func() {
		m, err := syscall.Mmap(-1, 0, BulkSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		bulkMem, bulkMapped = m, err == nil
		if err != nil {
			bulkMem = make([]byte, BulkSize)
		}
	})
	return bulkMem
}

// bulkSegments offers bulkSrc to rdma's one-sided reads as segment 0, the
// segment readBulk's references name.
func bulkSegments() []rdma.Segment {
	src := bulkSrc()
	if !bulkMapped {
		return nil // Go memory may move: never handed to the NIC
	}
	return []rdma.Segment{{ID: 0, Base: unsafe.Pointer(&src[0]), Len: uint64(len(src))}}
}

// readBulk reads size-byte ranges with ReadRemote back to back from conc
// goroutines, each into its own reused buffer: the transport's bulk path.
func readBulk(ctx context.Context, c transport.Conn, variant string, size, conc int, p Plan) Row {
	row := Row{Transport: variant, Mode: "read", Size: size, Concurrency: conc}
	if size > BulkSize {
		row.Err = fmt.Sprintf("reads above %d bytes are not served", BulkSize)
		return row
	}
	var ops atomic.Int64
	var errOnce sync.Once
	start := time.Now()
	deadline := start.Add(p.Duration)
	minEach := max((p.MinOps+conc-1)/conc, 1)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			dst := make([]byte, size)
			for n := 0; n < minEach || time.Now().Before(deadline); n++ {
				if err := c.ReadRemote(ctx, transport.RemoteRef{Length: uint64(size)}, dst); err != nil {
					errOnce.Do(func() { row.Err = err.Error() })
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	row.Ops = int(ops.Load())
	row.MBps = float64(row.Ops) * float64(size) / time.Since(start).Seconds() / 1e6
	return row
}

// stream sends one-way messages back to back from conc goroutines until
// the cell's time is up, then waits until the server has counted every
// byte: the time includes draining the queues, so the rate is delivered
// bytes, not queued ones.
func stream(ctx context.Context, c transport.Conn, variant string, payload []byte, conc int, p Plan) Row {
	row := Row{Transport: variant, Mode: "stream", Size: len(payload), Concurrency: conc}
	base, err := sunk(ctx, c)
	if err != nil {
		row.Err = err.Error()
		return row
	}
	var sent atomic.Uint64
	var ops atomic.Int64
	var errOnce sync.Once
	start := time.Now()
	deadline := start.Add(p.Duration)
	minEach := max((p.MinOps+conc-1)/conc, 1) // at least MinOps in all
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for n := 0; n < minEach || time.Now().Before(deadline); n++ {
				if err := c.Send(ctx, pathSink, payload); err != nil {
					errOnce.Do(func() { row.Err = err.Error() })
					return
				}
				sent.Add(uint64(len(payload)))
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	want := base + sent.Load()
	for {
		got, err := sunk(ctx, c)
		if err != nil {
			row.Err = err.Error()
			return row
		}
		if got >= want {
			break
		}
		if time.Since(deadline) > time.Minute {
			row.Err = fmt.Sprintf("the server counted %d of %d bytes a minute after the last send", got-base, sent.Load())
			return row
		}
		time.Sleep(50 * time.Microsecond)
	}
	took := time.Since(start)
	row.Ops = int(ops.Load())
	row.MBps = float64(sent.Load()) / took.Seconds() / 1e6
	return row
}
