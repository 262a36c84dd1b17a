package quic

import (
	"context"
	"net"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// factory builds the QUIC transport for the suite. The raw streams the
// suite speaks the protocol over by hand (malformed frames, silent and
// dying peers) are QUIC streams too, made by the same transport's TLS and
// QUIC settings without the framed engine on top.
func factory(t *testing.T, o transport.Options) transporttest.Setup {
	tr, err := New(Options{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	return transporttest.Setup{
		Transport: tr,
		Addr:      "127.0.0.1:0",
		RawDial: func(ctx context.Context, addr string) (net.Conn, error) {
			return tr.dialStream(ctx, addr)
		},
		RawListen: func(addr string) (net.Listener, error) {
			return tr.listenStreams(context.Background(), addr)
		},
	}
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, factory)
}
