package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

type testOwner struct {
	node  *Node
	store *kv.Store
	pool  *pool.Pool
	peer  Peer
}

// startCluster runs n owners in this process, each with its own pool and
// its own TCP transport endpoint on loopback.
func startCluster(t testing.TB, n int, ttl time.Duration) []*testOwner {
	t.Helper()
	var owners []*testOwner
	var peers []Peer
	for i := 0; i < n; i++ {
		o := startOwner(t, fmt.Sprint("o", i), time.Unix(1000+int64(i), 0), fmt.Sprint("h", i), ttl)
		owners = append(owners, o)
		peers = append(peers, o.peer)
	}
	for _, o := range owners {
		require.NoError(t, o.node.SetRouting(1, peers))
	}
	return owners
}

// startOwner runs one owner with its own pool and TCP endpoint on loopback;
// it joins no routing table yet.
func startOwner(t testing.TB, name string, start time.Time, host string, ttl time.Duration) *testOwner {
	t.Helper()
	tr, err := tcp.New(tcp.Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}})
	require.NoError(t, err)
	return startOwnerOver(t, tr, name, start, host, ttl)
}

// startOwnerOver is startOwner over transport tr.
func startOwnerOver(t testing.TB, tr transport.Transport, name string, start time.Time, host string, ttl time.Duration) *testOwner {
	t.Helper()
	path := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-cluster-%d-%d", os.Getpid(), rand.Uint64()))
	p, err := pool.CreateWith(path, 64<<20, 1<<20, pool.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { p.Destroy() })
	st, err := kv.New(p, kv.Options{Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	id := transport.Identity{ClusterName: "c", InstanceKey: name, StartTime: start, Role: "owner"}
	node := New(Options{Self: id, Store: st, Transport: tr, ListenAddr: "127.0.0.1:0", SessionTTL: ttl, Log: slog.New(slog.DiscardHandler)})
	addr, err := node.Start(context.Background())
	require.NoError(t, err)
	o := &testOwner{node: node, store: st, pool: p, peer: Peer{ID: id, Addr: addr, Host: host}}
	t.Cleanup(func() { o.node.Close() })
	return o
}

func read(t *testing.T, o *testOwner, key string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := o.node.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return append([]byte(nil), h.Bytes()...), nil
}

func TestPutOnOneHostGetOnAnother(t *testing.T) {
	os := startCluster(t, 3, 3*time.Second)
	ctx := context.Background()
	val := bytes.Repeat([]byte("v1"), 4<<20) // 8 MiB
	_, err := os[0].node.Put(ctx, "k", val, kv.PutOptions{})
	require.NoError(t, err)
	for i, o := range os {
		got, err := read(t, o, "k")
		require.NoError(t, err, "owner %d", i)
		require.True(t, bytes.Equal(val, got), "owner %d", i)
	}
	// The readers now hold replicas in their own pools.
	require.True(t, os[1].store.Exists("k"))
	require.True(t, os[2].store.Exists("k"))

	// Overwrite from a third host: no one returns the old value afterwards.
	val2 := []byte("second")
	_, err = os[2].node.Put(ctx, "k", val2, kv.PutOptions{})
	require.NoError(t, err)
	for i, o := range os {
		got, err := read(t, o, "k")
		require.NoError(t, err, "owner %d", i)
		require.Equal(t, val2, got, "owner %d sees the overwrite at once", i)
	}
	// Remove: gone everywhere.
	require.NoError(t, os[1].node.Remove(ctx, "k"))
	for i, o := range os {
		_, err := read(t, o, "k")
		require.ErrorIs(t, err, kv.ErrNotFound, "owner %d", i)
		require.False(t, o.store.Exists("k"), "owner %d dropped its copy", i)
	}
}

func TestWriteWaitsOutASilentHolder(t *testing.T) {
	os := startCluster(t, 3, 1*time.Second)
	ctx := context.Background()
	// Find a key homed on owner 0 so that owner 2 is only a holder.
	key := ""
	for i := 0; ; i++ {
		k := fmt.Sprint("key", i)
		if h, _, _ := os[0].node.homeOf(k); h == os[0].peer.Name() {
			key = k
			break
		}
	}
	_, err := os[0].node.Put(ctx, key, []byte("old"), kv.PutOptions{})
	require.NoError(t, err)
	_, err = read(t, os[2], key)
	require.NoError(t, err)
	// Owner 2 goes silent (stops answering: its listener and sessions stop).
	require.NoError(t, os[2].node.Close())
	start := time.Now()
	_, err = os[1].node.Put(ctx, key, []byte("new"), kv.PutOptions{})
	require.NoError(t, err)
	took := time.Since(start)
	t.Logf("write completed %s after the holder went silent", took.Round(time.Millisecond))
	got, err := read(t, os[1], key)
	require.NoError(t, err)
	require.Equal(t, "new", string(got))
	// The silent holder cannot serve its stale copy: its session has ended by its own clock.
	os[2].node.mu.Lock()
	live := os[2].node.sessionLive(os[0].peer.Name())
	os[2].node.mu.Unlock()
	require.False(t, live)
}

func TestConcurrentWritersAndReaders(t *testing.T) {
	os := startCluster(t, 3, 3*time.Second)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				k := fmt.Sprint("k", i%5)
				if _, err := os[w].node.Put(ctx, k, []byte(fmt.Sprintf("%s-w%d-%d", k, w, i)), kv.PutOptions{}); err != nil {
					t.Error(err)
					return
				}
				got, err := read(t, os[(w+1)%3], k)
				if err != nil && !errorsIsNotFound(err) {
					t.Error(err)
					return
				}
				if err == nil && !bytes.HasPrefix(got, []byte(k+"-")) {
					t.Errorf("%s holds %q", k, got)
				}
			}
		}(w)
	}
	wg.Wait()
	// Afterwards all owners agree on every key.
	for i := 0; i < 5; i++ {
		k := fmt.Sprint("k", i)
		want, err := read(t, os[0], k)
		require.NoError(t, err)
		for _, o := range os[1:] {
			got, err := read(t, o, k)
			require.NoError(t, err)
			require.Equal(t, want, got)
		}
	}
}

func errorsIsNotFound(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("not found"))
}

// A put asking for 3 replicas returns once 3 owners on distinct hosts hold
// it: the writer dies and the value is still read everywhere.
func TestPutWithReplicas(t *testing.T) {
	os := startCluster(t, 3, 2*time.Second)
	ctx := context.Background()
	_, err := os[0].node.Put(ctx, "r", []byte("kept"), kv.PutOptions{Replicas: 3})
	require.NoError(t, err)
	for i, o := range os {
		require.True(t, o.store.Exists("r"), "owner %d holds a replica", i)
	}
	// Asking for more hosts than the table has says so, and keeps what it made.
	_, err = os[1].node.Put(ctx, "r4", []byte("v"), kv.PutOptions{Replicas: 4})
	require.ErrorIs(t, err, ErrReplicas)
	require.ErrorContains(t, err, "3 of 4 copies")
	got, err := read(t, os[2], "r4")
	require.NoError(t, err)
	require.Equal(t, "v", string(got))

	// The writer dies and leaves the table: the others re-home the key
	// from their replicas and still serve it.
	require.NoError(t, os[0].node.Close())
	for _, o := range os[1:] {
		require.NoError(t, o.node.SetRouting(2, []Peer{os[1].peer, os[2].peer}))
	}
	for _, o := range os[1:] {
		got, err := read(t, o, "r")
		require.NoError(t, err)
		require.Equal(t, "kept", string(got))
	}
}

// An owner dies holding the only copy of a key: reads fail with
// ErrUnavailable (not "not found"), before and after the routing table
// drops it, while keys held elsewhere keep working.
func TestKeyOfADeadOwnerIsUnavailable(t *testing.T) {
	os := startCluster(t, 3, time.Second)
	ctx := context.Background()
	key := ""
	for i := 0; key == ""; i++ {
		if h, _, _ := os[1].node.homeOf(fmt.Sprint("k", i)); h == os[1].peer.Name() {
			key = fmt.Sprint("k", i)
		}
	}
	_, err := os[0].node.Put(ctx, key, []byte("only on o0"), kv.PutOptions{})
	require.NoError(t, err)
	_, err = os[2].node.Put(ctx, "other", []byte("on o2"), kv.PutOptions{})
	require.NoError(t, err)
	require.NoError(t, os[0].node.Close())

	_, err = read(t, os[2], key)
	require.ErrorIs(t, err, ErrUnavailable)
	for _, o := range os[1:] {
		require.NoError(t, o.node.SetRouting(2, []Peer{os[1].peer, os[2].peer}))
	}
	_, err = read(t, os[2], key)
	require.ErrorIs(t, err, ErrUnavailable, "still unavailable once the table dropped its holder")
	require.ErrorContains(t, err, "every owner that held it is gone")
	got, err := read(t, os[1], "other")
	require.NoError(t, err)
	require.Equal(t, "on o2", string(got))
	// A new put replaces the lost value.
	_, err = os[2].node.Put(ctx, key, []byte("again"), kv.PutOptions{})
	require.NoError(t, err)
	got, err = read(t, os[1], key)
	require.NoError(t, err)
	require.Equal(t, "again", string(got))
}

// Put if absent / if present are decided at the key's home, for the whole
// cluster; a refused conditional put leaves the value where it was.
func TestConditionalPutsAcrossOwners(t *testing.T) {
	os := startCluster(t, 3, 2*time.Second)
	ctx := context.Background()
	_, err := os[0].node.Put(ctx, "lock", []byte("o0"), kv.PutOptions{IfAbsent: true})
	require.NoError(t, err)
	_, err = os[1].node.Put(ctx, "lock", []byte("o1"), kv.PutOptions{IfAbsent: true})
	require.ErrorIs(t, err, kv.ErrExists, "another owner's copy counts")
	_, err = os[0].node.Put(ctx, "lock", []byte("o0 again"), kv.PutOptions{IfAbsent: true})
	require.ErrorIs(t, err, kv.ErrExists)
	for _, o := range os {
		got, err := read(t, o, "lock")
		require.NoError(t, err)
		require.Equal(t, "o0", string(got), "a refused put leaves the value")
	}
	_, err = os[2].node.Put(ctx, "nokey", []byte("x"), kv.PutOptions{IfPresent: true})
	require.ErrorIs(t, err, kv.ErrNotFound)
	_, err = os[2].node.Put(ctx, "lock", []byte("o2"), kv.PutOptions{IfPresent: true})
	require.NoError(t, err)
	got, err := read(t, os[0], "lock")
	require.NoError(t, err)
	require.Equal(t, "o2", string(got))

	// Many owners race for one key: exactly one wins.
	var wins atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := os[i%3].node.Put(ctx, "race", []byte(fmt.Sprint(i)), kv.PutOptions{IfAbsent: true})
			if err == nil {
				wins.Add(1)
			} else {
				require.ErrorIs(t, err, kv.ErrExists)
			}
		}(i)
	}
	wg.Wait()
	require.Equal(t, int64(1), wins.Load())
}

// An owner that has no routing table yet (it is starting) makes operations
// wait for the first one within their context, rather than fail.
func TestOperationsWaitForTheFirstTable(t *testing.T) {
	o := startOwner(t, "o0", time.Unix(1000, 0), "h0", time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := o.node.Put(ctx, "k", []byte("v"), kv.PutOptions{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = o.node.SetRouting(1, []Peer{o.peer})
	}()
	_, err = o.node.Put(context.Background(), "k", []byte("v"), kv.PutOptions{})
	require.NoError(t, err)
	got, err := read(t, o, "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(got))
}

func TestStripesFor(t *testing.T) {
	for size, want := range map[uint64]int{0: 1, stripeMin - 1: 1, stripeMin: 2, 3 * stripeMin / 2: 3, 2 * stripeMin: 4, 1 << 40: maxStripes} {
		require.Equal(t, want, stripesFor(size), "lanes for %d bytes", size)
	}
}

// A value of stripeMin bytes or more is pulled in stripes over several
// connections (here the most lanes, in ranges of unequal length); the bytes
// arrive intact and the holder's pin is released once every stripe was
// sent.
func TestStripedPullOfALargeValue(t *testing.T) {
	os := startCluster(t, 2, 2*time.Second)
	ctx := context.Background()
	val := make([]byte, 2*stripeMin+12345)
	for i := range val {
		val[i] = byte(i * 7)
	}
	_, err := os[0].node.Put(ctx, "big", val, kv.PutOptions{})
	require.NoError(t, err)
	got, err := read(t, os[1], "big")
	require.NoError(t, err)
	require.True(t, bytes.Equal(val, got), "the striped copy differs")
	require.Eventually(t, func() bool {
		os[0].node.pinMu.Lock()
		defer os[0].node.pinMu.Unlock()
		return len(os[0].node.pins) == 0
	}, 5*time.Second, 10*time.Millisecond, "the pin is released after the last stripe")
	os[1].node.mu.Lock()
	lanes := 0
	for k := range os[1].node.conns {
		if strings.HasPrefix(k, os[0].peer.Name()) {
			lanes++
		}
	}
	os[1].node.mu.Unlock()
	require.Equal(t, maxStripes, lanes, "one connection per stripe")

	// A read past the end of the pinned copy is refused, not served.
	pr := pinOf(t, os[0], "big")
	end := uint64(pr.At.Segment)*pr.At.SegmentSize + pr.At.Offset + pr.Size
	c, err := os[1].node.conn(ctx, os[0].peer.Name())
	require.NoError(t, err)
	ref := transport.RemoteRef{Segment: uint32(end / pr.At.SegmentSize), Offset: end % pr.At.SegmentSize, Length: 1, Tag: pr.Pin}
	err = c.ReadRemote(ctx, ref, make([]byte, 1))
	require.ErrorContains(t, err, "outside pinned copy")
}

// pinOf pins o's copy of key as a reader would.
func pinOf(t *testing.T, o *testOwner, key string) pinResp {
	t.Helper()
	b, err := o.node.pin(pinReq{Key: key, Version: mustVersion(t, o, key), PoolRefs: true})
	require.NoError(t, err)
	var pr pinResp
	require.NoError(t, json.Unmarshal(b, &pr))
	require.Equal(t, "ok", pr.Status)
	require.NotNil(t, pr.At)
	return pr
}

func mustVersion(t *testing.T, o *testOwner, key string) uint64 {
	t.Helper()
	o.node.mu.Lock()
	defer o.node.mu.Unlock()
	lc, ok := o.node.local[key]
	require.True(t, ok)
	return lc.version
}

// A placement hint puts a copy on the named owners (where the value will be
// read) when the put returns; an unknown owner fails the hint, not the put.
func TestPutWithPlacementHint(t *testing.T) {
	os := startCluster(t, 3, 2*time.Second)
	ctx := context.Background()
	_, err := os[0].node.Put(ctx, "p", []byte("for o2"), kv.PutOptions{Placement: []string{"o2"}})
	require.NoError(t, err)
	require.True(t, os[2].store.Exists("p"), "the hinted owner holds a copy")
	require.False(t, os[1].store.Exists("p"), "nobody else was asked")

	_, err = os[1].node.Put(ctx, "q", []byte("v"), kv.PutOptions{Placement: []string{"nobody"}})
	require.ErrorIs(t, err, ErrReplicas)
	require.ErrorContains(t, err, `placement "nobody": no such owner`)
	got, err := read(t, os[0], "q")
	require.NoError(t, err)
	require.Equal(t, "v", string(got), "the value is committed anyway")
}

// An owner that was both a key's home and its only holder dies: the key's
// directory backup on another host makes it read as unavailable once the
// table drops the owner, not as never written.
func TestKeyHomedAndHeldByADeadOwnerIsUnavailable(t *testing.T) {
	os := startCluster(t, 3, time.Second)
	ctx := context.Background()
	key := ""
	for i := 0; key == ""; i++ {
		if h, _, _ := os[0].node.homeOf(fmt.Sprint("k", i)); h == os[0].peer.Name() {
			key = fmt.Sprint("k", i)
		}
	}
	_, err := os[0].node.Put(ctx, key, []byte("only on o0"), kv.PutOptions{})
	require.NoError(t, err)
	removed := ""
	for i := 0; removed == ""; i++ {
		if h, _, _ := os[0].node.homeOf(fmt.Sprint("r", i)); h == os[0].peer.Name() {
			removed = fmt.Sprint("r", i)
		}
	}
	_, err = os[0].node.Put(ctx, removed, []byte("soon gone"), kv.PutOptions{})
	require.NoError(t, err)
	require.NoError(t, os[0].node.Remove(ctx, removed))
	time.Sleep(5 * backupFlush) // the backups travel in the background
	require.NoError(t, os[0].node.Close())
	for _, o := range os[1:] {
		require.NoError(t, o.node.SetRouting(2, []Peer{os[1].peer, os[2].peer}))
	}
	_, err = read(t, os[1], key)
	require.ErrorIs(t, err, ErrUnavailable)
	_, err = read(t, os[2], removed)
	require.ErrorIs(t, err, kv.ErrNotFound, "a removed key stays removed")
}
