package rpc

import (
	"fmt"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Resolver tells a Node where a node listens and which incarnation of it
// the caller expects there. The identity's zero fields are not checked
// in the handshake: an empty InstanceKey accepts any member at the
// address, a zero StartTime any incarnation.
type Resolver interface {
	// Resolve returns the node's rpc address and identity. A node it never
	// heard of gives an error matching ErrUnknownNode; one that left
	// (its record went) may give ErrPeerGone instead.
	Resolve(nodeID string) (addr string, id transport.Identity, err error)
}

// Watcher is implemented by resolvers that learn of changes. A Node
// subscribes when it is created: on each change it re-resolves the node,
// and drops its connection when the node left or is another incarnation
// now, so that calls in flight to it fail at once with ErrPeerGone.
type Watcher interface {
	// Watch calls fn with the node id of every node whose record changed
	// or went, from a goroutine of the resolver's, never while holding a
	// lock the resolver's other methods take. stop ends the subscription.
	Watch(fn func(nodeID string)) (stop func())
}

// InstanceLookup is implemented by resolvers that can find a member by its
// instance key. A Node whose resolver has it refuses connections from an
// incarnation older than the one the resolver knows for that instance
// (a process that was replaced and does not know it yet): ErrStaleNode on
// the caller's side.
type InstanceLookup interface {
	LookupInstance(instanceKey string) (transport.Identity, bool)
}

// watchers is the subscription list a resolver embeds.
type watchers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(string)
}

func (w *watchers) Watch(fn func(nodeID string)) (stop func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = make(map[int]func(string))
	}
	id := w.next
	w.next++
	w.fns[id] = fn
	return func() {
		w.mu.Lock()
		delete(w.fns, id)
		w.mu.Unlock()
	}
}

func (w *watchers) notify(nodeIDs ...string) {
	w.mu.Lock()
	fns := make([]func(string), 0, len(w.fns))
	for _, fn := range w.fns {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, id := range nodeIDs {
		for _, fn := range fns {
			fn(id)
		}
	}
}

// StaticEntry is one node of a StaticResolver.
type StaticEntry struct {
	Addr     string
	Identity transport.Identity
}

// StaticResolver is a Resolver over a map that the program (or test)
// keeps up to date by hand. It is safe for concurrent use; Set and Remove
// notify the Nodes that use it.
type StaticResolver struct {
	watchers

	mu    sync.RWMutex
	nodes map[string]StaticEntry
	// left remembers nodes removed with Remove, so that calls to them say
	// the node left rather than that it was never known.
	left map[string]time.Time
}

var (
	_ Resolver       = (*StaticResolver)(nil)
	_ Watcher        = (*StaticResolver)(nil)
	_ InstanceLookup = (*StaticResolver)(nil)
)

// NewStaticResolver returns a resolver holding nodes (copied).
func NewStaticResolver(nodes map[string]StaticEntry) *StaticResolver {
	r := &StaticResolver{nodes: make(map[string]StaticEntry, len(nodes)), left: make(map[string]time.Time)}
	for id, e := range nodes {
		r.nodes[id] = e
	}
	return r
}

// Set adds or replaces a node.
func (r *StaticResolver) Set(nodeID, addr string, id transport.Identity) {
	r.mu.Lock()
	r.nodes[nodeID] = StaticEntry{Addr: addr, Identity: id}
	delete(r.left, nodeID)
	r.mu.Unlock()
	r.notify(nodeID)
}

// Remove forgets a node: calls to it fail with ErrPeerGone, and calls in
// flight to it through a Node using this resolver are failed at once.
func (r *StaticResolver) Remove(nodeID string) {
	r.mu.Lock()
	if _, ok := r.nodes[nodeID]; ok {
		delete(r.nodes, nodeID)
		r.left[nodeID] = time.Now()
	}
	r.mu.Unlock()
	r.notify(nodeID)
}

// Resolve implements Resolver.
func (r *StaticResolver) Resolve(nodeID string) (string, transport.Identity, error) {
	r.mu.RLock()
	e, ok := r.nodes[nodeID]
	at, left := r.left[nodeID]
	r.mu.RUnlock()
	switch {
	case ok:
		return e.Addr, e.Identity, nil
	case left:
		return "", transport.Identity{}, fmt.Errorf("%w: node %q left %v ago", ErrPeerGone, nodeID, time.Since(at).Round(time.Millisecond))
	}
	return "", transport.Identity{}, fmt.Errorf("%w: %q is not in this static resolver", ErrUnknownNode, nodeID)
}

// LookupInstance implements InstanceLookup.
func (r *StaticResolver) LookupInstance(instanceKey string) (transport.Identity, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.nodes {
		if e.Identity.InstanceKey == instanceKey {
			return e.Identity, true
		}
	}
	return transport.Identity{}, false
}
