package kv

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/cgo/pool"
)

// fakeClock is a settable clock for lease tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newPool(t testing.TB, size uint64) *pool.Pool {
	t.Helper()
	path := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-kvtest-%d-%d", os.Getpid(), rand.Uint64()))
	p, err := pool.CreateWith(path, size, 1<<20, pool.Options{Replace: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Destroy() })
	return p
}

func newStore(t testing.TB, size uint64, clock *fakeClock) *Store {
	t.Helper()
	o := Options{}
	if clock != nil {
		o.Now = clock.Now
	}
	s, err := New(newPool(t, size), o)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func get(t *testing.T, s *Store, key string) string {
	t.Helper()
	b, _, err := s.GetCopy(key, nil)
	require.NoError(t, err)
	return string(b)
}

func TestPutGetRemove(t *testing.T) {
	s := newStore(t, 16<<20, nil)
	ctx := context.Background()
	v1, err := s.Put(ctx, "a", []byte("hello"), PutOptions{})
	require.NoError(t, err)
	require.Equal(t, "hello", get(t, s, "a"))
	require.True(t, s.Exists("a"))
	n, err := s.Size("a")
	require.NoError(t, err)
	require.Equal(t, uint64(5), n)

	v2, err := s.Put(ctx, "a", []byte("world!"), PutOptions{})
	require.NoError(t, err)
	require.Greater(t, v2, v1, "versions grow")
	info, err := s.Stat("a")
	require.NoError(t, err)
	require.Equal(t, v2, info.Version)
	require.Equal(t, "world!", get(t, s, "a"))

	_, err = s.Put(ctx, "empty", nil, PutOptions{})
	require.NoError(t, err, "empty values are values")
	require.Equal(t, "", get(t, s, "empty"))

	require.NoError(t, s.Remove("a"))
	require.ErrorIs(t, s.Remove("a"), ErrNotFound)
	_, err = s.Get("a")
	require.ErrorIs(t, err, ErrNotFound)
	require.False(t, s.Exists("a"))
	require.Equal(t, 1, s.Len())
	st := s.Stats()
	require.Equal(t, uint64(1), st.Objects)
	require.Equal(t, uint64(1), st.Misses)
}

func TestLimits(t *testing.T) {
	s := newStore(t, 8<<20, nil)
	ctx := context.Background()
	_, err := s.Put(ctx, "", []byte("x"), PutOptions{})
	require.ErrorIs(t, err, ErrEmptyKey)
	_, err = s.Put(ctx, string(make([]byte, MaxKeyLen+1)), []byte("x"), PutOptions{})
	require.ErrorIs(t, err, ErrKeyTooLong)
	_, err = s.Put(ctx, string(make([]byte, MaxKeyLen)), []byte("x"), PutOptions{})
	require.NoError(t, err, "a key of exactly MaxKeyLen is fine")
	_, err = s.Put(ctx, "big", make([]byte, 9<<20), PutOptions{})
	require.ErrorIs(t, err, ErrValueTooLarge)
	require.ErrorContains(t, err, "contribute_to_cluster_pool_size")
	_, err = s.Put(ctx, "k", []byte("x"), PutOptions{TTL: 10 * time.Millisecond})
	require.ErrorIs(t, err, ErrLeaseTTL)
	_, err = s.Put(ctx, "k", []byte("x"), PutOptions{Lease: 12345})
	require.ErrorIs(t, err, ErrLeaseNotFound)
}

func TestConditionalPuts(t *testing.T) {
	s := newStore(t, 8<<20, nil)
	ctx := context.Background()
	_, err := s.Put(ctx, "k", []byte("1"), PutOptions{IfPresent: true})
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.Put(ctx, "k", []byte("1"), PutOptions{IfAbsent: true})
	require.NoError(t, err)
	_, err = s.Put(ctx, "k", []byte("2"), PutOptions{IfAbsent: true})
	require.ErrorIs(t, err, ErrExists)
	require.Equal(t, "1", get(t, s, "k"))
	_, err = s.Put(ctx, "k", []byte("3"), PutOptions{IfPresent: true})
	require.NoError(t, err)
	require.Equal(t, "3", get(t, s, "k"))

	// Two writers racing with IfAbsent from the start: exactly one wins, even
	// when both reserved before either committed.
	r1, err := s.Reserve(ctx, "race", 1, PutOptions{IfAbsent: true})
	require.NoError(t, err)
	r2, err := s.Reserve(ctx, "race", 1, PutOptions{IfAbsent: true})
	require.NoError(t, err)
	s.Bytes(r1)[0], s.Bytes(r2)[0] = 'a', 'b'
	_, err = s.Commit(r1)
	require.NoError(t, err)
	_, err = s.Commit(r2)
	require.ErrorIs(t, err, ErrExists)
	require.Equal(t, "a", get(t, s, "race"))
}

func TestRejectInflight(t *testing.T) {
	s := newStore(t, 8<<20, nil)
	ctx := context.Background()
	r, err := s.Reserve(ctx, "k", 3, PutOptions{})
	require.NoError(t, err)
	_, err = s.Put(ctx, "k", []byte("other"), PutOptions{RejectInflight: true})
	require.ErrorIs(t, err, ErrInflight)
	_, err = s.Get("k")
	require.ErrorIs(t, err, ErrNotFound, "a value being written is invisible")
	copy(s.Bytes(r), "abc")
	_, err = s.Commit(r)
	require.NoError(t, err)
	_, err = s.Put(ctx, "k", []byte("other"), PutOptions{RejectInflight: true})
	require.NoError(t, err, "nothing in flight any more")

	before, _ := s.pool.Stats()
	r, err = s.Reserve(ctx, "k2", 1000, PutOptions{})
	require.NoError(t, err)
	require.NoError(t, s.Abort(r))
	after, _ := s.pool.Stats()
	require.Equal(t, before.Reserved, after.Reserved, "an aborted write gives its memory back")
	_, err = s.Put(ctx, "k2", []byte("x"), PutOptions{RejectInflight: true})
	require.NoError(t, err)
}

// A reader holding a value keeps its bytes, unchanged, across overwrite and
// remove; the memory is freed only when the reader lets go.
func TestReadersKeepOldValue(t *testing.T) {
	s := newStore(t, 8<<20, nil)
	ctx := context.Background()
	old := bytes.Repeat([]byte{0xAA}, 100<<10)
	_, err := s.Put(ctx, "k", old, PutOptions{})
	require.NoError(t, err)
	h, err := s.Get("k")
	require.NoError(t, err)
	used, _ := s.pool.Stats()

	_, err = s.Put(ctx, "k", bytes.Repeat([]byte{0xBB}, 100<<10), PutOptions{})
	require.NoError(t, err)
	require.NoError(t, s.Remove("k"))
	// Fill the pool's free space with other objects: none may land on h's bytes.
	for i := 0; i < 20; i++ {
		_, _ = s.Put(ctx, fmt.Sprint("f", i), bytes.Repeat([]byte{0xCC}, 100<<10), PutOptions{})
	}
	require.Equal(t, old, h.Bytes(), "the reader's value is intact")
	mid, _ := s.pool.Stats()
	require.GreaterOrEqual(t, mid.Reserved, used.Reserved-100<<10)
	require.NoError(t, h.Close())
	require.Error(t, h.Close(), "double close is reported")
}

func TestConcurrentReadersNeverSeeTornValues(t *testing.T) {
	s := newStore(t, 64<<20, nil)
	ctx := context.Background()
	const size = 64 << 10
	var stop atomic.Bool
	var writers, readers sync.WaitGroup
	for w := 0; w < 2; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; !stop.Load(); i++ {
				b := byte(i%250 + 1)
				if _, err := s.Put(ctx, "hot", bytes.Repeat([]byte{b}, size), PutOptions{}); err != nil {
					t.Error(err)
					return
				}
				if i%7 == 0 {
					_ = s.Remove("hot")
				}
			}
		}()
	}
	var reads atomic.Int64
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; i < 2000; i++ {
				h, err := s.Get("hot")
				if err != nil {
					continue
				}
				reads.Add(1)
				b := h.Bytes()
				if len(b) != size {
					t.Errorf("length %d", len(b))
				}
				for _, c := range b {
					if c != b[0] {
						t.Errorf("torn value: %d then %d", b[0], c)
						break
					}
				}
				h.Close()
			}
		}()
	}
	readers.Wait()
	stop.Store(true)
	writers.Wait()
	require.Positive(t, reads.Load(), "some reads found the key")
}

func TestLeases(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	s := newStore(t, 8<<20, clock)
	ctx := context.Background()
	id, err := s.Grant(10 * time.Second)
	require.NoError(t, err)
	_, err = s.Put(ctx, "a", []byte("1"), PutOptions{Lease: id})
	require.NoError(t, err)
	_, err = s.Put(ctx, "b", []byte("2"), PutOptions{Lease: id})
	require.NoError(t, err)
	_, err = s.Put(ctx, "c", []byte("3"), PutOptions{TTL: 5 * time.Second})
	require.NoError(t, err)
	_, err = s.Put(ctx, "d", []byte("4"), PutOptions{})
	require.NoError(t, err)

	ttl, ok, err := s.TTL("c")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 5*time.Second, ttl)
	_, ok, err = s.TTL("d")
	require.NoError(t, err)
	require.False(t, ok)

	clock.Advance(6 * time.Second)
	s.ExpireLeases()
	require.False(t, s.Exists("c"), "its own lease ended")
	require.True(t, s.Exists("a"))

	_, err = s.KeepAlive(id)
	require.NoError(t, err)
	clock.Advance(9 * time.Second)
	s.ExpireLeases()
	require.True(t, s.Exists("a"), "kept alive")

	// Overwriting b without a lease takes it off the lease.
	_, err = s.Put(ctx, "b", []byte("free"), PutOptions{})
	require.NoError(t, err)
	clock.Advance(2 * time.Second)
	s.ExpireLeases()
	require.False(t, s.Exists("a"), "lease ended")
	require.True(t, s.Exists("b"), "b left the lease when overwritten")
	_, err = s.KeepAlive(id)
	require.ErrorIs(t, err, ErrLeaseNotFound)

	// Expire (RESP EXPIRE) and Revoke.
	require.NoError(t, s.Expire("d", 3*time.Second))
	ttl, ok, _ = s.TTL("d")
	require.True(t, ok)
	require.Equal(t, 3*time.Second, ttl)
	id2, _ := s.Grant(time.Minute)
	_, err = s.Put(ctx, "e", []byte("5"), PutOptions{Lease: id2})
	require.NoError(t, err)
	require.NoError(t, s.Revoke(id2))
	require.False(t, s.Exists("e"))
	clock.Advance(3 * time.Second)
	s.ExpireLeases()
	require.False(t, s.Exists("d"))
	require.Equal(t, uint64(3), s.Stats().Expired)
}

func TestEvictionPrefersColdAndSparesLeased(t *testing.T) {
	s := newStore(t, 8<<20, nil)
	ctx := context.Background()
	id, err := s.Grant(time.Hour)
	require.NoError(t, err)
	val := make([]byte, 256<<10)
	// Two leased objects and a hot one.
	for _, k := range []string{"leased1", "leased2"} {
		_, err := s.Put(ctx, k, val, PutOptions{Lease: id})
		require.NoError(t, err)
	}
	_, err = s.Put(ctx, "hot", val, PutOptions{})
	require.NoError(t, err)
	held, err := s.Get("hot")
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		h, _ := s.Get("hot")
		h.Close()
	}
	// Write far more than the pool holds.
	for i := 0; i < 100; i++ {
		_, err := s.Put(ctx, fmt.Sprint("cold", i), val, PutOptions{})
		require.NoError(t, err, "put %d", i)
	}
	require.Greater(t, s.Stats().Evictions, uint64(50))
	require.True(t, s.Exists("leased1"))
	require.True(t, s.Exists("leased2"))
	require.True(t, s.Exists("hot"), "a referenced object is never evicted")
	require.NoError(t, held.Close())
	require.True(t, s.Exists("cold99"), "the newest write is kept")
}

func TestPoolFullOfLeasedObjects(t *testing.T) {
	s := newStore(t, 4<<20, nil)
	ctx := context.Background()
	id, err := s.Grant(time.Hour)
	require.NoError(t, err)
	var lastErr error
	for i := 0; i < 100 && lastErr == nil; i++ {
		_, lastErr = s.Put(ctx, fmt.Sprint("l", i), make([]byte, 256<<10), PutOptions{Lease: id})
	}
	require.ErrorIs(t, lastErr, ErrPoolFull)
	require.ErrorContains(t, lastErr, "leased")
	require.Zero(t, s.Stats().Evictions)
	require.NoError(t, s.Revoke(id))
	require.Zero(t, s.Len())
	_, err = s.Put(ctx, "after", make([]byte, 256<<10), PutOptions{})
	require.NoError(t, err, "revoking the lease gave the memory back")
}

func TestScanVisitsEveryKeyOnce(t *testing.T) {
	s := newStore(t, 16<<20, nil)
	ctx := context.Background()
	want := map[string]bool{}
	for i := 0; i < 1000; i++ {
		k := fmt.Sprint("key:", i)
		want[k] = true
		_, err := s.Put(ctx, k, []byte("v"), PutOptions{})
		require.NoError(t, err)
	}
	seen := map[string]int{}
	cursor, calls := uint64(0), 0
	for {
		keys, next := s.Scan(cursor, 37, nil)
		for _, k := range keys {
			seen[k]++
		}
		calls++
		// Keys written during the walk must not disturb the ones present throughout.
		_, _ = s.Put(ctx, fmt.Sprint("late:", calls), []byte("v"), PutOptions{})
		if next == 0 {
			break
		}
		cursor = next
	}
	for k := range want {
		require.Equal(t, 1, seen[k], "key %s", k)
	}
	require.Greater(t, calls, 20)

	keys, _ := s.Scan(0, 100000, func(k string) bool { return k == "key:7" })
	require.Equal(t, []string{"key:7"}, keys)
}

func TestConcurrentMixedOps(t *testing.T) {
	s := newStore(t, 32<<20, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 2000; i++ {
				k := fmt.Sprint("k", r.IntN(200))
				switch r.IntN(4) {
				case 0, 1:
					v := []byte(k + "=" + fmt.Sprint(i))
					if _, err := s.Put(ctx, k, v, PutOptions{}); err != nil {
						t.Error(err)
						return
					}
				case 2:
					if h, err := s.Get(k); err == nil {
						if !bytes.HasPrefix(h.Bytes(), []byte(k+"=")) {
							t.Errorf("key %s holds %q", k, h.Bytes())
						}
						h.Close()
					}
				case 3:
					_ = s.Remove(k)
				}
			}
		}(g)
	}
	wg.Wait()
	// Everything released: removing all keys returns the pool to empty.
	keys, _ := s.Scan(0, 1<<20, nil)
	for _, k := range keys {
		require.NoError(t, s.Remove(k))
	}
	st, err := s.pool.Stats()
	require.NoError(t, err)
	require.Zero(t, st.Objects, "no object leaked")
}

// A value whose lease has ended is gone at once, before the reaper runs.
func TestEndedLeaseIsInvisibleBeforeReaping(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	s := newStore(t, 8<<20, clock)
	ctx := context.Background()
	_, err := s.Put(ctx, "k", []byte("v"), PutOptions{TTL: 2 * time.Second})
	require.NoError(t, err)
	clock.Advance(2 * time.Second) // ended, not reaped
	_, err = s.Get("k")
	require.ErrorIs(t, err, ErrNotFound)
	require.False(t, s.Exists("k"))
	require.ErrorIs(t, s.Expire("k", time.Minute), ErrNotFound)
	_, err = s.Put(ctx, "k", []byte("new"), PutOptions{IfAbsent: true})
	require.NoError(t, err, "SET NX on an ended key succeeds")
	require.Equal(t, "new", get(t, s, "k"))
	s.ExpireLeases()
	require.Equal(t, "new", get(t, s, "k"), "reaping the old lease leaves the new value")
}
