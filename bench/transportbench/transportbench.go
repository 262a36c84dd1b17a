// Package transportbench measures the transports (tcp, tcp busy-poll,
// quic, websocket, ucx) with the same load: ping-pong latency (a request
// of N bytes echoed back) and streaming throughput (one-way messages of N
// bytes sent back to back, timed until the server has received them all),
// at a given concurrency over one connection. fluxon-bench transport runs
// it over loopback or between two network namespaces, next to iperf3 and
// a C ping-pong (bench/cping) on the same link.
package transportbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/quic"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/ucx"
	"github.com/fluxon-dev/fluxon/services/transport/websocket"
)

// Paths the bench server serves.
const (
	pathEcho  = "/bench/echo"
	pathSink  = "/bench/sink"
	pathCount = "/bench/count"
)

// DefaultVariants is every variant, in the order tables list them.
var DefaultVariants = []string{"tcp", "tcp-busypoll", "quic", "websocket", "ucx"}

// DefaultSizes are the message sizes of the issue: 64 B to 16 MiB.
var DefaultSizes = []int{64, 4 << 10, 64 << 10, 1 << 20, 16 << 20}

// ErrUnknownVariant: a variant name New does not know.
var ErrUnknownVariant = errors.New("transportbench: unknown transport variant")

// New builds a variant: a transport name, or tcp-busypoll (tcp with the
// busy-poll reactor on both sides).
func New(variant string, log *slog.Logger) (transport.Transport, error) {
	o := transport.Options{Log: log}
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
	lns     []transport.Listener
	sunk    atomic.Uint64
}

// Serve listens for each variant on host (ports the kernel picks).
func Serve(ctx context.Context, host string, variants []string, log *slog.Logger) (*Server, error) {
	s := &Server{Addrs: map[string]string{}, Skipped: map[string]string{}}
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, path string, p []byte) ([]byte, error) {
			switch path {
			case pathEcho:
				return p, nil
			case pathSink:
				s.sunk.Add(uint64(len(p)))
				return nil, nil
			case pathCount:
				return binary.BigEndian.AppendUint64(nil, s.sunk.Load()), nil
			}
			return nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: path}
		},
		// Every path is a counter or returns its input: inline is safe,
		// and it is how a latency-sensitive member serves.
		Inline: func(string) bool { return true },
		// Bulk reads are served from one buffer, zero copy on this side,
		// as an owner serves a pinned value.
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			if ref.Offset > uint64(len(bulkSrc)) || ref.Length > uint64(len(bulkSrc))-ref.Offset {
				return nil, nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: "range outside the bench buffer"}
			}
			return bulkSrc[ref.Offset : ref.Offset+ref.Length], func() {}, nil
		},
	}
	for _, v := range variants {
		tr, err := New(v, log)
		if err != nil {
			s.Skipped[v] = err.Error()
			continue
		}
		ln, err := tr.Listen(ctx, host+":0", serverID, h, nil)
		if err != nil {
			s.Skipped[v] = err.Error()
			continue
		}
		s.lns = append(s.lns, ln)
		s.Addrs[v] = ln.Addr()
	}
	return s, nil
}

// Close closes the listeners.
func (s *Server) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
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
func Measure(ctx context.Context, variant, addr string, p Plan, log *slog.Logger, emit func(Row)) error {
	tr, err := New(variant, log)
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
			for n := 0; n < minEach || time.Now().Before(deadline); n++ {
				t0 := time.Now()
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

// bulkSrc is what the server's bulk reads serve: the largest size measured.
var bulkSrc = make([]byte, BulkSize)

// readBulk reads size-byte ranges with ReadRemote back to back from conc
// goroutines, each into its own reused buffer: the transport's bulk path.
func readBulk(ctx context.Context, c transport.Conn, variant string, size, conc int, p Plan) Row {
	row := Row{Transport: variant, Mode: "read", Size: size, Concurrency: conc}
	if size > len(bulkSrc) {
		row.Err = fmt.Sprintf("reads above %d bytes are not served", len(bulkSrc))
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
