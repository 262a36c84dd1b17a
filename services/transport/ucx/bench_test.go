//go:build ucx

package ucx

import (
	"log/slog"
	"os"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
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
	// One transport of each, made once: a UCX transport owns a worker
	// and its progress thread.
	o := transport.Options{Log: slog.New(slog.DiscardHandler)}
	tcpT, err := tcp.New(tcp.Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	ucxT, err := New(Options{Options: o})
	if err != nil {
		b.Fatal(err)
	}
	kinds := []transporttest.BenchKind{
		{Name: tcp.Name, New: func(*testing.B) (transport.Transport, transport.Transport) { return tcpT, tcpT }},
		{Name: "ucx", New: func(*testing.B) (transport.Transport, transport.Transport) { return ucxT, ucxT }},
	}
	b.Logf("UCX_TLS=%s", os.Getenv("UCX_TLS"))
	transporttest.BenchBulkRead(b, kinds, 16<<20)
}
