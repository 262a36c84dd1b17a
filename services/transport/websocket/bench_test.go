//go:build unix

package websocket

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// The benchmarks run the same work over the TCP transport (event_driven,
// the peer) and then over this one, plain and with TLS, in one run; each
// WebSocket result reports its ratio to the TCP result measured just
// before it:
//
//	go test -run '^$' -bench . -benchtime 2s ./services/transport/websocket
//
// ns/op is per round trip or per 16 MiB read; cpu-ns/op is the process's
// CPU time (both ends) per operation.

const (
	rttPayload = 64
	bulkSize   = 16 << 20
)

var (
	benchServer = transport.Identity{ClusterName: "bench", InstanceKey: "owner", StartTime: time.Unix(1, 0), Role: "owner"}
	benchClient = transport.Identity{ClusterName: "bench", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "external"}
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs body b.N times and returns ns per op, reporting CPU per op.
func measure(b *testing.B, body func()) float64 {
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		body()
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

// benchKinds are the transports compared, the TCP peer first.
var benchKinds = []string{"tcp", "websocket", "websocket-tls"}

// benchPair listens and dials with the transport of kind, serving an echo
// handler and reads from src.
func benchPair(b *testing.B, kind string, src []byte) transport.Conn {
	b.Helper()
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	var srv, cli transport.Transport
	var err error
	switch kind {
	case "tcp":
		srv, err = tcp.New(tcp.Options{Options: o})
		cli = srv
	case "websocket":
		srv, err = New(Options{Options: o})
		cli = srv
	case "websocket-tls":
		certFile, keyFile := writeCert(b, b.TempDir())
		pem, rerr := os.ReadFile(certFile)
		if rerr != nil {
			b.Fatal(rerr)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		srv, err = New(Options{Options: o, CertFile: certFile, KeyFile: keyFile})
		if err == nil {
			cli, err = New(Options{Options: o, TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, _ string, p []byte) ([]byte, error) { return p, nil },
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return src[ref.Offset : ref.Offset+ref.Length], nil, nil
		},
	}
	ctx := context.Background()
	l, err := srv.Listen(ctx, "127.0.0.1:0", benchServer, h, nil)
	if err != nil {
		b.Fatal(err)
	}
	c, err := cli.Dial(ctx, l.Addr(), benchClient, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Close()
		_ = l.Close()
	})
	return c
}

// BenchmarkRoundTrip64: one 64-byte request and its 64-byte reply at a
// time on one connection.
func BenchmarkRoundTrip64(b *testing.B) {
	var peer float64
	for _, kind := range benchKinds {
		b.Run(kind, func(b *testing.B) {
			c := benchPair(b, kind, nil)
			msg := make([]byte, rttPayload)
			ctx := context.Background()
			ns := measure(b, func() {
				if _, err := c.Request(ctx, "/echo", msg); err != nil {
					b.Fatal(err)
				}
			})
			if kind == "tcp" {
				peer = ns
			} else if peer > 0 {
				b.ReportMetric(ns/peer, "time/tcp")
			}
		})
	}
}

// BenchmarkBulkRead16MiB: pull a 16 MiB range into a caller buffer.
func BenchmarkBulkRead16MiB(b *testing.B) {
	src := make([]byte, bulkSize)
	for i := range src {
		src[i] = byte(i * 7)
	}
	var peer float64
	for _, kind := range benchKinds {
		b.Run(kind, func(b *testing.B) {
			c := benchPair(b, kind, src)
			dst := make([]byte, bulkSize)
			ref := transport.RemoteRef{Length: bulkSize}
			ctx := context.Background()
			b.SetBytes(bulkSize)
			ns := measure(b, func() {
				if err := c.ReadRemote(ctx, ref, dst); err != nil {
					b.Fatal(err)
				}
			})
			if kind == "tcp" {
				peer = ns
			} else if peer > 0 {
				b.ReportMetric(peer/ns, "throughput/tcp")
			}
		})
	}
}
