package quic

import (
	"context"
	"log/slog"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// The benchmarks run the same work over the tcp transport (event_driven,
// the default) and then over quic, in one run, and report quic's ratio to
// tcp:
//
//	go test -run '^$' -bench . -benchtime 2s ./services/transport/quic
//
// ns/op is per round trip or per 16 MiB read. Both transports use the
// framed engine, so the ratio is the cost of QUIC (user-space ACKs,
// congestion control, TLS 1.3 encryption, UDP packets of ~1.4 KB) against
// kernel TCP on loopback.

const (
	rttPayload = 64
	bulkSize   = 16 << 20
)

// benchPair listens and dials with tr, serving an echo handler and reads
// from src.
func benchPair(b *testing.B, tr transport.Transport, src []byte) transport.Conn {
	b.Helper()
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, _ string, p []byte) ([]byte, error) { return p, nil },
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return src[ref.Offset : ref.Offset+ref.Length], nil, nil
		},
	}
	ctx := context.Background()
	l, err := tr.Listen(ctx, "127.0.0.1:0", testServer, h, nil)
	if err != nil {
		b.Fatal(err)
	}
	c, err := tr.Dial(ctx, l.Addr(), testClient, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Close()
		_ = l.Close()
	})
	return c
}

// benchTransports are tcp (the reference) and quic, in that order.
func benchTransports(b *testing.B) []transport.Transport {
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	t, err := tcp.New(tcp.Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	q, err := New(Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	return []transport.Transport{t, q}
}

func perOp(b *testing.B, body func()) float64 {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		body()
	}
	b.StopTimer()
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

// BenchmarkRoundTrip64: one 64-byte request and its 64-byte reply at a
// time on one connection. quic reports time/tcp.
func BenchmarkRoundTrip64(b *testing.B) {
	var ref float64
	for _, tr := range benchTransports(b) {
		b.Run(tr.Name(), func(b *testing.B) {
			c := benchPair(b, tr, nil)
			msg := make([]byte, rttPayload)
			ctx := context.Background()
			ns := perOp(b, func() {
				if _, err := c.Request(ctx, "/echo", msg); err != nil {
					b.Fatal(err)
				}
			})
			if tr.Name() == tcp.Name {
				ref = ns
			} else if ref > 0 {
				b.ReportMetric(ns/ref, "time/tcp")
			}
		})
	}
}

// BenchmarkBulkRead16MiB: pull a 16 MiB range into a caller buffer. quic
// reports throughput/tcp.
func BenchmarkBulkRead16MiB(b *testing.B) {
	src := make([]byte, bulkSize)
	for i := range src {
		src[i] = byte(i * 7)
	}
	var ref float64
	for _, tr := range benchTransports(b) {
		b.Run(tr.Name(), func(b *testing.B) {
			c := benchPair(b, tr, src)
			dst := make([]byte, bulkSize)
			rr := transport.RemoteRef{Length: bulkSize}
			ctx := context.Background()
			b.SetBytes(bulkSize)
			ns := perOp(b, func() {
				if err := c.ReadRemote(ctx, rr, dst); err != nil {
					b.Fatal(err)
				}
			})
			if tr.Name() == tcp.Name {
				ref = ns
			} else if ref > 0 {
				b.ReportMetric(ref/ns, "throughput/tcp")
			}
		})
	}
}
