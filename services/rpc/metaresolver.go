package rpc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// EndpointKey is the member endpoint (meta.Member.Endpoints) that holds a
// member's rpc address: the address its Node.Start returned.
const EndpointKey = "rpc"

// MetaResolver pacing and memory.
const (
	// metaRelistMinBackoff and metaRelistMaxBackoff pace re-listing after a
	// broken watch while etcd does not answer; meanwhile the last listing
	// keeps serving.
	metaRelistMinBackoff = 200 * time.Millisecond
	metaRelistMaxBackoff = 5 * time.Second
	// maxDeparted bounds how many departed nodes are remembered, so that
	// calls to them say "left" instead of "unknown"; the oldest go first.
	maxDeparted = 4096
)

// MemberSource is the part of meta.Store a MetaResolver reads.
type MemberSource interface {
	Members(ctx context.Context) ([]meta.Member, int64, error)
	WatchMembers(ctx context.Context, rev int64) (<-chan []meta.MemberEvent, <-chan error)
}

var _ MemberSource = (*meta.Store)(nil)

// MetaResolverOptions configure a MetaResolver. The zero value is usable.
type MetaResolverOptions struct {
	// Endpoint is the endpoint key holding the rpc address; default
	// EndpointKey.
	Endpoint string
	// Log: default slog.Default().
	Log *slog.Logger
}

// MetaResolver resolves node ids through the cluster's member records in
// etcd: it lists the members once, then follows WatchMembers, so Resolve
// never talks to etcd. A node maps to its Endpoints["rpc"] address and
// its incarnation (instance key and start time); when its record goes,
// calls to it fail with ErrPeerGone, and Nodes using the resolver drop
// their connection to it at once (Watcher). While etcd is unreachable the
// last known members keep resolving.
type MetaResolver struct {
	watchers
	src      MemberSource
	endpoint string
	log      *slog.Logger
	cancel   context.CancelFunc
	done     chan struct{}

	mu sync.RWMutex
	// members by instance key, and node id → instance key.
	members map[string]meta.Member
	byNode  map[string]string
	// departed: node id → when its record went; order bounds it.
	departed map[string]time.Time
	order    []string
}

var (
	_ Resolver       = (*MetaResolver)(nil)
	_ Watcher        = (*MetaResolver)(nil)
	_ InstanceLookup = (*MetaResolver)(nil)
)

// NewMetaResolver lists the members (within ctx) and starts following
// their changes until Close.
func NewMetaResolver(ctx context.Context, src MemberSource, o MetaResolverOptions) (*MetaResolver, error) {
	if o.Endpoint == "" {
		o.Endpoint = EndpointKey
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &MetaResolver{
		src: src, endpoint: o.Endpoint, log: o.Log, done: make(chan struct{}),
		members: map[string]meta.Member{}, byNode: map[string]string{}, departed: map[string]time.Time{},
	}
	ms, rev, err := src.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("rpc: listing members for the resolver: %w", err)
	}
	r.replace(ms)
	wctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.follow(wctx, rev)
	return r, nil
}

// Close stops following the members.
func (r *MetaResolver) Close() error {
	r.cancel()
	<-r.done
	return nil
}

// follow applies watch events; after a broken watch it lists again and
// resumes from the new revision.
func (r *MetaResolver) follow(ctx context.Context, rev int64) {
	defer close(r.done)
	backoff := metaRelistMinBackoff
	for {
		events, errc := r.src.WatchMembers(ctx, rev)
		for batch := range events {
			r.apply(batch)
		}
		if ctx.Err() != nil {
			return
		}
		var err error
		select {
		case err = <-errc:
		default:
		}
		r.log.Warn("rpc: member watch ended; listing members again", "err", err)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			ms, next, err := r.src.Members(ctx)
			if err == nil {
				r.notify(r.replace(ms)...)
				rev, backoff = next, metaRelistMinBackoff
				break
			}
			r.log.Warn("rpc: listing members failed; resolving from the last listing meanwhile", "err", err, "retry_in", backoff)
			backoff = min(2*backoff, metaRelistMaxBackoff)
		}
	}
}

// apply records a batch of member events and notifies watchers of the
// node ids concerned.
func (r *MetaResolver) apply(batch []meta.MemberEvent) {
	var changed []string
	r.mu.Lock()
	for _, ev := range batch {
		if old, ok := r.members[ev.InstanceKey]; ok {
			changed = append(changed, r.nodeID(old))
			r.removeLocked(old)
		}
		if !ev.Deleted {
			r.addLocked(ev.Member)
			changed = append(changed, r.nodeID(ev.Member))
		}
	}
	r.mu.Unlock()
	r.notify(changed...)
}

// replace installs a full listing and returns the node ids that changed.
func (r *MetaResolver) replace(ms []meta.Member) []string {
	next := make(map[string]meta.Member, len(ms))
	for _, m := range ms {
		next[m.InstanceKey] = m
	}
	var changed []string
	r.mu.Lock()
	defer r.mu.Unlock()
	for ik, old := range r.members {
		if m, ok := next[ik]; !ok || !sameMember(m, old) {
			changed = append(changed, r.nodeID(old))
			r.removeLocked(old)
		}
	}
	for ik, m := range next {
		if old, ok := r.members[ik]; ok && sameMember(m, old) {
			continue
		}
		changed = append(changed, r.nodeID(m))
		r.addLocked(m)
	}
	return changed
}

func sameMember(a, b meta.Member) bool {
	if a.Incarnation() != b.Incarnation() || a.NodeID != b.NodeID || a.Role != b.Role || a.ClusterName != b.ClusterName || len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for k, v := range a.Endpoints {
		if b.Endpoints[k] != v {
			return false
		}
	}
	return true
}

func (r *MetaResolver) nodeID(m meta.Member) string {
	if m.NodeID != "" {
		return m.NodeID
	}
	return m.InstanceKey
}

func (r *MetaResolver) addLocked(m meta.Member) {
	id := r.nodeID(m)
	if other, ok := r.byNode[id]; ok && other != m.InstanceKey {
		r.log.Warn("rpc: two members claim one node_id; the later record wins", "node_id", id, "instance_key", m.InstanceKey, "other", other)
	}
	r.members[m.InstanceKey] = m
	r.byNode[id] = m.InstanceKey
	delete(r.departed, id)
}

func (r *MetaResolver) removeLocked(m meta.Member) {
	delete(r.members, m.InstanceKey)
	id := r.nodeID(m)
	if r.byNode[id] != m.InstanceKey {
		return
	}
	delete(r.byNode, id)
	r.departed[id] = time.Now()
	r.order = append(r.order, id)
	for len(r.departed) > maxDeparted && len(r.order) > 0 {
		delete(r.departed, r.order[0])
		r.order = r.order[1:]
	}
	if len(r.order) > 2*maxDeparted {
		r.order = append([]string(nil), r.order[len(r.order)-maxDeparted:]...)
	}
}

func identityOf(m meta.Member) transport.Identity {
	return transport.Identity{ClusterName: m.ClusterName, InstanceKey: m.InstanceKey, StartTime: m.StartTime, Role: string(m.Role)}
}

// Resolve implements Resolver.
func (r *MetaResolver) Resolve(nodeID string) (string, transport.Identity, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ik, ok := r.byNode[nodeID]
	if !ok {
		if at, left := r.departed[nodeID]; left {
			return "", transport.Identity{}, fmt.Errorf("%w: node %q left the cluster %v ago (its member record is gone)", ErrPeerGone, nodeID, time.Since(at).Round(time.Millisecond))
		}
		return "", transport.Identity{}, fmt.Errorf("%w: no member of the cluster has node_id %q; `fluxon status` lists the members", ErrUnknownNode, nodeID)
	}
	m := r.members[ik]
	addr := m.Endpoints[r.endpoint]
	if addr == "" {
		return "", transport.Identity{}, fmt.Errorf("%w: member %s (%s, node %q) advertises no %q endpoint: it serves no rpc", ErrUnknownNode, m.Incarnation(), m.Role, nodeID, r.endpoint)
	}
	return addr, identityOf(m), nil
}

// LookupInstance implements InstanceLookup.
func (r *MetaResolver) LookupInstance(instanceKey string) (transport.Identity, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.members[instanceKey]
	if !ok {
		return transport.Identity{}, false
	}
	return identityOf(m), true
}

// Members returns the members the resolver knows now, for tools.
func (r *MetaResolver) Members() []meta.Member {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]meta.Member, 0, len(r.members))
	for _, m := range r.members {
		out = append(out, m)
	}
	return out
}
