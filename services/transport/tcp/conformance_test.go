package tcp

import (
	"context"
	"net"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// factory builds the TCP transport in one reactor mode for the suite.
func factory(mode ReactorMode) transporttest.Factory {
	return func(t *testing.T, o transport.Options) transporttest.Setup {
		tr, err := New(Options{Options: o, Reactor: mode})
		if err != nil {
			t.Fatal(err)
		}
		return transporttest.Setup{
			Transport: tr,
			Addr:      "127.0.0.1:0",
			RawDial: func(ctx context.Context, addr string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			},
			RawListen: func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) },
		}
	}
}

func TestConformanceEventDriven(t *testing.T) {
	transporttest.Run(t, factory(ReactorEventDriven))
}

func TestConformanceBusyPoll(t *testing.T) {
	transporttest.Run(t, factory(ReactorBusyPoll))
}
