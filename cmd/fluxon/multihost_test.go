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
	"github.com/fluxon-dev/fluxon/services/kv/placement"
	"github.com/fluxon-dev/fluxon/services/owner"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
)

// keyHomedOn returns a key with prefix that the cluster KV homes on the
// owner with instance key home under table.
func keyHomedOn(t *testing.T, table meta.RoutingTable, prefix, home string) string {
	t.Helper()
	peers := owner.OwnerPeers("mh", table)
	nodes := make([]placement.Node, len(peers))
	for i, p := range peers {
		nodes[i] = placement.Node{ID: p.Name(), Host: p.Host}
	}
	for i := 0; i < 1000; i++ {
		k := fmt.Sprint(prefix, i)
		if j := placement.Home(placement.KeyHash(k), nodes); j >= 0 && peers[j].ID.InstanceKey == home {
			return k
		}
	}
	t.Fatalf("no key homed on %s among %d owners", home, len(peers))
	return ""
}

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
		requireOnHost(t, o.Endpoints["rpc"], lab.Hosts[i].IP, "o%d's rpc endpoints are on its host: %v", i+1, o.Endpoints)
	}
	grpc1 := st.Members[meta.RoleOwner][0].Endpoints["grpc"]

	// o1 (host 1) forwards a call to o3 (host 3) over the transport between namespaces.
	out, code := run(t, dir, "rpc", "call", "o3", "/fluxon/ping", "across hosts", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Equal(t, "across hosts", out)
	out, code = run(t, dir, "rpc", "call", "o3", "/fluxon/info", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, lab.Hosts[2].IP, "o3 answers from its own host")

	// KV across hosts, through `fluxon kv` on each owner's gRPC endpoint.
	for i, o := range st.Members[meta.RoleOwner] {
		requireOnHost(t, o.Endpoints[owner.KVEndpointKey], lab.Hosts[i].IP, "o%d's cluster KV endpoints are on its host: %v", i+1, o.Endpoints)
	}
	kvAddr := func(i int) string { return st.Members[meta.RoleOwner][i].Endpoints["grpc"] }
	kvPut := func(i int, key, value string) {
		t.Helper()
		out, code := run(t, dir, "kv", "put", key, value, "--addr", kvAddr(i))
		require.Equal(t, 0, code, "put %s through o%d: %s", key, i+1, out)
	}
	kvGet := func(i int, key string) (string, int) {
		t.Helper()
		return run(t, dir, "kv", "get", key, "--addr", kvAddr(i))
	}
	metatest.WaitFor(t, 20*time.Second, "a first put through o1's cluster KV", func() bool {
		_, code := run(t, dir, "kv", "put", "probe", "x", "--addr", kvAddr(0))
		return code == 0
	})
	kvPut(0, "across", "put on host 1")
	for i := 1; i < 3; i++ {
		out, code := kvGet(i, "across")
		require.Equal(t, 0, code, "get through o%d: %s", i+1, out)
		require.Equal(t, "put on host 1", out, "read through o%d", i+1)
	}
	// MQ across hosts: producers on hosts 1 and 2 (their owners hold the
	// messages), a consumer on host 3 (its owner pulls them over the
	// transport), each producer's messages in order.
	mq := func(i int, args ...string) string {
		t.Helper()
		out, code := run(t, dir, append(append([]string{"mq"}, args...), "--addr", kvAddr(i))...)
		require.Equal(t, 0, code, "mq %v through o%d: %s", args, i+1, out)
		return out
	}
	mq(0, "put", "xhost", "h1-a", "h1-b", "h1-c")
	mq(1, "put", "xhost", "h2-a", "h2-b")
	var got []string
	metatest.WaitFor(t, 20*time.Second, "5 messages through o3", func() bool {
		out := mq(2, "get", "xhost", "--batch", "10", "--wait", "2s")
		got = append(got, strings.Fields(out)...)
		return len(got) >= 5
	})
	var h1, h2 []string
	for _, m := range got {
		if strings.HasPrefix(m, "h1-") {
			h1 = append(h1, m)
		} else {
			h2 = append(h2, m)
		}
	}
	require.Equal(t, []string{"h1-a", "h1-b", "h1-c"}, h1, "host 1's messages, in order, once")
	require.Equal(t, []string{"h2-a", "h2-b"}, h2, "host 2's messages, in order, once")
	metatest.WaitFor(t, 10*time.Second, "the acknowledgements committed", func() bool {
		return strings.Contains(mq(2, "stat", "xhost"), "backlog 0")
	})

	// The reads above went between owners: `status --peers` shows, from the
	// owners' /metrics, the transport they use (tcp: the best common one of
	// the default order in a build without rdma or ucx devices).
	pst, err := status(t, dir, append([]string{"--peers"}, sargs...)...)
	require.NoError(t, err)
	require.Empty(t, pst.PeerErrors)
	require.NotEmpty(t, pst.Peers, "owners report the peers they dialed")
	for _, p := range pst.Peers {
		require.Equal(t, "tcp", p.Transport, "%+v", p)
	}
	require.NotEmpty(t, pst.Transports)

	// For the partition: keys only o3 holds (put through it, never read
	// elsewhere; one homed on o3, one on o1), and keys o3 has nothing to do
	// with (put through o1, homed on o1 and on o2).
	table := *st.Routing
	onlyO3 := []string{keyHomedOn(t, table, "o3-home-o3-", "o3"), keyHomedOn(t, table, "o3-home-o1-", "o1")}
	for _, k := range onlyO3 {
		kvPut(2, k, "held by o3")
	}
	elsewhere := []string{keyHomedOn(t, table, "o1-home-o1-", "o1"), keyHomedOn(t, table, "o1-home-o2-", "o2")}
	for _, k := range elsewhere {
		kvPut(0, k, "held by o1")
	}

	// Partition host 3: calls to it fail clearly and quickly, the rest keep working,
	// and once its lease runs out it leaves the routing table.
	epoch := st.Epoch
	require.NoError(t, lab.Hosts[2].Cut())
	out, code = run(t, dir, "rpc", "call", "o3", "/fluxon/ping", "x", "--addr", grpc1, "--timeout", "2s")
	require.Equal(t, 1, code, out)
	out, code = run(t, dir, "rpc", "call", "o2", "/fluxon/ping", "still here", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Equal(t, "still here", out)
	// A key only o3 held, homed on o1: o1's directory knows it existed, so
	// it reads as unavailable (not as missing), before and after o3 leaves
	// the table.
	lostKey := onlyO3[1]
	out, code = kvGet(0, lostKey)
	require.Equal(t, 1, code, "%s, only o3 held it: %s", lostKey, out)
	require.Contains(t, strings.ToLower(out), "unavailable", "%s, only o3 held it, reads as unavailable on o1 (not as missing)", lostKey)
	for _, k := range elsewhere {
		for i := 0; i < 2; i++ {
			out, code := kvGet(i, k)
			require.Equal(t, 0, code, "%s through o%d with o3 cut: %s", k, i+1, out)
			require.Equal(t, "held by o1", out, k)
		}
	}
	metatest.WaitFor(t, 20*time.Second, "the cut owner to leave the routing table", func() bool {
		st, _ = status(t, dir, sargs...)
		return st.Routing != nil && len(st.Routing.Owners) == 2 && st.Epoch > epoch
	})
	metatest.WaitFor(t, 20*time.Second, "o1 and o2 to re-home o3's keys", func() bool {
		out, code := kvGet(0, lostKey)
		return code == 1 && strings.Contains(strings.ToLower(out), "unavailable")
	})
	for _, k := range elsewhere {
		out, code := kvGet(1, k)
		require.Equal(t, 0, code, "%s through o2 in the new epoch: %s", k, out)
	}
	// A key homed on o3 and held only by o3: its directory backup on
	// another host says it existed, so it reads as unavailable too.
	out, code = kvGet(0, onlyO3[0])
	require.Equal(t, 1, code, out)
	require.Contains(t, strings.ToLower(out), "unavailable", "%s: %s", onlyO3[0], out)

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
	// The KV works across all three hosts again: a new key both ways, and
	// the keys o1 held read through o3. (Copies o3 held alone while cut
	// are not promised back: their homes ended o3's session meanwhile.)
	metatest.WaitFor(t, 30*time.Second, "a key put through o3 to read through o1", func() bool {
		if _, code := run(t, dir, "kv", "put", "healed", "from o3", "--addr", kvAddr(2)); code != 0 {
			return false
		}
		out, code := kvGet(0, "healed")
		return code == 0 && out == "from o3"
	})
	kvPut(0, "healed", "from o1")
	for _, k := range append([]string{"healed"}, elsewhere...) {
		out, code := kvGet(2, k)
		require.Equal(t, 0, code, "%s through o3 after the heal: %s", k, out)
	}

	// The master dies (kill -9): the data plane keeps serving.
	require.NoError(t, master.cmd.Process.Kill())
	out, code = run(t, dir, "rpc", "call", "o3", "/fluxon/ping", "no master", "--addr", grpc1)
	require.Equal(t, 0, code, out)
	require.Equal(t, "no master", out)
	kvPut(2, "no-master", "written without a master")
	for i := 0; i < 2; i++ {
		out, code := kvGet(i, "no-master")
		require.Equal(t, 0, code, "through o%d without a master: %s", i+1, out)
		require.Equal(t, "written without a master", out)
	}

	// etcd stops answering for a while: calls between live members go on,
	// and so do reads and writes of the KV (the routing table in force
	// stays in force).
	etcd.Stop()
	for _, to := range []string{"o2", "o3"} {
		out, code = run(t, dir, "rpc", "call", to, "/fluxon/ping", "no etcd", "--addr", grpc1, "--timeout", "3s")
		require.Equal(t, 0, code, "to %s: %s", to, out)
		require.Equal(t, "no etcd", out)
	}
	kvPut(1, "no-etcd", "written with etcd frozen")
	kvPut(0, "no-master", "overwritten with etcd frozen")
	for _, i := range []int{0, 2} {
		out, code := kvGet(i, "no-etcd")
		require.Equal(t, 0, code, "through o%d with etcd frozen: %s", i+1, out)
		require.Equal(t, "written with etcd frozen", out)
	}
	out, code = kvGet(2, "no-master")
	require.Equal(t, 0, code, out)
	require.Equal(t, "overwritten with etcd frozen", out, "an overwrite is seen on another host at once")
	etcd.Cont()
}

// requireOnHost checks that every transport of an endpoint string
// (multi.Encode) listens on ip.
func requireOnHost(t *testing.T, endpoints, ip string, msg string, args ...any) {
	t.Helper()
	e, err := multi.Parse(endpoints)
	require.NoError(t, err, endpoints)
	require.Contains(t, e, "tcp", endpoints)
	for name, addr := range e {
		require.True(t, strings.HasPrefix(addr, ip+":"), append([]any{"%s: " + msg, name}, args...)...)
	}
}
