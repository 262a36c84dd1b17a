package dpdk

import (
	"net"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/dpdk/rel"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// memFactory runs the transport over two endpoints of an in-memory
// segment: listeners on "a", dials from "b". With faults, every
// connection's datagrams are lost, duplicated, reordered and corrupted by
// a seeded injector (this kernel has no sch_netem, so tc netem cannot).
func memFactory(f rel.Faults) transporttest.Factory {
	return func(t *testing.T, o transport.Options) transporttest.Setup {
		hub := NewMemHub()
		cfg := EndpointConfig{Faults: f}
		a, b := hub.Endpoint("a", cfg), hub.Endpoint("b", cfg)
		t.Cleanup(func() {
			_ = a.Close()
			_ = b.Close()
		})
		tr, err := New(Options{Options: o, Endpoints: []*Endpoint{a, b}})
		if err != nil {
			t.Fatal(err)
		}
		return setupFor(tr, "dpdk://a:0")
	}
}

func setupFor(tr *Transport, addr string) transporttest.Setup {
	return transporttest.Setup{
		Transport: tr,
		Addr:      addr,
		RawDial:   tr.DialRaw,
		RawListen: func(addr string) (net.Listener, error) { return tr.ListenRaw(addr) },
	}
}

func TestConformanceMem(t *testing.T) {
	transporttest.Run(t, memFactory(rel.Faults{}))
}

func TestConformanceMemFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault-injected run is long")
	}
	transporttest.Run(t, memFactory(rel.Faults{Loss: 0.02, Duplicate: 0.02, Reorder: 0.05, Corrupt: 0.005, Seed: 77}))
}
