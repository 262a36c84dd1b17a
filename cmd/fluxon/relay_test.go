package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	etcd := metatest.StartProcessOn(t, lab.Gateway)
	dir := t.TempDir()
	sargs := []string{"--etcd", etcd.URL, "--cluster", "mh"}
	mcfg := writeConfig(t, dir, "m.yaml", fmt.Sprintf("cluster_name: mh\ninstance_key: m1\netcd_endpoints: [%q]\nlisten: {http: %q}\nmaster: {election_ttl: 2s}\nlease: {ttl: 2s}\n",
		strings.TrimPrefix(etcd.URL, "http://"), lab.Hosts[0].IP+":0"))
	startIn(t, lab.Hosts[0], dir, "master", "--config", mcfg).waitOutput(t, "running", 30*time.Second)
	for i, h := range lab.Hosts {
		key := fmt.Sprint("o", i+1)
		shm := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-relay-%d-%s-%d", os.Getpid(), key, time.Now().UnixNano()))
		t.Cleanup(func() { os.RemoveAll(shm) })
		// Member-to-member traffic on the node address (neighbours only);
		// clients and etcd on the star.
		cfg := writeConfig(t, dir, key+".yaml", fmt.Sprintf(`cluster_name: mh
instance_key: %[1]s
etcd_endpoints: [%[2]q]
shared_memory_path: %[3]s
shared_file_path: %[4]s
log_dir: %[5]s
contribute_to_cluster_pool_size: {dram: 64MiB}
lease: {ttl: 2s}
listen:
  http: %[6]s:0
  grpc: %[6]s:0
  transport: %[7]s:0
  resp: ""
`, key, strings.TrimPrefix(etcd.URL, "http://"), shm, filepath.Join(dir, key, "shared"), filepath.Join(dir, "logs"), h.IP, h.Node))
		startIn(t, h, dir, "owner", "--config", cfg).waitOutput(t, "running", 30*time.Second)
	}
	var st clusterStatus
	metatest.WaitFor(t, 30*time.Second, "4 owners in the routing table", func() bool {
		var err error
		st, err = status(t, dir, sargs...)
		return err == nil && st.Routing != nil && len(st.Routing.Owners) == 4
	})
	addr := func(i int) string { return st.Members[meta.RoleOwner][i].Endpoints["grpc"] }

	// RPC from A to D: three hops once the graph says so.
	metatest.WaitFor(t, 30*time.Second, "o1 to call o4 through the relays", func() bool {
		out, code := run(t, dir, "rpc", "call", "o4", "/fluxon/ping", "via relays", "--addr", addr(0), "--timeout", "3s")
		return code == 0 && out == "via relays"
	})

	// A key held only on D, read through A; and one held only on A, read through D.
	out, code := run(t, dir, "kv", "put", "on-d", "held by o4", "--addr", addr(3))
	require.Equal(t, 0, code, out)
	out, code = run(t, dir, "kv", "get", "on-d", "--addr", addr(0))
	require.Equal(t, 0, code, out)
	require.Equal(t, "held by o4", out)
	out, code = run(t, dir, "kv", "put", "on-a", "held by o1", "--addr", addr(0))
	require.Equal(t, 0, code, out)
	out, code = run(t, dir, "kv", "get", "on-a", "--addr", addr(3))
	require.Equal(t, 0, code, out)
	require.Equal(t, "held by o1", out)

	// Bulk: a 9 MiB value (pulled in stripes) crosses the three hops intact.
	big := make([]byte, 9<<20)
	_, _ = rand.Read(big)
	f := filepath.Join(dir, "big.bin")
	require.NoError(t, os.WriteFile(f, big, 0o644))
	out, code = run(t, dir, "kv", "put", "big", "--file", f, "--addr", addr(3))
	require.Equal(t, 0, code, out)
	out, code = run(t, dir, "kv", "get", "big", "--addr", addr(0))
	require.Equal(t, 0, code, "get of 9 MiB through the relays failed")
	require.True(t, bytes.Equal(big, []byte(out)), "the value read through the relays differs (%d bytes read)", len(out))
}
