// Package meta is the only package that talks to etcd. It owns the cluster's
// keyspace, member registration with leases, master election, and the routing
// table's storage and watch. Everything else goes through it.
package meta

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Role is what a member does in the cluster.
type Role string

// Member roles.
const (
	RoleMaster   Role = "master"
	RoleOwner    Role = "owner"
	RoleExternal Role = "external"
)

// Member is what a process publishes about itself while it is alive. It is
// stored as JSON under the member's lease; when the process dies the lease
// ends and the record disappears.
type Member struct {
	InstanceKey string            `json:"instance_key"`
	NodeID      string            `json:"node_id"`
	Role        Role              `json:"role"`
	ClusterName string            `json:"cluster_name"`
	SubCluster  string            `json:"sub_cluster,omitempty"`
	Host        string            `json:"host"`
	PID         int               `json:"pid"`
	StartTime   time.Time         `json:"start_time"`
	Version     string            `json:"version"`
	Endpoints   map[string]string `json:"endpoints,omitempty"` // "http", "grpc", "transport", "resp", …
	PoolDRAM    uint64            `json:"pool_dram,omitempty"` // bytes contributed (owners)
	PoolVRAM    map[string]uint64 `json:"pool_vram,omitempty"` // per device (owners)
}

// Incarnation identifies one run of a member: the same instance_key restarted
// is a different incarnation.
func (m Member) Incarnation() string {
	return fmt.Sprintf("%s@%d", m.InstanceKey, m.StartTime.UnixNano())
}

// Owner is one live owner as the routing table lists it.
type Owner struct {
	InstanceKey string    `json:"instance_key"`
	NodeID      string    `json:"node_id"`
	SubCluster  string    `json:"sub_cluster,omitempty"`
	StartTime   time.Time `json:"start_time"`
	// Host is the owner's host name (Member.Host): placement keeps a key's
	// replicas on distinct hosts. Empty in tables published before it was
	// added; readers fall back to something per owner.
	Host      string            `json:"host,omitempty"`
	Endpoints map[string]string `json:"endpoints,omitempty"`
	PoolDRAM  uint64            `json:"pool_dram,omitempty"`
}

// RoutingTable is what the leading master publishes: the live owners and an
// epoch that grows on every change of that set. Owners are sorted by
// InstanceKey so two tables with the same content encode identically.
type RoutingTable struct {
	Epoch     uint64    `json:"epoch"`
	Owners    []Owner   `json:"owners"`
	Master    string    `json:"master"` // instance_key of the master that published it
	Published time.Time `json:"published"`
}

// SortOwners puts owners in canonical order.
func SortOwners(owners []Owner) {
	sort.Slice(owners, func(i, j int) bool { return owners[i].InstanceKey < owners[j].InstanceKey })
}

func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
