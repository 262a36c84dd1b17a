package mq

import (
	"context"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// BackendKV adapts a kv.Backend (an owner's store, or its cluster KV) to
// KV, for MQ handles that live inside an owner (the gRPC MQ service).
type BackendKV struct{ B kv.Backend }

var _ KV = BackendKV{}

// PutWith stores a copy of value.
func (a BackendKV) PutWith(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	return a.B.Put(ctx, key, value, o)
}

// GetCopy returns a copy of the value.
func (a BackendKV) GetCopy(ctx context.Context, key string) ([]byte, kv.Info, error) {
	h, err := a.B.GetContext(ctx, key)
	if err != nil {
		return nil, kv.Info{}, err
	}
	defer h.Close()
	return append([]byte(nil), h.Bytes()...), h.Info, nil
}

// Remove deletes key.
func (a BackendKV) Remove(ctx context.Context, key string) error { return a.B.RemoveContext(ctx, key) }

// Grant makes a lease.
func (a BackendKV) Grant(_ context.Context, ttl time.Duration) (kv.LeaseID, error) {
	return a.B.Grant(ttl)
}

// KeepAlive renews a lease.
func (a BackendKV) KeepAlive(_ context.Context, id kv.LeaseID) (time.Duration, error) {
	return a.B.KeepAlive(id)
}

// Revoke ends a lease.
func (a BackendKV) Revoke(_ context.Context, id kv.LeaseID) error { return a.B.Revoke(id) }
