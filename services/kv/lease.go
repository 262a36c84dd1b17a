package kv

import (
	"fmt"
	"time"
)

// LeaseTable is the lease state machine: grants, keepalives, revokes, and
// which keys each lease holds. It does no I/O and reads no clock: the caller
// passes now, so it is tested without sleeping. Not safe for concurrent use;
// the store guards it.
type LeaseTable struct {
	next   LeaseID
	leases map[LeaseID]*lease
}

type lease struct {
	ttl      time.Duration
	deadline time.Time
	private  bool // granted for one key by PutOptions.TTL / Expire; revoked with it
	keys     map[string]struct{}
}

// NewLeaseTable returns an empty table.
func NewLeaseTable() *LeaseTable { return &LeaseTable{leases: map[LeaseID]*lease{}} }

func checkTTL(ttl time.Duration) error {
	if ttl < MinLeaseTTL || ttl > MaxLeaseTTL {
		return fmt.Errorf("%w: %s; use %s to %s", ErrLeaseTTL, ttl, MinLeaseTTL, MaxLeaseTTL)
	}
	return nil
}

// Grant creates a lease that ends at now+ttl unless kept alive.
func (t *LeaseTable) Grant(now time.Time, ttl time.Duration, private bool) (LeaseID, error) {
	if err := checkTTL(ttl); err != nil {
		return 0, err
	}
	t.next++
	t.leases[t.next] = &lease{ttl: ttl, deadline: now.Add(ttl), private: private, keys: map[string]struct{}{}}
	return t.next, nil
}

// KeepAlive pushes the lease's end to now+ttl and returns the ttl.
func (t *LeaseTable) KeepAlive(now time.Time, id LeaseID) (time.Duration, error) {
	l := t.live(now, id)
	if l == nil {
		return 0, fmt.Errorf("%w: %d", ErrLeaseNotFound, id)
	}
	l.deadline = now.Add(l.ttl)
	return l.ttl, nil
}

// Remaining returns the time left on a live lease.
func (t *LeaseTable) Remaining(now time.Time, id LeaseID) (time.Duration, error) {
	l := t.live(now, id)
	if l == nil {
		return 0, fmt.Errorf("%w: %d", ErrLeaseNotFound, id)
	}
	return l.deadline.Sub(now), nil
}

func (t *LeaseTable) live(now time.Time, id LeaseID) *lease {
	l := t.leases[id]
	if l == nil || !now.Before(l.deadline) {
		return nil
	}
	return l
}

// Attach binds key to a live lease.
func (t *LeaseTable) Attach(now time.Time, id LeaseID, key string) error {
	l := t.live(now, id)
	if l == nil {
		return fmt.Errorf("%w: %d", ErrLeaseNotFound, id)
	}
	l.keys[key] = struct{}{}
	return nil
}

// Detach unbinds key from its lease (the key was overwritten or removed). A
// private lease goes with its key.
func (t *LeaseTable) Detach(id LeaseID, key string) {
	l := t.leases[id]
	if l == nil {
		return
	}
	delete(l.keys, key)
	if l.private {
		delete(t.leases, id)
	}
}

// Revoke ends a lease now and returns the keys it held.
func (t *LeaseTable) Revoke(id LeaseID) ([]string, error) {
	l := t.leases[id]
	if l == nil {
		return nil, fmt.Errorf("%w: %d", ErrLeaseNotFound, id)
	}
	delete(t.leases, id)
	return keysOf(l), nil
}

// Expire ends every lease whose deadline has passed and returns, per lease,
// the keys it held.
func (t *LeaseTable) Expire(now time.Time) map[LeaseID][]string {
	var out map[LeaseID][]string
	for id, l := range t.leases {
		if now.Before(l.deadline) {
			continue
		}
		if out == nil {
			out = map[LeaseID][]string{}
		}
		out[id] = keysOf(l)
		delete(t.leases, id)
	}
	return out
}

// Len returns the number of leases not yet reaped.
func (t *LeaseTable) Len() int { return len(t.leases) }

func keysOf(l *lease) []string {
	out := make([]string, 0, len(l.keys))
	for k := range l.keys {
		out = append(out, k)
	}
	return out
}
