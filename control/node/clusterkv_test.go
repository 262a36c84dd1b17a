package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/internal/selfsigned"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/kvgrpc"
	"github.com/fluxon-dev/fluxon/services/kv/placement"
	"github.com/fluxon-dev/fluxon/services/owner"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
)

const testCluster = "kvc"

// memberConfig is a validated config of a member of testCluster on loopback,
// with shared memory and shared files of its own.
func memberConfig(t *testing.T, role config.Role, etcd, key string) *config.Config {
	t.Helper()
	shm := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-nodetest-%d-%s-%d", os.Getpid(), key, time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(shm) })
	cfg := &config.Config{
		ClusterName: testCluster, InstanceKey: key, EtcdEndpoints: []string{etcd},
		SharedMemoryPath: shm, SharedFilePath: t.TempDir(),
		Lease: config.LeaseConfig{TTL: config.Duration(2 * time.Second)},
		// Event-driven: busy-polling owners would take the 2 cores a test
		// machine may have.
		Network: config.NetworkConfig{PollMode: config.PollEventDriven, TCPReactorMode: config.PollEventDriven},
	}
	if role == config.RoleOwner {
		cfg.ContributeToClusterPoolSize.DRAM = 64 * config.MiB
		cfg.Listen.RESP = "127.0.0.1:0"
	}
	if role == config.RoleMaster {
		cfg.Master.ElectionTTL = config.Duration(2 * time.Second)
	}
	cfg.ApplyDefaults(role)
	require.NoError(t, cfg.Validate(role))
	return cfg
}

func startMember(t *testing.T, role meta.Role, etcd, key string) *Running {
	t.Helper()
	cfg := memberConfig(t, config.Role(role), etcd, key)
	r, err := Start(context.Background(), role, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// waitOwners waits until every member follows a routing table of n owners
// that all serve the cluster KV.
func waitOwners(t *testing.T, n int, members ...*Running) {
	t.Helper()
	metatest.WaitFor(t, 30*time.Second, fmt.Sprintf("a routing table of %d owners on every member", n), func() bool {
		for _, m := range members {
			if len(owner.OwnerPeers(testCluster, m.Routing())) != n {
				return false
			}
		}
		return true
	})
}

// homeOf is the owner (instance key) the cluster KV homes key on.
func homeOf(t meta.RoutingTable, key string) string {
	peers := owner.OwnerPeers(testCluster, t)
	nodes := make([]placement.Node, len(peers))
	for i, p := range peers {
		nodes[i] = placement.Node{ID: p.Name(), Host: p.Host}
	}
	return peers[placement.Home(placement.KeyHash(key), nodes)].ID.InstanceKey
}

// keyHomedOn returns a key with prefix that the table homes on owner.
func keyHomedOn(t *testing.T, table meta.RoutingTable, prefix, owner string) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if k := fmt.Sprint(prefix, i); homeOf(table, k) == owner {
			return k
		}
	}
	t.Fatalf("no key homed on %s", owner)
	return ""
}

// respConn is a minimal RESP2 client: enough to send commands and read
// simple, error, integer and bulk replies.
type respConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRESP(t *testing.T, addr string) *respConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &respConn{t: t, c: c, r: bufio.NewReader(c)}
}

// do sends a command and returns its reply: "+OK", "-ERR ...", ":1",
// the bulk's bytes, or "(nil)".
func (r *respConn) do(args ...string) string {
	r.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	require.NoError(r.t, r.c.SetDeadline(time.Now().Add(time.Minute)))
	_, err := io.WriteString(r.c, b.String())
	require.NoError(r.t, err)
	line, err := r.r.ReadString('\n')
	require.NoError(r.t, err)
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" || line[0] != '$' {
		return line
	}
	n, err := strconv.Atoi(line[1:])
	require.NoError(r.t, err)
	if n < 0 {
		return "(nil)"
	}
	buf := make([]byte, n+2)
	_, err = io.ReadFull(r.r, buf)
	require.NoError(r.t, err)
	return string(buf[:n])
}

// openLocal attaches to an owner through shared memory, as a business
// process on its host does.
func openLocal(t *testing.T, r *Running) *fluxon.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := fluxon.Open(ctx, fluxon.Config{ClusterName: testCluster, SharedFilePath: filepath.Dir(r.Owner.Paths.SharedDir), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func localGet(t *testing.T, c *fluxon.Client, key string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	b, _, err := c.GetCopy(ctx, key)
	return string(b), err
}

// Two owners of one cluster, in this process with an embedded etcd: a key
// written through one owner's RESP is read through the other's RESP and
// shared memory, an overwrite and a remove on either are seen on the other,
// and a key whose only holder stops answering reads as unavailable on every
// frontend of the owner that is still up.
//
// The master starts after both owners so that the first routing table lists
// both: the cluster KV follows it without re-homing.
// TestClusterKVOwnerJoins covers owners that join one after the other.
func TestClusterKVAcrossOwners(t *testing.T) {
	etcd := metatest.Embedded(t)
	a := startMember(t, meta.RoleOwner, etcd, "a")
	b := startMember(t, meta.RoleOwner, etcd, "b")
	require.NotEmpty(t, a.Member.Endpoints[owner.KVEndpointKey], "the cluster KV endpoint is in the member record")
	for _, ep := range []string{a.Member.Endpoints[owner.KVEndpointKey], a.Member.Endpoints["rpc"]} {
		// ucx joins them where the build has it (make test: -tags ucx with libucx).
		require.Subset(t, multi.Names(ep), []string{"quic", "tcp", "websocket"}, "both nodes advertise every transport that runs here: %s", ep)
	}
	startMember(t, meta.RoleMaster, etcd, "m")
	waitOwners(t, 2, a, b)
	table := a.Routing()

	ra, rb := dialRESP(t, a.Owner.Endpoints["resp"]), dialRESP(t, b.Owner.Endpoints["resp"])
	// The table reached the cluster KV right after Routing() showed it.
	metatest.WaitFor(t, 10*time.Second, "the first write through the cluster", func() bool {
		return ra.do("SET", "probe", "x") == "+OK"
	})

	// One key homed on each owner: both directory paths are exercised.
	keys := []string{keyHomedOn(t, table, "k-a-", "a"), keyHomedOn(t, table, "k-b-", "b")}
	lb := openLocal(t, b)
	for _, k := range keys {
		require.Equal(t, "+OK", ra.do("SET", k, "v1-"+k), k)
		require.Equal(t, "v1-"+k, rb.do("GET", k), "%s put on A, read through B's RESP", k)
		got, err := localGet(t, lb, k)
		require.NoError(t, err, k)
		require.Equal(t, "v1-"+k, got, "%s put on A, read through B's shared memory", k)
	}
	require.True(t, b.Owner.Store.Exists(keys[0]), "B read the value into its own pool")

	for _, k := range keys {
		require.Equal(t, "+OK", rb.do("SET", k, "v2-"+k), k)
		require.Equal(t, "v2-"+k, ra.do("GET", k), "%s overwritten on B is seen on A", k)
	}
	for _, k := range keys {
		require.Equal(t, ":1", ra.do("DEL", k), k)
		require.Equal(t, "(nil)", rb.do("GET", k), "%s removed on A is gone on B", k)
		_, err := localGet(t, lb, k)
		require.ErrorIs(t, err, fluxon.ErrNotFound, k)
		require.Equal(t, ":0", rb.do("EXISTS", k), k)
	}

	// Keys only B holds: one homed on B, one homed on A. A keeps a key of
	// its own (homed on A, held by A).
	onlyB := []string{keyHomedOn(t, table, "b-home-b-", "b"), keyHomedOn(t, table, "b-home-a-", "a")}
	for _, k := range onlyB {
		require.Equal(t, "+OK", rb.do("SET", k, "b"), k)
	}
	mine := keyHomedOn(t, table, "a-own-", "a")
	require.Equal(t, "+OK", ra.do("SET", mine, "a"))

	// B's cluster KV stops answering (its member record stays, so the
	// routing table does not change).
	require.NoError(t, b.Owner.Cluster.Close())
	ga, err := kvgrpc.Dial(context.Background(), a.Owner.Endpoints["grpc"])
	require.NoError(t, err)
	t.Cleanup(func() { ga.Close() })
	la := openLocal(t, a)
	for _, k := range onlyB {
		require.True(t, strings.HasPrefix(ra.do("GET", k), "-UNAVAILABLE "), "%s through A's RESP", k)

		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		_, _, err := ga.Get(ctx, k)
		cancel()
		require.ErrorIs(t, err, kv.ErrUnavailable, "%s through A's gRPC", k)
		require.Equal(t, codes.Unavailable, status.Code(err), k)

		_, err = localGet(t, la, k)
		require.ErrorIs(t, err, fluxon.ErrUnavailable, "%s through A's shared memory", k)
		require.False(t, errors.Is(err, fluxon.ErrNotFound), k)
	}
	require.Equal(t, "a", ra.do("GET", mine), "a key A homes and holds still reads")
}

// Owners that register one after the other change the routing epoch while
// they start: the cluster KV re-homes keys on every new table. A key written
// before a join is read through the joined owner, and the first owner sees
// writes and removes made on the second.
//
// Needs re-homing on an epoch change in services/kv/cluster: until that
// lands, SetRouting refuses the second epoch and this test fails.
func TestClusterKVOwnerJoins(t *testing.T) {
	etcd := metatest.Embedded(t)
	startMember(t, meta.RoleMaster, etcd, "m")
	a := startMember(t, meta.RoleOwner, etcd, "a")
	waitOwners(t, 1, a)
	ra := dialRESP(t, a.Owner.Endpoints["resp"])
	metatest.WaitFor(t, 10*time.Second, "the first write through the cluster", func() bool {
		return ra.do("SET", "probe", "x") == "+OK"
	})
	var keys []string
	for i := 0; i < 8; i++ {
		k := fmt.Sprint("before-join-", i)
		require.Equal(t, "+OK", ra.do("SET", k, "v1-"+k))
		keys = append(keys, k)
	}

	b := startMember(t, meta.RoleOwner, etcd, "b")
	waitOwners(t, 2, a, b)
	rb := dialRESP(t, b.Owner.Endpoints["resp"])
	lb := openLocal(t, b)
	for _, k := range keys {
		var got string
		metatest.WaitFor(t, 20*time.Second, k+" through B after the join", func() bool {
			got = rb.do("GET", k)
			return !strings.HasPrefix(got, "-UNAVAILABLE")
		})
		require.Equal(t, "v1-"+k, got, "%s put on A before B joined, read through B", k)
		v, err := localGet(t, lb, k)
		require.NoError(t, err, k)
		require.Equal(t, "v1-"+k, v, k)
	}
	for _, k := range keys {
		require.Equal(t, "+OK", rb.do("SET", k, "v2-"+k))
		require.Equal(t, "v2-"+k, ra.do("GET", k), "%s overwritten on B is seen on A", k)
		require.Equal(t, ":1", ra.do("DEL", k))
		require.Equal(t, "(nil)", rb.do("GET", k), "%s removed on A is gone on B", k)
	}
}

// Owners whose only transport is quic, with certificates from a CA both
// trust (network.tls, as `fluxon up` makes them): the cluster KV works over
// mutually verified TLS.
func TestClusterKVOverQUICWithTLS(t *testing.T) {
	etcd := metatest.Embedded(t)
	certs, err := selfsigned.Ensure(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	start := func(key string) *Running {
		cfg := memberConfig(t, config.RoleOwner, etcd, key)
		cfg.Network.Transports = []string{config.TransportQUIC}
		cfg.Network.TLS = config.TLSConfig{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
		r, err := Start(context.Background(), meta.RoleOwner, cfg, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := start("a"), start("b")
	require.Equal(t, []string{"quic"}, multi.Names(a.Member.Endpoints[owner.KVEndpointKey]))
	startMember(t, meta.RoleMaster, etcd, "m")
	waitOwners(t, 2, a, b)
	table := a.Routing()
	ra, rb := dialRESP(t, a.Owner.Endpoints["resp"]), dialRESP(t, b.Owner.Endpoints["resp"])
	metatest.WaitFor(t, 10*time.Second, "the first write through the cluster", func() bool {
		return ra.do("SET", "probe", "x") == "+OK"
	})
	for _, k := range []string{keyHomedOn(t, table, "k-a-", "a"), keyHomedOn(t, table, "k-b-", "b")} {
		require.Equal(t, "+OK", ra.do("SET", k, "over quic "+k), k)
		require.Equal(t, "over quic "+k, rb.do("GET", k), "%s put on A, read through B over quic", k)
	}
}
