//go:build linux && cgo && dpdk

package dpdk

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
	"github.com/fluxon-dev/fluxon/internal/netlab"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// BenchmarkRoundTrip64Veth compares 64-byte request/reply round trips over
// this transport (net_af_packet) with the tcp transport over the same veth
// between two network namespaces, in one run:
//
//	go test -tags dpdk -run '^$' -bench RoundTrip64Veth ./services/transport/dpdk
//
// The parent makes the namespaces; a server child (h2) listens on both
// transports; a client child (h1) runs the tcp and then the dpdk
// sub-benchmark, reporting msgs/s and dpdk's ratio to tcp. Each process
// starts its own EAL (distinct --file-prefix).
const (
	benchRole = "FLUXON_DPDK_BENCH_ROLE"
	benchAddr = "FLUXON_DPDK_BENCH_ADDRS"
	tcpPort   = "7411"
	// benchSpin keeps each EAL thread polling through a round trip (the
	// default 50µs spin parks between request and reply: about 4x slower).
	benchSpin = 2 * time.Millisecond
)

var (
	benchSrv = transport.Identity{ClusterName: "bench", InstanceKey: "owner", StartTime: time.Unix(1, 0), Role: "owner"}
	benchCli = transport.Identity{ClusterName: "bench", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "external"}
)

func BenchmarkRoundTrip64Veth(b *testing.B) {
	switch os.Getenv(benchRole) {
	case "server":
		benchServer(b)
		return
	case "client":
		benchClient(b)
		return
	}
	if err := netlab.Available(); err != nil {
		b.Skip(err)
	}
	lab := netlab.NewChain(b, 2)
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	srv := h2.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkRoundTrip64Veth$", "-test.benchtime=1x")
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
	// The server prints "ADDRS <dpdk address> <tcp address>" when ready.
	buf := make([]byte, 4096)
	var line string
	for !strings.Contains(line, "\n") || !strings.Contains(line, "ADDRS") {
		n, err := out.Read(buf)
		if err != nil {
			b.Fatalf("server: %v (%s)", err, line)
		}
		line += string(buf[:n])
	}
	i := strings.Index(line, "ADDRS ")
	addrs := strings.Fields(line[i+6:])[:1][0] + " " + lab.ChainAddr(1, false) + ":" + tcpPort
	cli := h1.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkRoundTrip64Veth$",
		"-test.benchtime="+benchTime())
	cli.Env = append(os.Environ(), benchRole+"=client", benchAddr+"="+addrs, "FLUXON_DPDK_IFACE=r1")
	res, err := cli.CombinedOutput()
	fmt.Fprintf(os.Stdout, "%s", res)
	if err != nil {
		b.Fatalf("client: %v", err)
	}
}

func benchTime() string {
	if f := os.Getenv("FLUXON_DPDK_BENCHTIME"); f != "" {
		return f
	}
	return "2s"
}

func benchEndpoint(b *testing.B, lcore int) *Endpoint {
	iface := os.Getenv("FLUXON_DPDK_IFACE")
	// Each process's EAL thread on a core of its own: two spinning lcores
	// pinned to one core would take turns by the scheduler's time slice.
	e := cdpdk.EAL{Lcore: lcore, NoHuge: true, MemoryMB: 256, FilePrefix: fmt.Sprintf("flxbench%d", os.Getpid()),
		VDevs: []string{"net_af_packet0,iface=" + iface}}
	ep, err := OpenDPDK(e, "net_af_packet0", EndpointConfig{PollSpin: benchSpin})
	if err != nil {
		b.Fatal(err)
	}
	return ep
}

func echo() transport.Handler {
	return transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, _ string, p []byte) ([]byte, error) { return p, nil },
	}
}

func benchServer(b *testing.B) {
	ctx := context.Background()
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	dt, err := New(Options{Options: o, Endpoints: []*Endpoint{benchEndpoint(b, 0)}})
	if err != nil {
		b.Fatal(err)
	}
	dl, err := dt.Listen(ctx, "dpdk://net_af_packet0:1", benchSrv, echo(), nil)
	if err != nil {
		b.Fatal(err)
	}
	tt, err := tcp.New(tcp.Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tt.Listen(ctx, "0.0.0.0:"+tcpPort, benchSrv, echo(), nil); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("ADDRS %s\n", dl.Addr())
	time.Sleep(10 * time.Minute) // the parent kills it
}

func benchClient(b *testing.B) {
	addrs := strings.Fields(os.Getenv(benchAddr))
	ctx := context.Background()
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	tt, err := tcp.New(tcp.Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	dt, err := New(Options{Options: o, Endpoints: []*Endpoint{benchEndpoint(b, 1)}})
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
			for b.Loop() {
				if _, err := c.Request(ctx, "/echo", msg); err != nil {
					b.Fatal(err)
				}
			}
			rate := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "msgs/s")
			if name == "tcp" {
				tcpRate = rate
			} else if tcpRate > 0 {
				b.ReportMetric(rate/tcpRate, "dpdk/tcp")
			}
		})
	}
	run("tcp", tt, addrs[1])
	run("dpdk-af_packet", dt, addrs[0])
}
