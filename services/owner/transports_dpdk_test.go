//go:build linux && cgo && dpdk

package owner

import (
	"strings"
	"testing"

	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
)

// With network.dpdk set, an owner built with the dpdk tag opens the port
// (net_ring0: DPDK's in-process loopback, no NIC, no hugepages) and
// advertises dpdk on both nodes: the RPC node at the configured service
// port, the KV node at another, both with the port's MAC.
func TestOwnerOffersConfiguredDPDK(t *testing.T) {
	o, logs := startClusterOwner(t, `  transports: [dpdk, tcp]
  dpdk:
    address: dpdk://net_ring0:7100
    vdevs: [net_ring0]
    no_huge: true
    memory: 128MiB
`)
	for _, ep := range []string{rpc.EndpointKey, KVEndpointKey} {
		e, err := multi.Parse(o.Endpoints[ep])
		if err != nil {
			t.Fatal(err)
		}
		d, ok := e["dpdk"]
		if !ok || !strings.HasPrefix(d, "dpdk://net_ring0/") {
			t.Fatalf("endpoint %s = %v, want dpdk on net_ring0 with its MAC\n%s", ep, e, logs.String())
		}
		if _, ok := e["tcp"]; !ok {
			t.Errorf("endpoint %s = %v lacks tcp", ep, e)
		}
		if ep == rpc.EndpointKey && !strings.HasSuffix(d, ":7100") {
			t.Errorf("rpc dpdk endpoint %s, want service port 7100 (network.dpdk.address)", d)
		}
	}
}
