//go:build linux && cgo && dpdk

package dpdk

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
	"github.com/fluxon-dev/fluxon/internal/netlab"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// BenchmarkRoundTrip64Veth compares 64-byte request/reply round trips over
// this transport (net_af_packet) with the tcp transport over the same veth
// between two network namespaces, in one run; BenchmarkStream64Veth does the
// same for one-way 64-byte messages sent back to back (many in flight), the
// clock stopping once the server has handled the last one:
//
//	go test -tags dpdk -run '^$' -bench 64Veth ./services/transport/dpdk
//
// FLUXON_DPDK_PMD=af_xdp runs dpdk over net_af_xdp instead of net_af_packet.
//
// The parent makes the namespaces; a server child (h2) listens on tcp; a
// client child (h1) runs the tcp sub-benchmark, then asks the server to
// open its DPDK port, opens its own and runs the dpdk one, reporting msgs/s
// and dpdk's ratio to tcp. The ports open only after tcp is measured: a
// net_af_packet port sees every frame on its veth, so while it is open
// each TCP segment is also copied into its ring, a tax on tcp that is no
// part of what tcp costs. Each process starts its own EAL (distinct
// --file-prefix).
const (
	benchRole = "FLUXON_DPDK_BENCH_ROLE"
	benchAddr = "FLUXON_DPDK_BENCH_ADDRS"
	tcpPort   = "7411"
	// benchSpin keeps each process's poller polling through a round trip
	// (the default 50µs spin parks between request and reply).
	benchSpin = 2 * time.Millisecond
)

var (
	benchSrv = transport.Identity{ClusterName: "bench", InstanceKey: "owner", StartTime: time.Unix(1, 0), Role: "owner"}
	benchCli = transport.Identity{ClusterName: "bench", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "external"}
)

func BenchmarkRoundTrip64Veth(b *testing.B) { vethBench(b, "BenchmarkRoundTrip64Veth", roundTrip) }

func BenchmarkStream64Veth(b *testing.B) { vethBench(b, "BenchmarkStream64Veth", stream) }

func vethBench(b *testing.B, name string, body func(b *testing.B, c transport.Conn, msg []byte)) {
	switch os.Getenv(benchRole) {
	case "server":
		benchServer(b)
		return
	case "client":
		benchClient(b, body)
		return
	}
	if err := netlab.Available(); err != nil {
		b.Skip(err)
	}
	lab := netlab.NewChain(b, 2)
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	srv := h2.Command(os.Args[0], "-test.run=^$", "-test.bench=^"+name+"$", "-test.benchtime=1x")
	srv.Env = append(os.Environ(), benchRole+"=server", "FLUXON_DPDK_IFACE=l1")
	out, err := srv.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}()
	// The server prints "READY" once it listens on tcp.
	buf := make([]byte, 4096)
	var line string
	for !strings.Contains(line, "READY\n") {
		n, err := out.Read(buf)
		if err != nil {
			b.Fatalf("server: %v (%s)", err, line)
		}
		line += string(buf[:n])
	}
	addrs := lab.ChainAddr(1, false) + ":" + tcpPort
	cli := h1.Command(os.Args[0], "-test.run=^$", "-test.bench=^"+name+"$",
		"-test.benchtime="+benchTime())
	cli.Env = append(os.Environ(), benchRole+"=client", benchAddr+"="+addrs, "FLUXON_DPDK_IFACE=r1")
	res, err := cli.CombinedOutput()
	fmt.Fprintf(os.Stdout, "%s", res)
	if err != nil {
		b.Fatalf("client: %v", err)
	}
}

// benchPMD is the poll-mode driver both ends use on the veth:
// FLUXON_DPDK_PMD=af_xdp for net_af_xdp, af_packet otherwise.
func benchPMD() string {
	if os.Getenv("FLUXON_DPDK_PMD") == "af_xdp" {
		return "af_xdp"
	}
	return "af_packet"
}

func benchDevice() string { return "net_" + benchPMD() + "0" }

func benchTime() string {
	if f := os.Getenv("FLUXON_DPDK_BENCHTIME"); f != "" {
		return f
	}
	return "2s"
}

func benchEndpoint(b *testing.B, lcore int) *Endpoint {
	iface := os.Getenv("FLUXON_DPDK_IFACE")
	// Each process's EAL lcore on a core of its own (threads it starts
	// inherit its affinity): two processes pinned to one core would take
	// turns by the scheduler's time slice.
	e := cdpdk.EAL{Lcore: lcore, NoHuge: true, MemoryMB: 256, FilePrefix: fmt.Sprintf("flxbench%d", os.Getpid()),
		VDevs: []string{benchDevice() + ",iface=" + iface}}
	ep, err := OpenDPDK(e, benchDevice(), EndpointConfig{PollSpin: benchSpin})
	if err != nil {
		b.Fatal(err)
	}
	return ep
}

// handled counts the one-way messages the server has handled, over every
// connection and transport; "/sync" with a count as payload answers once
// handled reaches it.
var handled atomic.Uint64

// echo is the server's handler; openDPDK answers "/dpdk" with the address
// of its DPDK listener, opened on the first call.
func echo(openDPDK func() (string, error)) transport.Handler {
	return transport.HandlerFuncs{
		Request: func(ctx context.Context, _ transport.Identity, path string, p []byte) ([]byte, error) {
			switch {
			case path == "/dpdk":
				a, err := openDPDK()
				return []byte(a), err
			case transport.IsOneWay(ctx):
				handled.Add(1)
			case path == "/sync":
				want := binary.LittleEndian.Uint64(p)
				for handled.Load() < want {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
			return p, nil
		},
	}
}

func roundTrip(b *testing.B, c transport.Conn, msg []byte) {
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.Request(ctx, "/echo", msg); err != nil {
			b.Fatal(err)
		}
	}
}

// sent is the client's one-way messages over every sub-benchmark, the
// count the server's handled must reach.
var sent uint64

func stream(b *testing.B, c transport.Conn, msg []byte) {
	ctx := context.Background()
	for b.Loop() {
		if err := c.Send(ctx, "/stream", msg); err != nil {
			b.Fatal(err)
		}
		sent++
	}
	var want [8]byte
	binary.LittleEndian.PutUint64(want[:], sent)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.Request(sctx, "/sync", want[:]); err != nil {
		b.Fatal(err)
	}
}

func benchServer(b *testing.B) {
	ctx := context.Background()
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	var h transport.Handler
	open := sync.OnceValues(func() (string, error) {
		dt, err := New(Options{Options: o, Endpoints: []*Endpoint{benchEndpoint(b, 0)}})
		if err != nil {
			return "", err
		}
		dl, err := dt.Listen(ctx, "dpdk://"+benchDevice()+":1", benchSrv, h, nil)
		if err != nil {
			return "", err
		}
		return dl.Addr(), nil
	})
	h = echo(open)
	tt, err := tcp.New(tcp.Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tt.Listen(ctx, "0.0.0.0:"+tcpPort, benchSrv, h, nil); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("READY\n")
	time.Sleep(10 * time.Minute) // the parent kills it
}

func benchClient(b *testing.B, body func(b *testing.B, c transport.Conn, msg []byte)) {
	tcpAddr := os.Getenv(benchAddr)
	ctx := context.Background()
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	tt, err := tcp.New(tcp.Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 64)
	var tcpRate float64
	run := func(name string, tr transport.Transport, addr string) {
		b.Run(name, func(b *testing.B) {
			c, err := tr.Dial(ctx, addr, benchCli, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ReportAllocs()
			body(b, c, msg)
			rate := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "msgs/s")
			if name == "tcp" {
				tcpRate = rate
			} else if tcpRate > 0 {
				b.ReportMetric(rate/tcpRate, "dpdk/tcp")
			}
		})
	}
	run("tcp", tt, tcpAddr)
	c, err := tt.Dial(ctx, tcpAddr, benchCli, nil)
	if err != nil {
		b.Fatal(err)
	}
	addr, err := c.Request(ctx, "/dpdk", nil)
	_ = c.Close()
	if err != nil {
		b.Fatal(err)
	}
	dt, err := New(Options{Options: o, Endpoints: []*Endpoint{benchEndpoint(b, 1)}})
	if err != nil {
		b.Fatal(err)
	}
	run("dpdk-"+benchPMD(), dt, string(addr))
}
