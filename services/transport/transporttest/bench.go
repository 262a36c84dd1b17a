//go:build unix

package transporttest

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// BenchKind is one transport a benchmark compares: a name and how to make
// the server's and the client's transport (often the same one).
type BenchKind struct {
	Name string
	New  func(b *testing.B) (srv, cli transport.Transport)
}

// Bench identities.
var (
	BenchServer = transport.Identity{ClusterName: "bench", InstanceKey: "owner", StartTime: time.Unix(1, 0), Role: "owner"}
	BenchClient = transport.Identity{ClusterName: "bench", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "external"}
)

// CPUTime is this process's user+system CPU time.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Measure runs body b.N times and returns ns per op, reporting the
// process's CPU per op (both ends, when they run in this process).
func Measure(b *testing.B, body func()) float64 {
	b.ReportAllocs()
	cpu0 := CPUTime()
	b.ResetTimer()
	for b.Loop() {
		body()
	}
	b.StopTimer()
	b.ReportMetric(float64(CPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

// BenchPair listens with srv on loopback, serving an echo handler (inline
// on the connection's reader for path "/inline") and bulk reads from src,
// and dials it with cli.
func BenchPair(b testing.TB, srv, cli transport.Transport, src []byte) transport.Conn {
	b.Helper()
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, _ string, p []byte) ([]byte, error) { return p, nil },
		Inline:  func(path string) bool { return path == "/inline" },
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return src[ref.Offset : ref.Offset+ref.Length], nil, nil
		},
	}
	ctx := context.Background()
	l, err := srv.Listen(ctx, "127.0.0.1:0", BenchServer, h, nil)
	if err != nil {
		b.Fatal(err)
	}
	c, err := cli.Dial(ctx, l.Addr(), BenchClient, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Close()
		_ = l.Close()
	})
	return c
}

// BenchRoundTrip runs one size-byte request and its reply at a time over
// every kind; each kind after the first reports time/<first>.
func BenchRoundTrip(b *testing.B, kinds []BenchKind, size int) {
	var ref float64
	for i, k := range kinds {
		b.Run(k.Name, func(b *testing.B) {
			srv, cli := k.New(b)
			c := BenchPair(b, srv, cli, nil)
			msg := make([]byte, size)
			ctx := context.Background()
			ns := Measure(b, func() {
				if _, err := c.Request(ctx, "/echo", msg); err != nil {
					b.Fatal(err)
				}
			})
			if i == 0 {
				ref = ns
			} else if ref > 0 {
				b.ReportMetric(ns/ref, "time/"+kinds[0].Name)
			}
		})
	}
}

// BenchBulkRead pulls a size-byte range into a caller buffer over every
// kind; each kind after the first reports throughput/<first>.
func BenchBulkRead(b *testing.B, kinds []BenchKind, size int) {
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i * 7)
	}
	var ref float64
	for i, k := range kinds {
		b.Run(k.Name, func(b *testing.B) {
			srv, cli := k.New(b)
			c := BenchPair(b, srv, cli, src)
			dst := make([]byte, size)
			rr := transport.RemoteRef{Length: uint64(size)}
			ctx := context.Background()
			b.SetBytes(int64(size))
			ns := Measure(b, func() {
				if err := c.ReadRemote(ctx, rr, dst); err != nil {
					b.Fatal(err)
				}
			})
			if i == 0 {
				ref = ns
			} else if ref > 0 {
				b.ReportMetric(ref/ns, "throughput/"+kinds[0].Name)
			}
		})
	}
}
