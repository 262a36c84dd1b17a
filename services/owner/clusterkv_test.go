package owner

import (
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/control/meta"
)

func TestAdvertisedReplacesWildcardHosts(t *testing.T) {
	for _, c := range []struct{ addr, adv, want string }{
		{"10.0.0.5:7001", "node-a", "10.0.0.5:7001"},
		{"0.0.0.0:7001", "node-a", "node-a:7001"},
		{"[::]:7001", "10.0.0.5", "10.0.0.5:7001"},
		{"[::]:7001", "fd00::5", "[fd00::5]:7001"},
		{"0.0.0.0:7001", "", "0.0.0.0:7001"},
	} {
		if got := advertised(c.addr, c.adv); got != c.want {
			t.Errorf("advertised(%q, %q) = %q, want %q", c.addr, c.adv, got, c.want)
		}
	}
}

func TestOwnerPeersFromRoutingTable(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	table := meta.RoutingTable{Epoch: 7, Owners: []meta.Owner{
		{InstanceKey: "a", StartTime: t0, Host: "host-a", Endpoints: map[string]string{KVEndpointKey: "10.0.0.1:1"}},
		{InstanceKey: "b", StartTime: t0.Add(time.Second), Endpoints: map[string]string{KVEndpointKey: "10.0.0.2:1"}}, // an old master's table: no host
		{InstanceKey: "c", StartTime: t0, Endpoints: map[string]string{"rpc": "10.0.0.3:1"}},                          // no cluster KV: left out
	}}
	peers := OwnerPeers("c1", table)
	if len(peers) != 2 {
		t.Fatalf("%d peers, want 2: %+v", len(peers), peers)
	}
	if p := peers[0]; p.Addr != "10.0.0.1:1" || p.Host != "host-a" || p.ID.ClusterName != "c1" || p.ID.Role != string(meta.RoleOwner) || !p.ID.StartTime.Equal(t0) {
		t.Errorf("peer a: %+v", p)
	}
	if p := peers[1]; p.Host != "b" || p.Name() != ownerIdentity("c1", "b", t0.Add(time.Second)).Incarnation() {
		t.Errorf("peer b: %+v", p)
	}
}
