package meta

import "strings"

// Keyspace lays out one cluster's keys under /fluxon/<cluster_name>/. Two
// clusters on one etcd share no key, so they never see each other. Cluster
// names are validated by control/config to hold no '/'.
type Keyspace struct{ prefix string }

// NewKeyspace returns the keyspace of a cluster.
func NewKeyspace(cluster string) Keyspace { return Keyspace{prefix: "/fluxon/" + cluster + "/"} }

// Prefix is the root of everything the cluster stores.
func (k Keyspace) Prefix() string { return k.prefix }

// Members is the prefix of member records.
func (k Keyspace) Members() string { return k.prefix + "members/" }

// Member is one member's record key.
func (k Keyspace) Member(instanceKey string) string { return k.Members() + instanceKey }

// Election is the prefix masters campaign on.
func (k Keyspace) Election() string { return k.prefix + "master/election" }

// Routing is the key of the published routing table.
func (k Keyspace) Routing() string { return k.prefix + "routing" }

// memberKeyName returns the instance key of a member record key.
func (k Keyspace) memberKeyName(key string) string { return strings.TrimPrefix(key, k.Members()) }
