// Package master runs the cluster's control loop: it campaigns for leadership
// through etcd, tracks live members, and publishes the routing table (live
// owners + epoch). The state machines here (Membership, Router) do no I/O and
// read no clock, so they are tested without etcd.
package master

import (
	"maps"
	"slices"
	"time"

	"github.com/fluxon-dev/fluxon/control/meta"
)

// Membership is the set of live members as the master knows it, fed by etcd
// listings and watch events.
type Membership struct {
	members map[string]meta.Member
}

// NewMembership starts from a full listing.
func NewMembership(list []meta.Member) *Membership {
	m := &Membership{members: make(map[string]meta.Member, len(list))}
	m.Reset(list)
	return m
}

// Reset replaces the whole set (after a relist). It reports whether anything changed.
func (m *Membership) Reset(list []meta.Member) bool {
	next := make(map[string]meta.Member, len(list))
	for _, mem := range list {
		next[mem.InstanceKey] = mem
	}
	changed := !maps.EqualFunc(m.members, next, sameMember)
	m.members = next
	return changed
}

// Apply folds one watch event in and reports whether the set changed.
func (m *Membership) Apply(ev meta.MemberEvent) bool {
	old, had := m.members[ev.InstanceKey]
	if ev.Deleted {
		delete(m.members, ev.InstanceKey)
		return had
	}
	m.members[ev.InstanceKey] = ev.Member
	return !had || !sameMember(old, ev.Member)
}

// Owners returns the live owners in canonical order.
func (m *Membership) Owners() []meta.Owner {
	var out []meta.Owner
	for _, mem := range m.members {
		if mem.Role != meta.RoleOwner {
			continue
		}
		out = append(out, meta.Owner{
			InstanceKey: mem.InstanceKey, NodeID: mem.NodeID, SubCluster: mem.SubCluster, Host: mem.Host,
			StartTime: mem.StartTime, Endpoints: maps.Clone(mem.Endpoints), PoolDRAM: mem.PoolDRAM,
		})
	}
	meta.SortOwners(out)
	return out
}

// Count returns the number of live members per role.
func (m *Membership) Count() map[meta.Role]int {
	out := map[meta.Role]int{}
	for _, mem := range m.members {
		out[mem.Role]++
	}
	return out
}

func sameMember(a, b meta.Member) bool {
	return a.Incarnation() == b.Incarnation() && a.Role == b.Role && a.SubCluster == b.SubCluster && a.Host == b.Host &&
		a.PoolDRAM == b.PoolDRAM && maps.Equal(a.Endpoints, b.Endpoints)
}

// Router computes routing tables. The epoch grows by one on every change of
// the owner set (an owner joins, leaves, restarts, or changes endpoints) and
// never goes back, even across master fail-over: a new leader starts from the
// table its predecessor published.
type Router struct {
	table meta.RoutingTable
}

// NewRouter resumes from the last published table (zero value if none).
func NewRouter(last meta.RoutingTable) *Router { return &Router{table: last} }

// Table returns the current table.
func (r *Router) Table() meta.RoutingTable { return r.table }

// Next returns the table for the given owners. changed is false when the
// owners are the ones the current table already lists, in which case nothing
// needs publishing.
func (r *Router) Next(owners []meta.Owner, self string, now time.Time) (meta.RoutingTable, bool) {
	if r.table.Epoch > 0 && slices.EqualFunc(r.table.Owners, owners, sameOwner) {
		return r.table, false
	}
	r.table = meta.RoutingTable{Epoch: r.table.Epoch + 1, Owners: owners, Master: self, Published: now}
	return r.table, true
}

func sameOwner(a, b meta.Owner) bool {
	return a.InstanceKey == b.InstanceKey && a.StartTime.Equal(b.StartTime) && a.SubCluster == b.SubCluster && a.Host == b.Host &&
		a.PoolDRAM == b.PoolDRAM && maps.Equal(a.Endpoints, b.Endpoints)
}
