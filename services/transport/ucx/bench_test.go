//go:build ucx

package ucx

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// BenchmarkBulkRead16MiB pulls a 16 MiB range into a caller buffer over the
// tcp transport (the peer, measured first in the same process) and over
// this one, which reports its ratio to tcp. TestMain runs it once per
// UCX_TLS (tcp, then sm,self):
//
//	go test -tags ucx -run '^$' -bench . -benchtime 2s ./services/transport/ucx
//
// cpu-ns/op is the process's CPU (both ends) per read; it includes the UCX
// progress threads' spins.
func BenchmarkBulkRead16MiB(b *testing.B) {
	const size = 16 << 20
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i * 7)
	}
	h := transport.HandlerFuncs{
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return src[ref.Offset : ref.Offset+ref.Length], nil, nil
		},
	}
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	tcpT, err := tcp.New(tcp.Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	ucxT, err := New(Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	var floor float64
	for _, tr := range []transport.Transport{tcpT, ucxT} {
		b.Run(tr.Name(), func(b *testing.B) {
			ctx := context.Background()
			l, err := tr.Listen(ctx, "127.0.0.1:0", benchServer, h, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			c, err := tr.Dial(ctx, l.Addr(), benchClient, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			dst := make([]byte, size)
			ref := transport.RemoteRef{Length: size}
			b.SetBytes(size)
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				if err := c.ReadRemote(ctx, ref, dst); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if tr.Name() == tcp.Name {
				floor = ns
			} else if floor > 0 {
				b.ReportMetric(floor/ns, "throughput/tcp")
				b.Logf("UCX_TLS=%s: %.2fx the tcp transport's throughput", os.Getenv("UCX_TLS"), floor/ns)
			}
		})
	}
}

var (
	benchServer = transport.Identity{ClusterName: "bench", InstanceKey: "owner", StartTime: time.Unix(1, 0), Role: "owner"}
	benchClient = transport.Identity{ClusterName: "bench", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "external"}
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
