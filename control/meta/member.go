package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// registration retry pacing while etcd is unreachable or the lease was lost.
const (
	reregisterMinBackoff = 200 * time.Millisecond
	reregisterMaxBackoff = 2 * time.Second
)

// Registration keeps a member's record alive under a lease. If the lease is
// lost (etcd unreachable for longer than the TTL), it re-registers as soon as
// etcd answers again, so a member never stays invisible after an outage.
type Registration struct {
	s      *Store
	member Member
	ttl    time.Duration
	key    string
	value  string

	mu      sync.Mutex
	lease   clientv3.LeaseID
	lost    int // how many times the lease was lost and re-acquired
	cancel  context.CancelFunc
	done    chan struct{}
	closing bool
}

// Register publishes m under a lease of ttl and keeps it alive until Close or
// ctx ends. It fails with ErrDuplicateInstance when another live process in
// the same cluster holds m.InstanceKey.
func (s *Store) Register(ctx context.Context, m Member, ttl time.Duration) (*Registration, error) {
	value, err := encode(m)
	if err != nil {
		return nil, err
	}
	r := &Registration{s: s, member: m, ttl: ttl, key: s.keys.Member(m.InstanceKey), value: value, done: make(chan struct{})}
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.keepAlive(kctx)
	return r, nil
}

// acquire grants a lease and creates the record if and only if no record for
// this instance_key exists, or the existing one is our own incarnation.
func (r *Registration) acquire(ctx context.Context) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	secs := int64((r.ttl + time.Second - 1) / time.Second)
	lease, err := r.s.cli.Grant(ctx, secs)
	if err != nil {
		return fmt.Errorf("%w: granting member lease: %v", ErrEtcdUnreachable, err)
	}
	resp, err := r.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(lease.ID))).
		Else(clientv3.OpGet(r.key)).
		Commit()
	if err != nil {
		_, _ = r.s.cli.Revoke(context.Background(), lease.ID)
		return fmt.Errorf("%w: registering member: %v", ErrEtcdUnreachable, err)
	}
	if !resp.Succeeded {
		_, _ = r.s.cli.Revoke(context.Background(), lease.ID)
		kvs := resp.Responses[0].GetResponseRange().Kvs
		var other Member
		if len(kvs) > 0 {
			_ = json.Unmarshal(kvs[0].Value, &other)
		}
		if leftover(other, r.member) {
			// A record of a process on this host that no longer runs (crashed
			// before its lease ended): take it over rather than wait for the TTL.
			dctx, dcancel := withTimeout(ctx)
			_, derr := r.s.cli.Txn(dctx).
				If(clientv3.Compare(clientv3.ModRevision(r.key), "=", kvs[0].ModRevision)).
				Then(clientv3.OpDelete(r.key)).Commit()
			dcancel()
			if derr != nil {
				return fmt.Errorf("%w: removing a dead process's record: %v", ErrEtcdUnreachable, derr)
			}
			r.s.log.Info("took over the record of a dead process", "instance_key", other.InstanceKey, "pid", other.PID)
			return r.acquire(ctx)
		}
		if other.Incarnation() == r.member.Incarnation() {
			// Our own record from before a lost keepalive; adopt it under the new lease.
			lease2, err := r.s.cli.Grant(ctx, secs)
			if err != nil {
				return fmt.Errorf("%w: granting member lease: %v", ErrEtcdUnreachable, err)
			}
			if _, err := r.s.cli.Put(ctx, r.key, r.value, clientv3.WithLease(lease2.ID)); err != nil {
				return fmt.Errorf("%w: registering member: %v", ErrEtcdUnreachable, err)
			}
			lease.ID = lease2.ID
		} else {
			return fmt.Errorf("%w: %q in cluster %q is held by %s pid %d on %s since %s; stop that process or choose another instance_key",
				ErrDuplicateInstance, r.member.InstanceKey, r.member.ClusterName, other.Role, other.PID, other.Host, other.StartTime.Format(time.RFC3339))
		}
	}
	r.mu.Lock()
	r.lease = lease.ID
	r.mu.Unlock()
	return nil
}

func (r *Registration) keepAlive(ctx context.Context) {
	defer close(r.done)
	for {
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		ch, err := r.s.cli.KeepAlive(ctx, lease)
		if err == nil {
			for range ch {
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.s.log.Warn("member lease lost; re-registering when etcd answers", "instance_key", r.member.InstanceKey)
		backoff := reregisterMinBackoff
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			err := r.acquire(ctx)
			if err == nil {
				r.mu.Lock()
				r.lost++
				r.mu.Unlock()
				r.s.log.Info("member re-registered", "instance_key", r.member.InstanceKey)
				break
			}
			if errors.Is(err, ErrDuplicateInstance) {
				// Someone else took our name while we were cut off: we must not fight it.
				r.s.log.Error("cannot re-register", "err", err)
				return
			}
			backoff = min(backoff*2, reregisterMaxBackoff)
		}
	}
}

// leftover reports whether other is a record left behind by a process that
// ran on this host and is gone: same host name and a PID that is no longer
// alive.
func leftover(other, self Member) bool {
	if other.Host == "" || other.Host != self.Host || other.Incarnation() == self.Incarnation() {
		return false
	}
	return other.PID > 0 && other.PID != self.PID && syscall.Kill(other.PID, 0) == syscall.ESRCH
}

// Member returns what this registration publishes.
func (r *Registration) Member() Member { return r.member }

// Relost reports how many times the lease was lost and re-acquired.
func (r *Registration) Relost() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost
}

// Close stops the keepalive and deletes the record at once (by revoking the
// lease), so a clean shutdown is visible without waiting for the TTL.
func (r *Registration) Close() error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return nil
	}
	r.closing = true
	lease := r.lease
	r.mu.Unlock()
	r.cancel()
	<-r.done
	ctx, cancel := context.WithTimeout(context.Background(), RequestTimeout)
	defer cancel()
	if _, err := r.s.cli.Revoke(ctx, lease); err != nil {
		return fmt.Errorf("revoking member lease (the record goes when its TTL ends): %w", err)
	}
	return nil
}

// Members lists the live members of the cluster and the etcd revision of the
// listing (to start a watch from).
func (s *Store) Members(ctx context.Context) ([]Member, int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.Members(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("%w: listing members: %v", ErrEtcdUnreachable, err)
	}
	out := make([]Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			s.log.Warn("skipping unreadable member record", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, m)
	}
	return out, resp.Header.Revision, nil
}

// MemberEvent is one change of a member record.
type MemberEvent struct {
	Deleted     bool
	InstanceKey string
	Member      Member // zero when Deleted
}

// WatchMembers streams member changes after revision rev (from Members). The
// channel closes when ctx ends; a compacted or broken watch is reported by a
// final error on errc, after which the caller lists again.
func (s *Store) WatchMembers(ctx context.Context, rev int64) (<-chan []MemberEvent, <-chan error) {
	out := make(chan []MemberEvent, 16)
	errc := make(chan error, 1)
	go func() {
		defer close(out)
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keys.Members(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if err := resp.Err(); err != nil {
				errc <- err
				return
			}
			batch := make([]MemberEvent, 0, len(resp.Events))
			for _, ev := range resp.Events {
				name := s.keys.memberKeyName(string(ev.Kv.Key))
				if ev.Type == clientv3.EventTypeDelete {
					batch = append(batch, MemberEvent{Deleted: true, InstanceKey: name})
					continue
				}
				var m Member
				if err := json.Unmarshal(ev.Kv.Value, &m); err != nil {
					continue
				}
				batch = append(batch, MemberEvent{InstanceKey: name, Member: m})
			}
			select {
			case out <- batch:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() == nil {
			errc <- errors.New("member watch closed")
		}
	}()
	return out, errc
}
