package owner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/cluster"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// KVEndpointKey is the member endpoint (meta.Member.Endpoints) where an
// owner's cluster KV listens: the transport address other owners pull values
// from and send directory requests to. It is not "transport": the RPC node
// listens on the data-plane transport too (as "rpc"), on another port.
const KVEndpointKey = "kv"

// DefaultKVOpTimeout bounds one KV call of a frontend that goes through the
// cluster. The transport already fails calls to a dead or cut peer within
// its handshake and keepalive timeouts (5 s each); this bound is for the
// waits the protocol adds on top (a write waiting out a silent holder's
// session, lookups retried while a write is in progress), so that a client
// whose own deadline is long or absent (RESP, shm) hears "unavailable"
// rather than waiting for ever.
const DefaultKVOpTimeout = 30 * time.Second

// startClusterKV starts the owner's cross-host KV node on a listener of its
// own: the data-plane transport's host (listen.transport) with a port the
// kernel picks. Other owners find it through the "kv" endpoint of this
// owner's member record, so no port needs configuring; a fixed port (for
// firewalled hosts) would be a listen.kv setting, not added until needed.
func (o *Owner) startClusterKV(cfg *config.Config, instanceKey string, log *slog.Logger, reg prometheus.Registerer, deps Deps) error {
	if deps.Meta == nil {
		return nil
	}
	tr, tc, err := o.newTransport(cfg, log, reg, nodeTransports{dpdkAddr: dpdkAnyPort(cfg.Network.DPDK.Address)})
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(cfg.Listen.Transport)
	if err != nil {
		return fmt.Errorf("listen.transport %q: %w; use host:port", cfg.Listen.Transport, err)
	}
	addr := net.JoinHostPort(host, "0")
	node := cluster.New(cluster.Options{
		Self:       ownerIdentity(cfg.ClusterName, instanceKey, deps.StartTime),
		Store:      o.Store,
		Transport:  o.dialVia(tr, tc, log),
		ListenAddr: addr,
		Log:        log.With("component", "kv-cluster"),
	})
	ln, err := node.Start(context.Background())
	if err != nil {
		return fmt.Errorf("cluster KV listener on %s (the host of listen.transport): %w", addr, err)
	}
	o.Cluster = node
	o.closers = append(o.closers, node.Close)
	o.Endpoints[KVEndpointKey] = advertisedAll(ln, cfg.Network.AdvertiseAddress)
	return nil
}

// advertised is the address other owners dial for a listener bound to addr:
// a wildcard host (0.0.0.0, ::) is nobody's address, so it becomes
// network.advertise_address (which Validate derives when not set).
func advertised(addr, advertise string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || advertise == "" {
		return addr
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return addr
	}
	return net.JoinHostPort(advertise, port)
}

// ownerIdentity is an owner's transport identity: the same for its RPC node
// and its cluster KV node, and what other owners derive from its member
// record (OwnerPeers).
func ownerIdentity(clusterName, instanceKey string, start time.Time) transport.Identity {
	return transport.Identity{ClusterName: clusterName, InstanceKey: instanceKey, StartTime: start, Role: string(meta.RoleOwner)}
}

// OwnerPeers turns a routing table into the cluster KV's peers. Owners
// without a "kv" endpoint (older builds, or owners outside a cluster) are
// left out: no key can be homed on an owner nobody can reach.
func OwnerPeers(clusterName string, t meta.RoutingTable) []cluster.Peer {
	peers := make([]cluster.Peer, 0, len(t.Owners))
	for _, ow := range t.Owners {
		addr := ow.Endpoints[KVEndpointKey]
		if addr == "" {
			continue
		}
		host := ow.Host
		if host == "" {
			// A table from a master that predates Owner.Host: the instance
			// key at least keeps replicas apart per owner.
			host = ow.InstanceKey
		}
		peers = append(peers, cluster.Peer{ID: ownerIdentity(clusterName, ow.InstanceKey, ow.StartTime), Addr: addr, Host: host})
	}
	return peers
}

// SetRouting hands a routing table to the owner's cluster KV. A no-op for an
// owner outside a cluster.
func (o *Owner) SetRouting(clusterName string, t meta.RoutingTable) error {
	if o.Cluster == nil {
		return nil
	}
	return o.Cluster.SetRouting(t.Epoch, OwnerPeers(clusterName, t))
}

// clusterKV is the KV of an owner in a cluster, as its frontends (shm, gRPC,
// RESP) see it: reads, writes and removes go through the cluster node, so a
// key put on one host is read on any other and an overwrite or remove is
// seen everywhere once it returns.
//
// The rest is this owner's local view, for now: Reserve/Bytes/Abort (a
// reservation is room in this owner's pool, made the key's value by
// CommitContext), Scan, Len and Stats (the keys and copies held here),
// and leases, Expire and TTL (a lease and the TTL of a value bind this
// owner's copy only; the directory knows nothing of them yet).
//
// Conditional puts (IfAbsent, IfPresent) are decided by the key's home,
// atomically with the write (SET NX from two hosts: one wins).
type clusterKV struct {
	store     *kv.Store
	node      *cluster.Node
	opTimeout time.Duration
}

var _ kv.Backend = (*clusterKV)(nil)

// call runs f under the op timeout and maps the cluster's errors to kv's:
// a timeout of our own (not the caller's) and "no routing table yet" are
// kv.ErrUnavailable too.
func (c *clusterKV) call(ctx context.Context, f func(ctx context.Context) error) error {
	octx, cancel := context.WithTimeout(ctx, c.opTimeout)
	defer cancel()
	err := f(octx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrUnavailable), errors.Is(err, cluster.ErrNoRouting):
		return unavailable{err}
	case ctx.Err() == nil && octx.Err() != nil:
		return unavailable{fmt.Errorf("no answer from the key's owners within %s: %w", c.opTimeout, err)}
	}
	return err
}

// unavailable is an error of the cluster that matches kv.ErrUnavailable (the
// frontends' "retry later") and still the cluster's own error.
type unavailable struct{ err error }

func (e unavailable) Error() string   { return e.err.Error() + "; retry later" }
func (e unavailable) Unwrap() []error { return []error{kv.ErrUnavailable, e.err} }

func (c *clusterKV) GetContext(ctx context.Context, key string) (h *kv.Holder, err error) {
	err = c.call(ctx, func(ctx context.Context) error {
		h, err = c.node.Get(ctx, key)
		return err
	})
	return h, err
}

func (c *clusterKV) StatContext(ctx context.Context, key string) (info kv.Info, err error) {
	err = c.call(ctx, func(ctx context.Context) error {
		info, err = c.node.Stat(ctx, key)
		return err
	})
	return info, err
}

func (c *clusterKV) Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (v uint64, err error) {
	err = c.call(ctx, func(ctx context.Context) error {
		v, err = c.node.Put(ctx, key, value, o)
		return err
	})
	return v, err
}

func (c *clusterKV) RemoveContext(ctx context.Context, key string) error {
	// The cluster's remove succeeds for a key that does not exist; the
	// frontends count removed keys (DEL's reply), so ask first.
	if _, err := c.StatContext(ctx, key); err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context) error { return c.node.Remove(ctx, key) })
}

// Reserve makes room here; IfAbsent/IfPresent travel with the reservation
// to the key's home, which decides them at commit.
func (c *clusterKV) Reserve(ctx context.Context, key string, size uint64, o kv.PutOptions) (*kv.Reservation, error) {
	return c.node.Reserve(ctx, key, size, o)
}

func (c *clusterKV) Bytes(r *kv.Reservation) []byte { return c.store.Bytes(r) }

func (c *clusterKV) CommitContext(ctx context.Context, r *kv.Reservation) (v uint64, err error) {
	err = c.call(ctx, func(ctx context.Context) error {
		v, err = c.node.Commit(ctx, r)
		return err
	})
	return v, err
}

func (c *clusterKV) Abort(r *kv.Reservation) error { return c.node.Abort(r) }

func (c *clusterKV) Expire(key string, ttl time.Duration) error { return c.store.Expire(key, ttl) }
func (c *clusterKV) TTL(key string) (time.Duration, bool, error) {
	return c.store.TTL(key)
}
func (c *clusterKV) Grant(ttl time.Duration) (kv.LeaseID, error)    { return c.store.Grant(ttl) }
func (c *clusterKV) KeepAlive(id kv.LeaseID) (time.Duration, error) { return c.store.KeepAlive(id) }
func (c *clusterKV) LeaseTTL(id kv.LeaseID) (time.Duration, error)  { return c.store.LeaseTTL(id) }
func (c *clusterKV) Revoke(id kv.LeaseID) error                     { return c.store.Revoke(id) }

func (c *clusterKV) Scan(cursor uint64, count int, match func(string) bool) ([]string, uint64) {
	return c.store.Scan(cursor, count, match)
}
func (c *clusterKV) Len() int        { return c.store.Len() }
func (c *clusterKV) Stats() kv.Stats { return c.store.Stats() }
