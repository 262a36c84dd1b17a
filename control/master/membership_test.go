package master

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/control/meta"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func owner(key string, start int) meta.Member {
	return meta.Member{InstanceKey: key, NodeID: key, Role: meta.RoleOwner, StartTime: t0.Add(time.Duration(start) * time.Second), Host: "host-" + key,
		Endpoints: map[string]string{"http": key + ":1"}, PoolDRAM: 1 << 30}
}

func masterMember(key string) meta.Member {
	return meta.Member{InstanceKey: key, Role: meta.RoleMaster, StartTime: t0}
}

func keys(owners []meta.Owner) []string {
	var out []string
	for _, o := range owners {
		out = append(out, o.InstanceKey)
	}
	return out
}

func TestMembershipApply(t *testing.T) {
	ms := NewMembership([]meta.Member{owner("b", 0), masterMember("m1")})
	require.Equal(t, []string{"b"}, keys(ms.Owners()))
	require.Equal(t, map[meta.Role]int{meta.RoleOwner: 1, meta.RoleMaster: 1}, ms.Count())

	require.True(t, ms.Apply(meta.MemberEvent{InstanceKey: "a", Member: owner("a", 0)}), "join changes the set")
	require.Equal(t, []string{"a", "b"}, keys(ms.Owners()), "owners come sorted")
	require.False(t, ms.Apply(meta.MemberEvent{InstanceKey: "a", Member: owner("a", 0)}), "the same record again is no change")
	require.True(t, ms.Apply(meta.MemberEvent{InstanceKey: "a", Member: owner("a", 5)}), "a restart (new start time) is a change")
	changedEp := owner("a", 5)
	changedEp.Endpoints = map[string]string{"http": "elsewhere"}
	require.True(t, ms.Apply(meta.MemberEvent{InstanceKey: "a", Member: changedEp}), "new endpoints are a change")
	require.True(t, ms.Apply(meta.MemberEvent{Deleted: true, InstanceKey: "b"}), "leave changes the set")
	require.False(t, ms.Apply(meta.MemberEvent{Deleted: true, InstanceKey: "b"}), "deleting an absent member is no change")
	require.Equal(t, []string{"a"}, keys(ms.Owners()))

	require.False(t, ms.Reset([]meta.Member{changedEp, masterMember("m1")}), "relist with the same content")
	require.True(t, ms.Reset([]meta.Member{masterMember("m1")}))
	require.Empty(t, ms.Owners())
}

func TestRouterEpochs(t *testing.T) {
	r := NewRouter(meta.RoutingTable{})
	ms := NewMembership(nil)

	tb, changed := r.Next(ms.Owners(), "m1", t0)
	require.True(t, changed, "the first table is always published, even empty")
	require.Equal(t, uint64(1), tb.Epoch)
	require.Equal(t, "m1", tb.Master)

	_, changed = r.Next(ms.Owners(), "m1", t0)
	require.False(t, changed, "nothing changed: no new epoch")

	steps := []meta.MemberEvent{
		{InstanceKey: "a", Member: owner("a", 0)},
		{InstanceKey: "b", Member: owner("b", 0)},
		{InstanceKey: "a", Member: owner("a", 9)}, // restart
		{Deleted: true, InstanceKey: "b"},
	}
	want := uint64(1)
	for _, ev := range steps {
		require.True(t, ms.Apply(ev))
		tb, changed = r.Next(ms.Owners(), "m1", t0)
		want++
		require.True(t, changed)
		require.Equal(t, want, tb.Epoch)
	}
	// A master joining is not a routing change.
	require.True(t, ms.Apply(meta.MemberEvent{InstanceKey: "m2", Member: masterMember("m2")}))
	_, changed = r.Next(ms.Owners(), "m1", t0)
	require.False(t, changed)
}

func TestRouterResumesAcrossFailover(t *testing.T) {
	// The new leader starts from what the old one published: the epoch never goes back.
	published := meta.RoutingTable{Epoch: 41, Owners: NewMembership([]meta.Member{owner("a", 0)}).Owners(), Master: "m1"}
	r := NewRouter(published)
	ms := NewMembership([]meta.Member{owner("a", 0)})
	tb, changed := r.Next(ms.Owners(), "m2", t0)
	require.False(t, changed, "same owners as published: the new leader publishes nothing")
	require.Equal(t, uint64(41), tb.Epoch)

	ms.Apply(meta.MemberEvent{Deleted: true, InstanceKey: "a"})
	tb, changed = r.Next(ms.Owners(), "m2", t0)
	require.True(t, changed)
	require.Equal(t, uint64(42), tb.Epoch)
	require.Equal(t, "m2", tb.Master)
}

// The table carries each owner's host: the cluster KV keeps a key's replicas
// on distinct hosts, and tables published before Owner.Host still decode.
func TestOwnersCarryHost(t *testing.T) {
	ms := NewMembership([]meta.Member{owner("a", 0), owner("b", 0)})
	owners := ms.Owners()
	require.Equal(t, "host-a", owners[0].Host)
	require.Equal(t, "host-b", owners[1].Host)

	var old meta.RoutingTable
	require.NoError(t, json.Unmarshal([]byte(`{"epoch":3,"owners":[{"instance_key":"a","start_time":"2026-11-25T12:00:00Z","endpoints":{"kv":"a:1"}}]}`), &old))
	require.Equal(t, "", old.Owners[0].Host, "an old table reads with no host")
	require.Equal(t, "a:1", old.Owners[0].Endpoints["kv"])

	r := NewRouter(old)
	tb, changed := r.Next(NewMembership([]meta.Member{owner("a", 0)}).Owners(), "m1", t0)
	require.True(t, changed, "learning the host is a change worth a new epoch")
	require.Equal(t, "host-a", tb.Owners[0].Host)
}
