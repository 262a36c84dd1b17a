package main

// Multi-host tests: each owner runs in its own network namespace ("host"),
// joined to the others and to etcd (in the root namespace) by veth links.

import (
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

// startIn runs fluxon inside a lab host.
func startIn(t *testing.T, h *netlab.Host, dir string, args ...string) *proc {
	t.Helper()
	return start(t, dir, append([]string{"__netns__", h.NS}, args...)...)
}

func hostOwnerConfig(t *testing.T, dir string, h *netlab.Host, etcd, key string) string {
	shm := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-mh-%d-%s-%d", os.Getpid(), key, time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(shm) })
	body := fmt.Sprintf(`cluster_name: mh
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
  transport: %[6]s:0
  resp: ""
`, key, strings.TrimPrefix(etcd, "http://"), shm, filepath.Join(dir, key, "shared"), filepath.Join(dir, "logs"), h.IP)
	return writeConfig(t, dir, key+".yaml", body)
}

func TestMultiHostRPCAndPartition(t *testing.T) {
	if err := netlab.Available(); err != nil {
		t.Skip("multi-host tests need network namespaces (root and iproute2):", err)
	}
	t.Parallel()
	lab := netlab.NewStar(t, 3)
	etcd := metatest.StartProcessOn(t, lab.Gateway)
	dir := t.TempDir()
	sargs := []string{"--etcd", etcd.URL, "--cluster", "mh"}

	mcfg := writeConfig(t, dir, "m.yaml", fmt.Sprintf("cluster_name: mh\ninstance_key: m1\netcd_endpoints: [%q]\nlisten: {http: %q}\nmaster: {election_ttl: 2s}\nlease: {ttl: 2s}\n",
		strings.TrimPrefix(etcd.URL, "http://"), lab.Hosts[0].IP+":0"))
	master := startIn(t, lab.Hosts[0], dir, "master", "--config", mcfg)
	master.waitOutput(t, "running", 30*time.Second)
	for i, h := range lab.Hosts {
		startIn(t, h, dir, "owner", "--config", hostOwnerConfig(t, dir, h, etcd.URL, fmt.Sprint("o", i+1))).waitOutput(t, "running", 30*time.Second)
	}
	var st clusterStatus
	metatest.WaitFor(t, 20*time.Second, "3 owners in the routing table", func() bool {
		var err error
		st, err = status(t, dir, sargs...)
		return err == nil && st.Routing != nil && len(st.Routing.Owners) == 3
	})
	for i, o := range st.Members[meta.RoleOwner] {
		require.True(t, strings.HasPrefix(o.Endpoints["rpc"], lab.Hosts[i].IP+":"), "o%d's rpc endpoint is on its host: %v", i+1, o.Endpoints)
	}
	grpc1 := st.Members[meta.RoleOwner][0].Endpoints["grpc"]

	// o1 (host 1) forwards a call to o3 (host 3) over the transport between namespaces.
	out, code := run(t, dir, "rpc", "call", "o3", "/fluxon/ping", "across hosts", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Equal(t, "across hosts", out)
	out, code = run(t, dir, "rpc", "call", "o3", "/fluxon/info", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, lab.Hosts[2].IP, "o3 answers from its own host")

	// Partition host 3: calls to it fail clearly and quickly, the rest keep working,
	// and once its lease runs out it leaves the routing table.
	epoch := st.Epoch
	require.NoError(t, lab.Hosts[2].Cut())
	out, code = run(t, dir, "rpc", "call", "o3", "/fluxon/ping", "x", "--addr", grpc1, "--timeout", "2s")
	require.Equal(t, 1, code, out)
	out, code = run(t, dir, "rpc", "call", "o2", "/fluxon/ping", "still here", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Equal(t, "still here", out)
	metatest.WaitFor(t, 20*time.Second, "the cut owner to leave the routing table", func() bool {
		st, _ = status(t, dir, sargs...)
		return st.Routing != nil && len(st.Routing.Owners) == 2 && st.Epoch > epoch
	})

	// Heal: o3 registers again by itself and is reachable again.
	require.NoError(t, lab.Hosts[2].Heal())
	metatest.WaitFor(t, 30*time.Second, "the healed owner to rejoin", func() bool {
		st, _ = status(t, dir, sargs...)
		return st.Routing != nil && len(st.Routing.Owners) == 3
	})
	metatest.WaitFor(t, 20*time.Second, "o3 to answer again", func() bool {
		out, code := run(t, dir, "rpc", "call", "o3", "/fluxon/ping", "back", "--addr", grpc1, "--timeout", "2s")
		return code == 0 && out == "back"
	})

	// The master dies (kill -9): the data plane keeps serving.
	require.NoError(t, master.cmd.Process.Kill())
	out, code = run(t, dir, "rpc", "call", "o3", "/fluxon/ping", "no master", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Equal(t, "no master", out)

	// etcd stops answering for a while: calls between live members go on.
	etcd.Stop()
	for _, to := range []string{"o2", "o3"} {
		out, code = run(t, dir, "rpc", "call", to, "/fluxon/ping", "no etcd", "--addr", grpc1, "--timeout", "3s")
		require.Equal(t, 0, code, "to %s: %s", to, out)
		require.Equal(t, "no etcd", out)
	}
	etcd.Cont()
}
