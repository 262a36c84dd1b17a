//go:build ucx

package cluster

import "os"

// UCX lists its network devices when a process opens its first node, and
// these tests run beside others that add and remove network-namespace
// bridges on this host (internal/netlab). A UCX context that listed such
// a bridge keeps a lane to an address that then vanishes, and a get over
// it never completes. Such a get now gives up at its deadline (the lease
// TTL at the latest; docs/transport.md), but that would still cost a test
// its read: the owners here talk over loopback only.
func init() {
	if os.Getenv("UCX_NET_DEVICES") == "" {
		os.Setenv("UCX_NET_DEVICES", "lo")
	}
}
