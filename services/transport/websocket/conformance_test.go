package websocket

import (
	"context"
	"net"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// factory builds the WebSocket transport for the suite, under a path
// prefix so that the prefix is exercised by every test. The raw streams
// are real WebSockets (the endpoint, the subprotocol, binary messages), so
// the malformed-frame tests inject their bytes where a peer would.
func factory(t *testing.T, o transport.Options) transporttest.Setup {
	tr, err := New(Options{Options: o, PathPrefix: "/suite"})
	if err != nil {
		t.Fatal(err)
	}
	return transporttest.Setup{
		Transport: tr,
		Addr:      "127.0.0.1:0",
		RawDial: func(ctx context.Context, addr string) (net.Conn, error) {
			return tr.dialWS(ctx, addr)
		},
		RawListen: func(addr string) (net.Listener, error) {
			return tr.listenWS(context.Background(), addr)
		},
	}
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, factory)
}

// TestConformanceTLS runs the suite over wss (certificate and CA files),
// where read interrupts must stay resumable above TLS too.
func TestConformanceTLS(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, o transport.Options) transporttest.Setup {
		certFile, keyFile := writeCert(t, t.TempDir())
		tr, err := New(Options{Options: o, CertFile: certFile, KeyFile: keyFile, CAFile: certFile})
		if err != nil {
			t.Fatal(err)
		}
		return transporttest.Setup{
			Transport: tr,
			Addr:      "127.0.0.1:0",
			RawDial: func(ctx context.Context, addr string) (net.Conn, error) {
				return tr.dialWS(ctx, addr)
			},
			RawListen: func(addr string) (net.Listener, error) {
				return tr.listenWS(context.Background(), addr)
			},
		}
	})
}
