package quic

import (
	"log/slog"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
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

// benchKinds are tcp (the reference) and quic, in that order.
var benchKinds = []transporttest.BenchKind{
	{Name: "tcp", New: func(b *testing.B) (transport.Transport, transport.Transport) {
		t, err := tcp.New(tcp.Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}})
		if err != nil {
			b.Fatal(err)
		}
		return t, t
	}},
	{Name: "quic", New: func(b *testing.B) (transport.Transport, transport.Transport) {
		q, err := New(Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}})
		if err != nil {
			b.Fatal(err)
		}
		return q, q
	}},
}

// BenchmarkRoundTrip64: one 64-byte request and its 64-byte reply at a
// time on one connection. quic reports time/tcp.
func BenchmarkRoundTrip64(b *testing.B) { transporttest.BenchRoundTrip(b, benchKinds, rttPayload) }

// BenchmarkBulkRead16MiB: pull a 16 MiB range into a caller buffer. quic
// reports throughput/tcp.
func BenchmarkBulkRead16MiB(b *testing.B) { transporttest.BenchBulkRead(b, benchKinds, bulkSize) }
