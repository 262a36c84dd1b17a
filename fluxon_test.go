package fluxon_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/owner"
)

// exampleShared is where TestMain's owner for the examples writes shared.json.
var exampleShared string

// startOwner runs an owner data plane in this process, as `fluxon owner`
// would on this host, with its own shared paths.
func startOwner(tb testing.TB, cluster, sharedFiles string) *owner.Owner {
	shmDir, err := os.MkdirTemp("/dev/shm", "fluxon-client-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(shmDir) })
	cfg, err := config.Parse([]byte(fmt.Sprintf(`cluster_name: %s
instance_key: owner-1
etcd_endpoints: ["127.0.0.1:2379"]
shared_memory_path: %s
shared_file_path: %s
contribute_to_cluster_pool_size: {dram: 32MiB}
pool: {segment_size: 1MiB}
`, cluster, shmDir, sharedFiles)), config.RoleOwner)
	if err != nil {
		tb.Fatal(err)
	}
	o, err := owner.Start(cfg, "owner-1", slog.New(slog.DiscardHandler), nil, owner.Deps{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { o.Close() })
	return o
}

// tbMain adapts TestMain's needs to testing.TB's Cleanup.
type mainTB struct {
	testing.TB
	cleanups []func()
}

func (m *mainTB) Cleanup(f func())    { m.cleanups = append(m.cleanups, f) }
func (m *mainTB) Fatal(args ...any)   { panic(fmt.Sprint(args...)) }
func (m *mainTB) Helper()             {}
func (m *mainTB) Logf(string, ...any) {}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fluxon-example")
	if err != nil {
		panic(err)
	}
	exampleShared = dir
	tb := &mainTB{}
	startOwner(tb, "example", dir)
	code := m.Run()
	for i := len(tb.cleanups) - 1; i >= 0; i-- {
		tb.cleanups[i]()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func open(t *testing.T, cfg fluxon.Config) *fluxon.Client {
	t.Helper()
	c, err := fluxon.Open(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLocalAndRemoteBehaveAlike(t *testing.T) {
	shared := t.TempDir()
	o := startOwner(t, "c1", shared)
	local := open(t, fluxon.Config{ClusterName: "c1", SharedFilePath: shared})
	remote := open(t, fluxon.Config{Address: o.Endpoints["grpc"], RemoteOnly: true})
	require.Equal(t, "local", local.Mode())
	require.Equal(t, "remote", remote.Mode())

	ctx := context.Background()
	for _, c := range []*fluxon.Client{local, remote} {
		t.Run(c.Mode(), func(t *testing.T) {
			key := "k-" + c.Mode()
			val := bytes.Repeat([]byte{7}, 3<<20)
			_, err := c.Put(ctx, key, val)
			require.NoError(t, err)
			v, err := c.Get(ctx, key)
			require.NoError(t, err)
			require.Equal(t, val, v.Bytes())
			require.NoError(t, v.Close())

			ok, err := c.Exists(ctx, key)
			require.NoError(t, err)
			require.True(t, ok)
			n, err := c.Size(ctx, key)
			require.NoError(t, err)
			require.Equal(t, uint64(len(val)), n)

			_, err = c.Put(ctx, key, []byte("x"), fluxon.IfAbsent())
			require.ErrorIs(t, err, fluxon.ErrExists)
			require.NoError(t, c.Remove(ctx, key))
			_, err = c.Get(ctx, key)
			require.ErrorIs(t, err, fluxon.ErrNotFound)
			ok, err = c.Exists(ctx, key)
			require.NoError(t, err)
			require.False(t, ok)

			d := fluxon.Dict{kv.Int("layer", 3), kv.String("dtype", "bf16"), kv.Bytes("data", []byte{1, 2, 3})}
			_, err = c.PutDict(ctx, key+"-dict", d)
			require.NoError(t, err)
			v, err = c.Get(ctx, key+"-dict")
			require.NoError(t, err)
			got, err := v.Dict()
			require.NoError(t, err)
			f, ok := got.Get("dtype")
			require.True(t, ok)
			require.Equal(t, "bf16", f.Str)
			require.NoError(t, v.Close())

			id, err := c.Grant(ctx, time.Minute)
			require.NoError(t, err)
			_, err = c.Put(ctx, key+"-leased", []byte("l"), fluxon.WithLease(id))
			require.NoError(t, err)
			require.NoError(t, c.Revoke(ctx, id))
			_, err = c.Get(ctx, key+"-leased")
			require.ErrorIs(t, err, fluxon.ErrNotFound)

			items := []fluxon.Item{{Key: key + "-b1", Value: []byte("1")}, {Key: key + "-b2", Value: []byte("2")}}
			for _, err := range c.BatchPut(ctx, items) {
				require.NoError(t, err)
			}
			vals, errs := c.BatchGet(ctx, []string{key + "-b1", key + "-missing", key + "-b2"})
			require.NoError(t, errs[0])
			require.ErrorIs(t, errs[1], fluxon.ErrNotFound)
			require.Equal(t, "2", string(vals[2].Bytes()))
			vals[0].Close()
			vals[2].Close()
			rerrs := c.BatchRemove(ctx, []string{key + "-b1", key + "-missing"})
			require.NoError(t, rerrs[0])
			require.ErrorIs(t, rerrs[1], fluxon.ErrNotFound)
		})
	}
}

func TestOpenWithoutOwner(t *testing.T) {
	_, err := fluxon.Open(context.Background(), fluxon.Config{ClusterName: "none", SharedFilePath: t.TempDir()})
	require.ErrorIs(t, err, fluxon.ErrNoOwner)
	require.ErrorContains(t, err, "is an owner of cluster \"none\" running")
}

func TestFallsBackToRemote(t *testing.T) {
	o := startOwner(t, "c2", t.TempDir())
	c := open(t, fluxon.Config{ClusterName: "c2", SharedFilePath: t.TempDir(), Address: o.Endpoints["grpc"]})
	require.Equal(t, "remote", c.Mode(), "no local owner at that path: gRPC")
}

func TestLeakedValueIsReleased(t *testing.T) {
	shared := t.TempDir()
	o := startOwner(t, "c3", shared)
	c := open(t, fluxon.Config{ClusterName: "c3", SharedFilePath: shared})
	ctx := context.Background()
	_, err := c.Put(ctx, "k", []byte("v"))
	require.NoError(t, err)
	func() {
		v, err := c.Get(ctx, "k")
		require.NoError(t, err)
		_ = v.Bytes() // dropped without Close
	}()
	deadline := time.Now().Add(10 * time.Second)
	for c.Leaks() == 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, int64(1), c.Leaks())
	require.NoError(t, o.Store.Remove("k"))
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, _ := o.Pool.Stats(); st.Objects == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _ := o.Pool.Stats()
	require.Zero(t, st.Objects, "the leaked reference was released on the owner")
}

func TestCloseWaitsForHeldValues(t *testing.T) {
	shared := t.TempDir()
	startOwner(t, "c4", shared)
	c, err := fluxon.Open(context.Background(), fluxon.Config{ClusterName: "c4", SharedFilePath: shared, CloseTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	ctx := context.Background()
	_, err = c.Put(ctx, "k", []byte("v"))
	require.NoError(t, err)
	v1, err := c.Get(ctx, "k")
	require.NoError(t, err)
	v2, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, v1.Close())
	err = c.Close()
	require.ErrorIs(t, err, fluxon.ErrOutstanding)
	require.ErrorContains(t, err, "1 value(s)")
	runtime.KeepAlive(v2)
	_, err = c.Get(ctx, "k")
	require.ErrorIs(t, err, fluxon.ErrClosed)
}

func TestSharedJSON(t *testing.T) {
	shared := t.TempDir()
	o := startOwner(t, "c5", shared)
	sh, err := owner.ReadShared(filepath.Join(shared, "c5", "shared.json"))
	require.NoError(t, err)
	require.Equal(t, "owner-1", sh.InstanceKey)
	require.Equal(t, "c5", sh.ClusterName)
	require.Equal(t, o.Pool.Path(), sh.PoolPath)
	require.Equal(t, uint64(32<<20), sh.PoolSize)
	require.Equal(t, uint64(1<<20), sh.SegmentSize)
	require.Equal(t, os.Getpid(), sh.PID)
	require.NotEmpty(t, sh.ControlSocket)
	require.Equal(t, []string{"http://127.0.0.1:2379"}, sh.EtcdEndpoints)
}
