package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/internal/netlab"
)

// Four owners on hosts A–B–C–D that reach only their neighbours (and etcd
// on the lab gateway): A calls an RPC on D and reads keys held on D, small
// and large, through the relays on B and C (three hops), which find the
// path themselves from the reachability graph in etcd.
func TestRelayAcrossAChain(t *testing.T) {
	if err := netlab.Available(); err != nil {
		t.Skip("multi-host tests need network namespaces (root and iproute2):", err)
	}
	t.Parallel()
	lab := netlab.NewStarChain(t, 4)
	dir, _, addr := startRelayCluster(t, lab, func(i int, h *netlab.Host) string {
		return fmt.Sprintf("listen: {http: %[1]s:0, grpc: %[1]s:0, transport: %[2]s:0, resp: \"\"}\n", h.IP, h.Node)
	})

	// RPC from A to D: three hops once the graph says so.
	callThroughRelays(t, dir, addr, 4)

	// A key held only on A, read through D (the other way round).
	out, code := run(t, dir, "kv", "put", "on-a", "held by o1", "--addr", addr(0))
	require.Equal(t, 0, code, out)
	out, code = run(t, dir, "kv", "get", "on-a", "--addr", addr(3))
	require.Equal(t, 0, code, out)
	require.Equal(t, "held by o1", out)

	// Keys held only on D read through A, one of 9 MiB (pulled in stripes):
	// they cross the three hops intact.
	readThroughRelays(t, dir, addr, 3, 9<<20)
}

// Three owners on hosts A–B–D where B has one interface per neighbour and
// no address routed on both (netlab.NewStarLinks): A reaches B only at
// its A-side address, D only at its D-side one. B advertises both as its
// relay addresses (D-side first, so A's probe has to find the second):
// A calls an RPC on D and reads a 3 MiB key held on D through B.
func TestRelayAtPerLinkAddresses(t *testing.T) {
	if err := netlab.Available(); err != nil {
		t.Skip("multi-host tests need network namespaces (root and iproute2):", err)
	}
	t.Parallel()
	lab := netlab.NewStarLinks(t, 3)
	aSide, dSide := lab.LinkAddr(1, false), lab.LinkAddr(2, true)
	dir, etcdURL, addr := startRelayCluster(t, lab, func(i int, h *netlab.Host) string {
		transport := [...]string{lab.LinkAddr(1, true), aSide, lab.LinkAddr(2, false)}[i]
		cfg := fmt.Sprintf("listen: {http: %[1]s:0, grpc: %[1]s:0, transport: %[2]s:0, resp: \"\"}\n", h.IP, transport)
		if i == 1 {
			cfg += fmt.Sprintf("network: {relay_addresses: [%q, %q]}\n", dSide, aSide)
		}
		return cfg
	})
	callThroughRelays(t, dir, addr, 3)
	readThroughRelays(t, dir, addr, 2, 3<<20)

	// The reach records say which of B's addresses each neighbour reached.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	for key, want := range map[string]string{"o1": aSide, "o3": dSide} {
		resp, err := cli.Get(context.Background(), "/fluxon/mh/reach/"+key)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1, "%s's reach record", key)
		var rec meta.ReachRecord
		require.NoError(t, json.Unmarshal(resp.Kvs[0].Value, &rec))
		host, _, err := net.SplitHostPort(rec.At["o2"])
		require.NoError(t, err, "%s's record %s", key, resp.Kvs[0].Value)
		require.Equal(t, want, host, "the address of o2 that %s reached", key)
	}
}

// startRelayCluster starts a master on the lab's first host and an owner
// o<i+1> on each host, whose listen (and network) sections listen gives;
// it returns the working directory, etcd's URL and the owners' grpc
// addresses, once every owner is in the routing table.
func startRelayCluster(t *testing.T, lab *netlab.Lab, listen func(i int, h *netlab.Host) string) (string, string, func(int) string) {
	t.Helper()
	etcd := metatest.StartProcessOn(t, lab.Gateway)
	dir := t.TempDir()
	mcfg := writeConfig(t, dir, "m.yaml", fmt.Sprintf("cluster_name: mh\ninstance_key: m1\netcd_endpoints: [%q]\nlisten: {http: %q}\nmaster: {election_ttl: 2s}\nlease: {ttl: 2s}\n",
		strings.TrimPrefix(etcd.URL, "http://"), lab.Hosts[0].IP+":0"))
	startIn(t, lab.Hosts[0], dir, "master", "--config", mcfg).waitOutput(t, "running", 30*time.Second)
	for i, h := range lab.Hosts {
		key := fmt.Sprint("o", i+1)
		shm := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-relay-%d-%s-%d", os.Getpid(), key, time.Now().UnixNano()))
		t.Cleanup(func() { os.RemoveAll(shm) })
		// Member-to-member traffic on the chain (neighbours only); clients
		// and etcd on the star.
		cfg := writeConfig(t, dir, key+".yaml", fmt.Sprintf(`cluster_name: mh
instance_key: %[1]s
etcd_endpoints: [%[2]q]
shared_memory_path: %[3]s
shared_file_path: %[4]s
log_dir: %[5]s
contribute_to_cluster_pool_size: {dram: 64MiB}
lease: {ttl: 2s}
`, key, strings.TrimPrefix(etcd.URL, "http://"), shm, filepath.Join(dir, key, "shared"), filepath.Join(dir, "logs"))+listen(i, h))
		startIn(t, h, dir, "owner", "--config", cfg).waitOutput(t, "running", 30*time.Second)
	}
	var st clusterStatus
	metatest.WaitFor(t, 30*time.Second, fmt.Sprint(len(lab.Hosts), " owners in the routing table"), func() bool {
		var err error
		st, err = status(t, dir, "--etcd", etcd.URL, "--cluster", "mh")
		return err == nil && st.Routing != nil && len(st.Routing.Owners) == len(lab.Hosts)
	})
	return dir, etcd.URL, func(i int) string { return st.Members[meta.RoleOwner][i].Endpoints["grpc"] }
}

// callThroughRelays waits until o1 calls an RPC on o<n> (the last owner)
// through the relays, which takes the graph a few probes.
func callThroughRelays(t *testing.T, dir string, addr func(int) string, n int) {
	t.Helper()
	metatest.WaitFor(t, 30*time.Second, fmt.Sprintf("o1 to call o%d through the relays", n), func() bool {
		out, code := run(t, dir, "rpc", "call", fmt.Sprint("o", n), "/fluxon/ping", "via relays", "--addr", addr(0), "--timeout", "3s")
		return code == 0 && out == "via relays"
	})
}

// readThroughRelays puts a small key and a random value of size bytes on
// owner last and reads both back through o1, across the relays.
func readThroughRelays(t *testing.T, dir string, addr func(int) string, last, size int) {
	t.Helper()
	out, code := run(t, dir, "kv", "put", "on-last", "held at the end", "--addr", addr(last))
	require.Equal(t, 0, code, out)
	out, code = run(t, dir, "kv", "get", "on-last", "--addr", addr(0))
	require.Equal(t, 0, code, out)
	require.Equal(t, "held at the end", out)

	big := make([]byte, size)
	_, _ = rand.Read(big)
	f := filepath.Join(dir, "big.bin")
	require.NoError(t, os.WriteFile(f, big, 0o644))
	out, code = run(t, dir, "kv", "put", "big", "--file", f, "--addr", addr(last))
	require.Equal(t, 0, code, out)
	out, code = run(t, dir, "kv", "get", "big", "--addr", addr(0))
	require.Equal(t, 0, code, "get of the big value through the relays failed")
	require.True(t, bytes.Equal(big, []byte(out)), "the value read through the relays differs (%d bytes read)", len(out))
}
