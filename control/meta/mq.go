package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The MQ keyspace (services/mq keeps the meaning of the values):
//
//	mq/names/<unique_key>          the channel record (chan_id, type, capacity, TTL, lease), on the channel lease
//	mq/chan/<chan_id>/<sub>/<id>   per-channel state: members (on each member's own lease), per-producer
//	                               reserved/produced/consumed offsets and claims
//
// Everything of a channel except its members' records lives on the
// channel's lease, which every live member keeps alive: when the last member
// is gone for the channel's TTL, etcd drops the lot at once.

// MQNames is the prefix of channel records by unique_key.
func (k Keyspace) MQNames() string { return k.prefix + "mq/names/" }

// MQChan is the prefix of one channel's state.
func (k Keyspace) MQChan(chanID string) string { return k.prefix + "mq/chan/" + chanID + "/" }

// ErrNoLease: the lease named ended (or never was).
var ErrNoLease = errors.New("etcd lease not found")

// MQ is the etcd side of the message queue: plain reads and writes of the MQ
// subtree, leases and the optimistic transactions services/mq builds on.
type MQ struct{ s *Store }

// MQ returns the store's MQ view.
func (s *Store) MQ() MQ { return MQ{s: s} }

// Keys returns the cluster keyspace.
func (m MQ) Keys() Keyspace { return m.s.keys }

// KV is one key and value read from etcd, with its mod revision.
type KV struct {
	Key   string
	Value []byte
	Mod   int64
	Lease int64
}

// Grant makes an etcd lease of ttl (rounded up to whole seconds, at least 1).
func (m MQ) Grant(ctx context.Context, ttl time.Duration) (int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	secs := int64((ttl + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	r, err := m.s.cli.Grant(ctx, secs)
	if err != nil {
		return 0, fmt.Errorf("etcd grant: %w", err)
	}
	return int64(r.ID), nil
}

// KeepAliveOnce renews a lease; ErrNoLease when it has ended.
func (m MQ) KeepAliveOnce(ctx context.Context, lease int64) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := m.s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(lease))
	if err != nil && strings.Contains(err.Error(), "requested lease not found") {
		return ErrNoLease
	}
	return err
}

// Revoke ends a lease and deletes the keys on it.
func (m MQ) Revoke(ctx context.Context, lease int64) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := m.s.cli.Revoke(ctx, clientv3.LeaseID(lease))
	if err != nil && strings.Contains(err.Error(), "requested lease not found") {
		return nil
	}
	return err
}

// Create puts key=value on lease only if key does not exist. It returns
// the record that is there afterwards and whether this call made it.
func (m MQ) Create(ctx context.Context, key string, value []byte, lease int64) (KV, bool, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	r, err := m.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value), clientv3.WithLease(clientv3.LeaseID(lease)))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return KV{}, false, err
	}
	if r.Succeeded {
		return KV{Key: key, Value: value, Mod: r.Header.Revision, Lease: lease}, true, nil
	}
	kvs := r.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 { // deleted in between: the caller retries
		return KV{}, false, nil
	}
	return KV{Key: key, Value: kvs[0].Value, Mod: kvs[0].ModRevision, Lease: kvs[0].Lease}, false, nil
}

// Get reads one key; ok is false when it does not exist.
func (m MQ) Get(ctx context.Context, key string) (kv KV, ok bool, err error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	r, err := m.s.cli.Get(ctx, key)
	if err != nil || len(r.Kvs) == 0 {
		return KV{}, false, err
	}
	k := r.Kvs[0]
	return KV{Key: key, Value: k.Value, Mod: k.ModRevision, Lease: k.Lease}, true, nil
}

// List reads every key under prefix at one revision, which it returns.
func (m MQ) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	r, err := m.s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := make([]KV, len(r.Kvs))
	for i, k := range r.Kvs {
		out[i] = KV{Key: string(k.Key), Value: k.Value, Mod: k.ModRevision, Lease: k.Lease}
	}
	return out, r.Header.Revision, nil
}

// Put writes key=value on lease (0: none).
func (m MQ) Put(ctx context.Context, key string, value []byte, lease int64) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := m.s.cli.Put(ctx, key, string(value), clientv3.WithLease(clientv3.LeaseID(lease)))
	return err
}

// PutAll writes several keys on one lease in one transaction.
func (m MQ) PutAll(ctx context.Context, kvs map[string][]byte, lease int64) error {
	if len(kvs) == 0 {
		return nil
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	ops := make([]clientv3.Op, 0, len(kvs))
	for k, v := range kvs {
		ops = append(ops, clientv3.OpPut(k, string(v), clientv3.WithLease(clientv3.LeaseID(lease))))
	}
	_, err := m.s.cli.Txn(ctx).Then(ops...).Commit()
	return err
}

// PutIfUnchanged writes key=value on lease when nothing under guardPrefix
// was modified after revision rev (an optimistic transaction); ok is false
// when something was, and the caller re-reads and retries.
func (m MQ) PutIfUnchanged(ctx context.Context, guardPrefix string, rev int64, key string, value []byte, lease int64) (bool, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	r, err := m.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(guardPrefix).WithPrefix(), "<", rev+1)).
		Then(clientv3.OpPut(key, string(value), clientv3.WithLease(clientv3.LeaseID(lease)))).Commit()
	if err != nil {
		return false, err
	}
	return r.Succeeded, nil
}

// Delete removes key if it holds exactly value (nil value: whatever it holds).
func (m MQ) Delete(ctx context.Context, key string, value []byte) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if value == nil {
		_, err := m.s.cli.Delete(ctx, key)
		return err
	}
	_, err := m.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", string(value))).
		Then(clientv3.OpDelete(key)).Commit()
	return err
}

// DeletePrefix removes every key under prefix.
func (m MQ) DeletePrefix(ctx context.Context, prefix string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := m.s.cli.Delete(ctx, prefix, clientv3.WithPrefix())
	return err
}

// Event is a change under a watched prefix; Deleted says the key went.
type Event struct {
	KV
	Deleted bool
}

// Watch streams changes under prefix after revision rev until ctx ends.
// The channel closes when the watch fails (the caller re-lists and watches
// again) or ctx ends.
func (m MQ) Watch(ctx context.Context, prefix string, rev int64) <-chan []Event {
	out := make(chan []Event, 16)
	wch := m.s.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil || resp.Canceled {
				return
			}
			evs := make([]Event, len(resp.Events))
			for i, e := range resp.Events {
				evs[i] = Event{KV: KV{Key: string(e.Kv.Key), Value: e.Kv.Value, Mod: e.Kv.ModRevision, Lease: e.Kv.Lease},
					Deleted: e.Type == clientv3.EventTypeDelete}
			}
			select {
			case out <- evs:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// PutAllIfValues writes kvs on lease in one transaction if every guard key
// holds exactly its value; ok is false when one does not.
func (m MQ) PutAllIfValues(ctx context.Context, guards map[string]string, kvs map[string][]byte, lease int64) (bool, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	cmps := make([]clientv3.Cmp, 0, len(guards))
	for k, v := range guards {
		cmps = append(cmps, clientv3.Compare(clientv3.Value(k), "=", v))
	}
	ops := make([]clientv3.Op, 0, len(kvs))
	for k, v := range kvs {
		ops = append(ops, clientv3.OpPut(k, string(v), clientv3.WithLease(clientv3.LeaseID(lease))))
	}
	r, err := m.s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return r.Succeeded, nil
}
