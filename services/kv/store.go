package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/cgo/pool"
)

// shardBits sets the number of index shards (64). A key's shard is the top
// bits of its hash, which also orders SCAN.
const (
	shardBits = 6
	nShards   = 1 << shardBits
)

// Options configure a Store.
type Options struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
}

// Store is the owner's KV store over its pool.
//
// Lock order: a shard's mu, then leaseMu. Never two shards at once.
type Store struct {
	pool     *pool.Pool
	log      *slog.Logger
	now      func() time.Time
	capacity uint64
	segSize  uint64 // the pool's segment size

	shards  [nShards]shard
	leaseMu sync.Mutex
	leases  *LeaseTable
	sketch  *sketch

	version   atomic.Uint64
	clock     atomic.Uint64 // logical access time for LRU ordering
	evictNext atomic.Uint32 // shard where the next eviction sample starts

	hits, misses, puts, removes, evictions, expired atomic.Uint64

	closed atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

type shard struct {
	mu       sync.RWMutex
	m        map[string]*entry
	inflight map[string]int
}

type entry struct {
	key     string
	hash    uint64
	off     pool.Offset
	size    uint64
	version uint64
	kind    ValueKind
	lease   LeaseID       // guarded by the shard's mu
	access  atomic.Uint64 // logical time of the last read or write
}

// HashKey is the stable 64-bit hash of a key, stored in the object header and
// used for sharding and (later) for placement across hosts.
func HashKey(key string) uint64 { return xxhash.Sum64String(key) }

// New opens a store over an owner's pool (from pool.Create).
func New(p *pool.Pool, o Options) (*Store, error) {
	info, err := p.Info()
	if err != nil {
		return nil, err
	}
	if !info.Owner {
		return nil, fmt.Errorf("kv.New needs the owner's pool handle: %w", pool.ErrNotSupported)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{
		pool: p, log: o.Log, now: o.Now, capacity: info.Size - info.DataOffset, segSize: info.SegmentSize,
		leases: NewLeaseTable(), sketch: newSketch(int(info.Size >> 16)), stop: make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i] = shard{m: map[string]*entry{}, inflight: map[string]int{}}
	}
	if o.Registerer != nil {
		s.registerMetrics(o.Registerer)
	}
	s.wg.Add(1)
	go s.reapLeases()
	return s, nil
}

// Close stops the lease reaper. The pool stays the caller's to close.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	s.wg.Wait()
	return nil
}

func (s *Store) shardOf(h uint64) *shard { return &s.shards[h>>(64-shardBits)] }

// CheckKey validates a key against the store's limits.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: keys are 1 to %d bytes", ErrEmptyKey, MaxKeyLen)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes; keys are at most %d bytes", ErrKeyTooLong, len(key), MaxKeyLen)
	}
	return nil
}

// live reports whether e is visible: a value whose lease has ended is gone
// even before the reaper removes it. Call with the shard's lock held.
func (s *Store) live(e *entry) bool {
	if e == nil {
		return false
	}
	if e.lease == 0 {
		return true
	}
	s.leaseMu.Lock()
	_, err := s.leases.Remaining(s.now(), e.lease)
	s.leaseMu.Unlock()
	return err == nil
}

// Reservation is a value being written: its bytes are in the pool at Off and
// invisible to readers until Commit. Externals write into it in place (zero
// copy) between Reserve and Commit.
type Reservation struct {
	Key     string
	Off     pool.Offset
	Size    uint64
	Version uint64
	hash    uint64
	opts    PutOptions
	done    bool
}

// Options returns the put options the reservation was made with.
func (r *Reservation) Options() PutOptions { return r.opts }

// Bytes returns the reservation's memory to fill.
func (s *Store) Bytes(r *Reservation) []byte { return s.pool.Bytes(r.Off)[:r.Size:r.Size] }

// Put stores value under key (a copy into the pool) and returns its version.
func (s *Store) Put(ctx context.Context, key string, value []byte, o PutOptions) (uint64, error) {
	r, err := s.Reserve(ctx, key, uint64(len(value)), o)
	if err != nil {
		return 0, err
	}
	copy(s.Bytes(r), value)
	return s.Commit(r)
}

// Reserve allocates room for a value of size bytes, evicting cold objects if
// the pool is full. The caller fills Bytes(r) and then calls Commit or Abort.
func (s *Store) Reserve(ctx context.Context, key string, size uint64, o PutOptions) (*Reservation, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if o.Lease != 0 && o.TTL != 0 {
		return nil, errors.New("kv: PutOptions.Lease and PutOptions.TTL are mutually exclusive; use one")
	}
	if o.IfAbsent && o.IfPresent {
		return nil, errors.New("kv: PutOptions.IfAbsent and IfPresent together can never succeed")
	}
	if o.TTL != 0 {
		if err := checkTTL(o.TTL); err != nil {
			return nil, err
		}
	}
	if size+pool.ObjectHeaderSize > s.capacity {
		return nil, fmt.Errorf("%w: %d bytes, the pool holds %d; raise contribute_to_cluster_pool_size.dram", ErrValueTooLarge, size, s.capacity)
	}
	if o.Lease != 0 {
		s.leaseMu.Lock()
		_, err := s.leases.Remaining(s.now(), o.Lease)
		s.leaseMu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	h := HashKey(key)
	sh := s.shardOf(h)
	sh.mu.Lock()
	exists := s.live(sh.m[key])
	switch {
	case o.RejectInflight && sh.inflight[key] > 0:
		sh.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrInflight, key)
	case o.IfAbsent && exists:
		sh.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrExists, key)
	case o.IfPresent && !exists:
		sh.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	sh.inflight[key]++
	sh.mu.Unlock()

	r := &Reservation{Key: key, Size: size, Version: s.version.Add(1), hash: h, opts: o}
	off, err := s.alloc(ctx, max(size, 1), h, r.Version)
	if err != nil {
		s.endInflight(sh, key)
		return nil, err
	}
	r.Off = off
	return r, nil
}

func (s *Store) endInflight(sh *shard, key string) {
	sh.mu.Lock()
	if sh.inflight[key]--; sh.inflight[key] <= 0 {
		delete(sh.inflight, key)
	}
	sh.mu.Unlock()
}

// alloc allocates, evicting until it fits or nothing more can go.
func (s *Store) alloc(ctx context.Context, size, h, version uint64) (pool.Offset, error) {
	for {
		off, err := s.pool.Alloc(size, h, version)
		switch {
		case err == nil:
			return off, nil
		case errors.Is(err, pool.ErrTooBig):
			return 0, fmt.Errorf("%w: %d bytes (%v)", ErrValueTooLarge, size, err)
		case !errors.Is(err, pool.ErrNoMem):
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if !s.evictOne() {
			return 0, s.fullError(size)
		}
	}
}

func (s *Store) fullError(size uint64) error {
	var objects, leased, referenced int
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for _, e := range sh.m {
			objects++
			if e.lease != 0 {
				leased++
			} else if hdr, err := s.pool.Header(e.off); err == nil && hdr.RefCount > 0 {
				referenced++
			}
		}
		sh.mu.RUnlock()
	}
	return fmt.Errorf("%w: no room for %d bytes; %d objects fill the pool, %d leased and %d held by readers cannot be evicted; revoke leases, close holders, or raise contribute_to_cluster_pool_size.dram",
		ErrPoolFull, size, objects, leased, referenced)
}

// Commit makes a reservation visible: readers see the whole new value or the
// old one, never a mix. The old value's memory is freed when its last reader
// lets go.
func (s *Store) Commit(r *Reservation) (uint64, error) {
	if r.done {
		return 0, errors.New("kv: reservation already committed or aborted")
	}
	r.done = true
	sh := s.shardOf(r.hash)
	if err := s.pool.Seal(r.Off); err != nil {
		s.endInflight(sh, r.Key)
		_ = s.pool.Free(r.Off)
		return 0, err
	}
	if _, err := s.pool.Unref(r.Off); err != nil { // the writer's reference
		s.endInflight(sh, r.Key)
		return 0, err
	}
	e := &entry{key: r.Key, hash: r.hash, off: r.Off, size: r.Size, version: r.Version, kind: r.opts.Kind, lease: r.opts.Lease}
	e.access.Store(s.clock.Add(1))

	sh.mu.Lock()
	if sh.inflight[r.Key]--; sh.inflight[r.Key] <= 0 {
		delete(sh.inflight, r.Key)
	}
	old := sh.m[r.Key]
	var err error
	switch {
	case r.opts.IfAbsent && s.live(old):
		err = fmt.Errorf("%w: %q", ErrExists, r.Key)
	case r.opts.IfPresent && !s.live(old):
		err = fmt.Errorf("%w: %q", ErrNotFound, r.Key)
	}
	if err == nil {
		s.leaseMu.Lock()
		now := s.now()
		if r.opts.TTL != 0 {
			e.lease, err = s.leases.Grant(now, r.opts.TTL, true)
		}
		if err == nil && e.lease != 0 {
			err = s.leases.Attach(now, e.lease, r.Key)
		}
		if err == nil && old != nil && old.lease != 0 {
			s.leases.Detach(old.lease, r.Key)
		}
		s.leaseMu.Unlock()
	}
	if err != nil {
		sh.mu.Unlock()
		_, _ = s.pool.Remove(r.Off)
		return 0, err
	}
	sh.m[r.Key] = e
	sh.mu.Unlock()
	s.puts.Add(1)
	if old != nil {
		s.drop(old)
	}
	return r.Version, nil
}

// Abort gives back a reservation that will not be committed.
func (s *Store) Abort(r *Reservation) error {
	if r.done {
		return nil
	}
	r.done = true
	s.endInflight(s.shardOf(r.hash), r.Key)
	return s.pool.Free(r.Off)
}

// drop retires an entry already taken out of the index: no new readers can
// find it, and its memory goes when the last current reader closes.
func (s *Store) drop(e *entry) {
	if _, err := s.pool.Remove(e.off); err != nil {
		s.log.Error("kv: removing object from the pool", "key", e.key, "err", err)
	}
}

// Holder is a reference to a value in the pool: Bytes points into shared
// memory (zero copy) and stays valid and unchanged until Close, whatever
// writers do meanwhile. Close exactly once.
type Holder struct {
	Info
	s      *Store
	off    pool.Offset
	b      []byte
	closed atomic.Bool
}

// Bytes returns the value in place. Do not write to it; do not use it after Close.
func (h *Holder) Bytes() []byte { return h.b }

// Offset is where the object lives in the pool (externals map the same pool).
func (h *Holder) Offset() pool.Offset { return h.off }

// SegmentSize is the size of the pool's segments, the unit in which peers
// name pool bytes (pool.Offset.In gives a value's segment and offset).
func (h *Holder) SegmentSize() uint64 { return h.s.segSize }

// Close releases the reference.
func (h *Holder) Close() error {
	if h.closed.Swap(true) {
		return errors.New("kv: holder closed twice")
	}
	_, err := h.s.pool.Unref(h.off)
	return err
}

// Get returns a holder of the key's current value.
func (s *Store) Get(key string) (*Holder, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	h := HashKey(key)
	sh := s.shardOf(h)
	sh.mu.RLock()
	e := sh.m[key]
	if !s.live(e) {
		sh.mu.RUnlock()
		s.misses.Add(1)
		return nil, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	// Under the shard's read lock the entry cannot be removed, so the object
	// is READY and the reference cannot fail for a stale offset.
	err := s.pool.Ref(e.off)
	info := Info{Key: key, Size: e.size, Version: e.version, Kind: e.kind, Lease: e.lease}
	sh.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("kv: referencing %q: %w", key, err)
	}
	e.access.Store(s.clock.Add(1))
	s.sketch.add(h)
	s.hits.Add(1)
	return &Holder{Info: info, s: s, off: e.off, b: s.pool.Bytes(e.off)[:e.size:e.size]}, nil
}

// GetCopy returns a copy of the value, appended to dst.
func (s *Store) GetCopy(key string, dst []byte) ([]byte, Info, error) {
	h, err := s.Get(key)
	if err != nil {
		return dst, Info{}, err
	}
	dst = append(dst, h.Bytes()...)
	info := h.Info
	return dst, info, h.Close()
}

// Remove deletes key. Readers holding the old value keep it until they close.
func (s *Store) Remove(key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	h := HashKey(key)
	sh := s.shardOf(h)
	sh.mu.Lock()
	e := sh.m[key]
	if e == nil {
		sh.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	delete(sh.m, key)
	if e.lease != 0 {
		s.leaseMu.Lock()
		s.leases.Detach(e.lease, key)
		s.leaseMu.Unlock()
	}
	sh.mu.Unlock()
	s.removes.Add(1)
	s.drop(e)
	return nil
}

// removeIf deletes key only while it is still the given lease's (expiry).
func (s *Store) removeIfLease(key string, id LeaseID) bool {
	sh := s.shardOf(HashKey(key))
	sh.mu.Lock()
	e := sh.m[key]
	if e == nil || e.lease != id {
		sh.mu.Unlock()
		return false
	}
	delete(sh.m, key)
	sh.mu.Unlock()
	s.drop(e)
	return true
}

// Stat describes key.
func (s *Store) Stat(key string) (Info, error) {
	if err := CheckKey(key); err != nil {
		return Info{}, err
	}
	sh := s.shardOf(HashKey(key))
	sh.mu.RLock()
	e := sh.m[key]
	if !s.live(e) {
		sh.mu.RUnlock()
		return Info{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	info := Info{Key: key, Size: e.size, Version: e.version, Kind: e.kind, Lease: e.lease}
	sh.mu.RUnlock()
	if info.Lease != 0 {
		s.leaseMu.Lock()
		info.TTL, _ = s.leases.Remaining(s.now(), info.Lease)
		s.leaseMu.Unlock()
	}
	return info, nil
}

// Exists reports whether key is stored.
func (s *Store) Exists(key string) bool {
	_, err := s.Stat(key)
	return err == nil
}

// Size returns the length of key's value.
func (s *Store) Size(key string) (uint64, error) {
	info, err := s.Stat(key)
	return info.Size, err
}

// Len returns the number of stored keys.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// Scan walks the keys in hash order. Start with cursor 0 and pass back the
// returned cursor until it is 0 again. Every key present for the whole walk
// is returned exactly once; keys added or removed meanwhile may or may not
// be. count is how many keys to examine (not to return); match may be nil.
func (s *Store) Scan(cursor uint64, count int, match func(string) bool) ([]string, uint64) {
	if count <= 0 {
		count = 10
	}
	type kh struct {
		h uint64
		k string
	}
	var out []string
	examined := 0
	for si := cursor >> (64 - shardBits); si < nShards; si++ {
		sh := &s.shards[si]
		var batch []kh
		sh.mu.RLock()
		for k, e := range sh.m {
			if e.hash >= cursor {
				batch = append(batch, kh{e.hash, k})
			}
		}
		sh.mu.RUnlock()
		sort.Slice(batch, func(i, j int) bool { return batch[i].h < batch[j].h })
		for i, b := range batch {
			// Stop at a hash boundary so equal hashes are never split across calls.
			if examined >= count && b.h != batch[i-1].h {
				return out, b.h
			}
			examined++
			if match == nil || match(b.k) {
				out = append(out, b.k)
			}
		}
		if si == nShards-1 {
			break
		}
		cursor = (si + 1) << (64 - shardBits)
		if examined >= count {
			return out, cursor
		}
	}
	return out, 0
}

// Grant creates a lease; objects put with it go when it ends.
func (s *Store) Grant(ttl time.Duration) (LeaseID, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.leases.Grant(s.now(), ttl, false)
}

// KeepAlive renews a lease for its TTL and returns the TTL.
func (s *Store) KeepAlive(id LeaseID) (time.Duration, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.leases.KeepAlive(s.now(), id)
}

// LeaseTTL returns the time left on a lease.
func (s *Store) LeaseTTL(id LeaseID) (time.Duration, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.leases.Remaining(s.now(), id)
}

// Revoke ends a lease now and removes its objects.
func (s *Store) Revoke(id LeaseID) error {
	s.leaseMu.Lock()
	keys, err := s.leases.Revoke(id)
	s.leaseMu.Unlock()
	if err != nil {
		return err
	}
	for _, k := range keys {
		s.removeIfLease(k, id)
	}
	return nil
}

// Expire gives key a lease of its own that ends after ttl (RESP EXPIRE),
// replacing whatever lease it had.
func (s *Store) Expire(key string, ttl time.Duration) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	sh := s.shardOf(HashKey(key))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if !s.live(e) {
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	now := s.now()
	id, err := s.leases.Grant(now, ttl, true)
	if err != nil {
		return err
	}
	if e.lease != 0 {
		s.leases.Detach(e.lease, key)
	}
	e.lease = id
	return s.leases.Attach(now, id, key)
}

// TTL returns the time left on key's lease; ok is false when it has none.
func (s *Store) TTL(key string) (ttl time.Duration, ok bool, err error) {
	info, err := s.Stat(key)
	if err != nil || info.Lease == 0 {
		return 0, false, err
	}
	return info.TTL, true, nil
}

func (s *Store) reapLeases() {
	defer s.wg.Done()
	t := time.NewTicker(leaseTick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.ExpireLeases()
	}
}

// ExpireLeases removes the objects of every lease that has ended (the reaper
// calls it every leaseTick; tests with an injected clock call it directly).
func (s *Store) ExpireLeases() {
	s.leaseMu.Lock()
	ended := s.leases.Expire(s.now())
	s.leaseMu.Unlock()
	for id, keys := range ended {
		for _, k := range keys {
			if s.removeIfLease(k, id) {
				s.expired.Add(1)
			}
		}
	}
}

// evictOne removes the coldest evictable object among a sample: fewest
// recent accesses by the frequency sketch (TinyLFU), then least recently
// used. Leased objects and objects readers hold are never chosen. It reports
// whether anything was evicted.
func (s *Store) evictOne() bool {
	start := s.evictNext.Add(1)
	for attempt := 0; attempt < 4; attempt++ {
		var best *entry
		var bestFreq uint32
		seen := 0
		for i := 0; i < nShards && seen < evictionSample; i++ {
			sh := &s.shards[(int(start)+i)%nShards]
			sh.mu.RLock()
			for _, e := range sh.m {
				if e.lease != 0 {
					continue
				}
				seen++
				f := s.sketch.estimate(e.hash)
				if best == nil || f < bestFreq || (f == bestFreq && e.access.Load() < best.access.Load()) {
					if hdr, err := s.pool.Header(e.off); err == nil && hdr.RefCount == 0 {
						best, bestFreq = e, f
					}
				}
				if seen >= evictionSample {
					break
				}
			}
			sh.mu.RUnlock()
		}
		if best == nil {
			if seen == 0 {
				return false
			}
			start += nShards / 4
			continue
		}
		sh := s.shardOf(best.hash)
		sh.mu.Lock()
		if sh.m[best.key] != best {
			sh.mu.Unlock()
			continue
		}
		delete(sh.m, best.key)
		sh.mu.Unlock()
		s.drop(best)
		s.evictions.Add(1)
		return true
	}
	// Sampling found only held objects; fall back to a full scan.
	return s.evictAny()
}

func (s *Store) evictAny() bool {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.lease != 0 {
				continue
			}
			if hdr, err := s.pool.Header(e.off); err != nil || hdr.RefCount > 0 {
				continue
			}
			delete(sh.m, k)
			sh.mu.Unlock()
			s.drop(e)
			s.evictions.Add(1)
			return true
		}
		sh.mu.Unlock()
	}
	return false
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{
		Objects: uint64(s.Len()), Evictions: s.evictions.Load(), Hits: s.hits.Load(), Misses: s.misses.Load(),
		Puts: s.puts.Load(), Removes: s.removes.Load(), Expired: s.expired.Load(), PoolCapacity: s.capacity,
	}
	s.leaseMu.Lock()
	st.Leases = uint64(s.leases.Len())
	s.leaseMu.Unlock()
	if ps, err := s.pool.Stats(); err == nil {
		st.PoolSize, st.Used, st.Free = ps.Total, ps.Reserved, ps.Capacity-ps.Reserved
	}
	return st
}

func (s *Store) registerMetrics(r prometheus.Registerer) {
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	r.MustRegister(
		counter("fluxon_kv_hits_total", "Gets that found the key.", &s.hits),
		counter("fluxon_kv_misses_total", "Gets that did not find the key.", &s.misses),
		counter("fluxon_kv_puts_total", "Values committed.", &s.puts),
		counter("fluxon_kv_removes_total", "Keys removed by callers.", &s.removes),
		counter("fluxon_kv_evictions_total", "Objects evicted to make room.", &s.evictions),
		counter("fluxon_kv_expired_total", "Objects removed because their lease ended.", &s.expired),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fluxon_kv_objects", Help: "Stored keys."}, func() float64 { return float64(s.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fluxon_pool_capacity_bytes", Help: "Bytes of the pool usable by objects."}, func() float64 { return float64(s.capacity) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fluxon_pool_used_bytes", Help: "Bytes of the pool held by objects."}, func() float64 {
			ps, _ := s.pool.Stats()
			return float64(ps.Reserved)
		}),
	)
}
