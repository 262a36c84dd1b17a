package shm

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/cgo/ring"
	"github.com/fluxon-dev/fluxon/services/kv"
)

type owner struct {
	store *kv.Store
	pool  *pool.Pool
	srv   *Server
	sock  string
}

func startOwner(t *testing.T, size uint64) *owner {
	t.Helper()
	dir := t.TempDir()
	shmDir := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-shmtest-%d-%d", os.Getpid(), rand.Uint64()))
	require.NoError(t, os.MkdirAll(shmDir, 0o755))
	t.Cleanup(func() { os.RemoveAll(shmDir) })
	p, err := pool.CreateWith(filepath.Join(shmDir, "pool"), size, 1<<20, pool.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { p.Destroy() })
	st, err := kv.New(p, kv.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	sock := filepath.Join(dir, "owner.sock")
	srv, err := Listen(st, ServerOptions{SocketPath: sock, RingDir: filepath.Join(shmDir, "rings"), PoolPath: p.Path(), Owner: "o1", PollMode: ring.BusyPoll, Slots: 64,
		Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return &owner{store: st, pool: p, srv: srv, sock: sock}
}

func dial(t *testing.T, o *owner) *Client {
	t.Helper()
	c, err := Dial(context.Background(), ClientOptions{SocketPath: o.sock, Name: t.Name()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExternalPutGetZeroCopy(t *testing.T) {
	o := startOwner(t, 32<<20)
	c := dial(t, o)
	ctx := context.Background()
	require.Equal(t, "o1", c.Owner())
	require.NoError(t, c.Ping(ctx))

	val := bytes.Repeat([]byte("fluxon"), 100_000)
	v1, err := c.Put(ctx, "k", val, kv.PutOptions{})
	require.NoError(t, err)
	got, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, val, got.Bytes())
	require.Equal(t, v1, got.Version)

	// Zero copy: the external's bytes are the owner's pool memory. A byte
	// changed through the owner's mapping shows in the external's view (a test
	// only trick: values are read only by contract).
	h, err := o.store.Get("k")
	require.NoError(t, err)
	ownerView := o.pool.Bytes(h.Offset())
	ownerView[0] = 'X'
	require.Equal(t, byte('X'), got.Bytes()[0], "the external reads the pool in place")
	ownerView[0] = val[0]
	require.NoError(t, h.Close())

	// Overwrite and remove while the external holds the old value.
	_, err = o.store.Put(ctx, "k", []byte("new"), kv.PutOptions{})
	require.NoError(t, err)
	require.NoError(t, c.Remove(ctx, "k"))
	require.Equal(t, val, got.Bytes(), "the held value is intact")
	require.NoError(t, got.Close())
	require.Error(t, got.Close())
	_, err = c.Get(ctx, "k")
	require.ErrorIs(t, err, kv.ErrNotFound)

	info, err := c.Stat(ctx, "missing")
	require.ErrorIs(t, err, kv.ErrNotFound, "%v", info)

	// In-place write.
	w, err := c.Reserve(ctx, "inplace", 4, kv.PutOptions{IfAbsent: true})
	require.NoError(t, err)
	copy(w.Bytes(), "abcd")
	_, err = o.store.Get("inplace")
	require.ErrorIs(t, err, kv.ErrNotFound, "invisible until commit")
	_, err = w.Commit(ctx)
	require.NoError(t, err)
	b, _, err := o.store.GetCopy("inplace", nil)
	require.NoError(t, err)
	require.Equal(t, "abcd", string(b))
	_, err = c.Put(ctx, "inplace", []byte("x"), kv.PutOptions{IfAbsent: true})
	require.ErrorIs(t, err, kv.ErrExists)
}

func TestLongKeysGoOverTheSocket(t *testing.T) {
	o := startOwner(t, 8<<20)
	c := dial(t, o)
	ctx := context.Background()
	key := strings.Repeat("k", 10_000)
	_, err := c.Put(ctx, key, []byte("long"), kv.PutOptions{})
	require.NoError(t, err)
	v, err := c.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "long", string(v.Bytes()))
	require.NoError(t, v.Close())
	_, err = c.Put(ctx, strings.Repeat("k", kv.MaxKeyLen+1), []byte("x"), kv.PutOptions{})
	require.ErrorIs(t, err, kv.ErrKeyTooLong)
}

// Replicas and placement hints do not travel over shared memory: a put that
// asks for them is refused with a pointer to gRPC, never silently narrowed.
func TestReplicasAreRefusedOverSharedMemory(t *testing.T) {
	o := startOwner(t, 8<<20)
	c := dial(t, o)
	ctx := context.Background()
	_, err := c.Put(ctx, "k", []byte("v"), kv.PutOptions{Replicas: 2})
	require.ErrorIs(t, err, ErrNoReplicasHere)
	_, err = c.Put(ctx, "k", []byte("v"), kv.PutOptions{Placement: []string{"o2"}})
	require.ErrorIs(t, err, ErrNoReplicasHere)
	_, err = c.Get(ctx, "k")
	require.ErrorIs(t, err, kv.ErrNotFound, "nothing was written")
}

func TestLeasesFromExternal(t *testing.T) {
	o := startOwner(t, 8<<20)
	c := dial(t, o)
	ctx := context.Background()
	id, err := c.Grant(ctx, time.Minute)
	require.NoError(t, err)
	_, err = c.Put(ctx, "leased", []byte("x"), kv.PutOptions{Lease: id})
	require.NoError(t, err)
	info, err := c.Stat(ctx, "leased")
	require.NoError(t, err)
	require.Equal(t, id, info.Lease)
	ttl, err := c.KeepAlive(ctx, id)
	require.NoError(t, err)
	require.Equal(t, time.Minute, ttl)
	require.NoError(t, c.Revoke(ctx, id))
	require.False(t, o.store.Exists("leased"))
	_, err = c.Grant(ctx, time.Millisecond)
	require.ErrorIs(t, err, kv.ErrLeaseTTL)
}

func TestManyGoroutinesOneClient(t *testing.T) {
	o := startOwner(t, 32<<20)
	c := dial(t, o)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				k := fmt.Sprintf("g%d-%d", g, i%20)
				val := []byte(fmt.Sprintf("%s=%d", k, i))
				if _, err := c.Put(ctx, k, val, kv.PutOptions{}); err != nil {
					t.Error(err)
					return
				}
				v, err := c.Get(ctx, k)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(v.Bytes(), val) {
					t.Errorf("%s: got %q want %q", k, v.Bytes(), val)
				}
				v.Close()
			}
		}(g)
	}
	wg.Wait()
}

func TestCancelledGetDoesNotLeakReference(t *testing.T) {
	o := startOwner(t, 8<<20)
	c := dial(t, o)
	_, err := c.Put(context.Background(), "k", []byte("v"), kv.PutOptions{})
	require.NoError(t, err)
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _ = c.Get(ctx, "k")
	}
	require.NoError(t, o.store.Remove("k"))
	waitFor(t, 5*time.Second, "every reference released", func() bool {
		st, _ := o.pool.Stats()
		return st.Objects == 0
	})
}

func TestOwnerGoneFailsClearly(t *testing.T) {
	o := startOwner(t, 8<<20)
	c := dial(t, o)
	require.NoError(t, o.srv.Close())
	waitFor(t, 5*time.Second, "client to notice", func() bool {
		_, err := c.Get(context.Background(), "k")
		return err != nil && strings.Contains(err.Error(), "no local owner")
	})
	_, err := Dial(context.Background(), ClientOptions{SocketPath: o.sock})
	require.ErrorIs(t, err, ErrNoOwner)
}

// The child half of TestCrashedExternalReleasesReferences.
func TestMain(m *testing.M) {
	if sock := os.Getenv("FLUXON_SHM_CHILD_SOCK"); sock != "" {
		crashChild(sock)
		return
	}
	os.Exit(m.Run())
}

func crashChild(sock string) {
	ctx := context.Background()
	c, err := Dial(ctx, ClientOptions{SocketPath: sock, Name: "doomed"})
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	var held []*Value
	for i := 0; i < 1000; i++ {
		v, err := c.Get(ctx, fmt.Sprint("obj", i%50))
		if err != nil {
			fmt.Println("get:", err)
			os.Exit(1)
		}
		held = append(held, v)
	}
	w, err := c.Reserve(ctx, "unfinished", 64<<10, kv.PutOptions{})
	if err != nil {
		fmt.Println("reserve:", err)
		os.Exit(1)
	}
	_ = w
	fmt.Printf("holding %d\n", len(held))
	select {} // wait for kill -9
}

func TestCrashedExternalReleasesReferences(t *testing.T) {
	o := startOwner(t, 16<<20)
	ctx := context.Background()
	val := make([]byte, 100<<10)
	for i := 0; i < 50; i++ {
		_, err := o.store.Put(ctx, fmt.Sprint("obj", i), val, kv.PutOptions{})
		require.NoError(t, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FLUXON_SHM_CHILD_SOCK="+o.sock)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	require.Equal(t, "holding 1000\n", string(buf[:n]))
	require.Equal(t, 1, o.srv.Attached())

	// Every object is referenced: removing them frees nothing yet.
	for i := 0; i < 50; i++ {
		require.NoError(t, o.store.Remove(fmt.Sprint("obj", i)))
	}
	st, _ := o.pool.Stats()
	require.Equal(t, uint64(51), st.Objects, "50 held values + 1 unfinished write")

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	waitFor(t, 5*time.Second, "owner to release the dead external's references", func() bool {
		st, _ := o.pool.Stats()
		return st.Objects == 0 && o.srv.Attached() == 0
	})
	// The memory is allocatable again and the owner keeps serving.
	for i := 0; i < 100; i++ {
		_, err := o.store.Put(ctx, fmt.Sprint("after", i), val, kv.PutOptions{})
		require.NoError(t, err)
	}
	c := dial(t, o)
	v, err := c.Get(ctx, "after7")
	require.NoError(t, err)
	require.Len(t, v.Bytes(), len(val))
	require.NoError(t, v.Close())
	entries, _ := os.ReadDir(filepath.Dir(o.pool.Path()) + "/rings")
	require.Len(t, entries, 1, "the dead external's ring file is gone; only the live one remains")
}
