package kv

import (
	"context"
	"time"
)

// Backend is what a KV frontend (the shared-memory server, gRPC, RESP) needs
// of the store behind it. *Store is one: an owner on its own serves its
// pool. An owner in a cluster passes the cross-host backend (services/owner),
// whose data calls go through the cluster and may wait on other hosts; those
// take a ctx, which the frontend ends when its client goes away.
//
// The data calls carry a Context suffix, as in database/sql, because *Store
// keeps its ctx-less Get, Stat, Remove and Commit for the code that works on
// this pool alone (the cluster node itself among them).
type Backend interface {
	// GetContext returns a reference to the key's value in this owner's
	// pool (zero copy). Close it.
	GetContext(ctx context.Context, key string) (*Holder, error)
	// StatContext describes the key's current value.
	StatContext(ctx context.Context, key string) (Info, error)
	// Put stores a copy of value under key.
	Put(ctx context.Context, key string, value []byte, o PutOptions) (uint64, error)
	// RemoveContext deletes key.
	RemoveContext(ctx context.Context, key string) error

	// Reserve, Bytes, CommitContext and Abort write a value in place: room
	// in this owner's pool, filled by the caller, then made the key's value.
	Reserve(ctx context.Context, key string, size uint64, o PutOptions) (*Reservation, error)
	Bytes(r *Reservation) []byte
	CommitContext(ctx context.Context, r *Reservation) (uint64, error)
	Abort(r *Reservation) error

	// Expire binds key to a lease of its own that ends after ttl.
	Expire(key string, ttl time.Duration) error
	// TTL returns the time left on key's lease; ok is false when it has none.
	TTL(key string) (ttl time.Duration, ok bool, err error)
	Grant(ttl time.Duration) (LeaseID, error)
	KeepAlive(id LeaseID) (time.Duration, error)
	LeaseTTL(id LeaseID) (time.Duration, error)
	Revoke(id LeaseID) error

	// Scan walks the keys (see Store.Scan); Len counts them.
	Scan(cursor uint64, count int, match func(string) bool) ([]string, uint64)
	Len() int
	Stats() Stats
}

var _ Backend = (*Store)(nil)

// GetContext is Get; the local store never waits, so ctx only stops a call
// that comes in after it ended.
func (s *Store) GetContext(ctx context.Context, key string) (*Holder, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Get(key)
}

// StatContext is Stat (see GetContext for ctx).
func (s *Store) StatContext(ctx context.Context, key string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	return s.Stat(key)
}

// RemoveContext is Remove (see GetContext for ctx).
func (s *Store) RemoveContext(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Remove(key)
}

// CommitContext is Commit. The reservation is consumed even when ctx has
// ended: Commit of a filled reservation does not wait, so it runs anyway
// rather than leave the caller to abort it.
func (s *Store) CommitContext(_ context.Context, r *Reservation) (uint64, error) {
	return s.Commit(r)
}
