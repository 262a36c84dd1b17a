//go:build unix

package websocket

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
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

// benchKinds are the transports compared, the TCP peer first.
var benchKinds = []transporttest.BenchKind{
	{Name: "tcp", New: func(b *testing.B) (transport.Transport, transport.Transport) {
		t, err := tcp.New(tcp.Options{Options: benchOpts()})
		if err != nil {
			b.Fatal(err)
		}
		return t, t
	}},
	{Name: "websocket", New: func(b *testing.B) (transport.Transport, transport.Transport) {
		t, err := New(Options{Options: benchOpts()})
		if err != nil {
			b.Fatal(err)
		}
		return t, t
	}},
	{Name: "websocket-tls", New: func(b *testing.B) (transport.Transport, transport.Transport) {
		certFile, keyFile := writeCert(b, b.TempDir())
		pem, err := os.ReadFile(certFile)
		if err != nil {
			b.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		srv, err := New(Options{Options: benchOpts(), CertFile: certFile, KeyFile: keyFile})
		if err != nil {
			b.Fatal(err)
		}
		cli, err := New(Options{Options: benchOpts(), TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
		if err != nil {
			b.Fatal(err)
		}
		return srv, cli
	}},
}

func benchOpts() transport.Options { return transport.Options{Log: slog.New(slog.DiscardHandler)} }

// BenchmarkRoundTrip64: one 64-byte request and its 64-byte reply at a
// time on one connection.
func BenchmarkRoundTrip64(b *testing.B) { transporttest.BenchRoundTrip(b, benchKinds, rttPayload) }

// BenchmarkBulkRead16MiB: pull a 16 MiB range into a caller buffer.
func BenchmarkBulkRead16MiB(b *testing.B) { transporttest.BenchBulkRead(b, benchKinds, bulkSize) }
