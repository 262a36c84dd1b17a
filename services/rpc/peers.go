package rpc

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// peer is the connection cache's entry for one node: one transport.Conn
// to one incarnation at one address, shared by every call to the node.
// The first call dials (on a goroutine of its own, so that a short call
// deadline does not cut the dial short for the calls behind it); the
// others wait for it.
type peer struct {
	nodeID      string
	addr        string
	want        transport.Identity
	incarnation string

	// ready is closed once the dial ended; conn or err is set before.
	ready chan struct{}
	conn  transport.Conn
	err   error
	// why is set (once) when the Node drops the entry: the node left or
	// restarted, or the Node closed. Calls failing on the dropped
	// connection report it.
	why atomic.Pointer[error]
}

func (p *peer) gone() error {
	if e := p.why.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *peer) matches(addr, incarnation string) bool {
	return p.addr == addr && p.incarnation == incarnation
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// usable reports a dialled, live, not dropped connection.
func (p *peer) usable() bool {
	return isClosed(p.ready) && p.err == nil && !isClosed(p.conn.Done()) && p.why.Load() == nil
}

// peer returns a live connection to the node at addr (incarnation want),
// dialling if there is none, re-dialling once if the cached one turns
// out dead.
func (n *Node) peer(ctx context.Context, nodeID, path, addr string, want transport.Identity) (*peer, error) {
	inc := want.Incarnation()
	n.mu.RLock()
	p := n.peers[nodeID]
	n.mu.RUnlock()
	if p != nil && p.matches(addr, inc) && p.usable() {
		return p, nil
	}
	for attempt := 0; ; attempt++ {
		p, err := n.peerEntry(nodeID, addr, want, inc)
		if err != nil {
			return nil, fmt.Errorf("%w: %s on node %q", err, path, nodeID)
		}
		select {
		case <-p.ready:
		case <-ctx.Done():
			return nil, callError(ctx, nodeID, path, fmt.Errorf("waiting for the connection to %s: %w", addr, ctxErr(ctx)), nil)
		}
		if p.err != nil {
			return nil, dialError(ctx, nodeID, path, p)
		}
		if p.usable() {
			return p, nil
		}
		if why := p.gone(); why != nil {
			return nil, callError(ctx, nodeID, path, transport.ErrClosed, why)
		}
		if attempt > 0 {
			return nil, callError(ctx, nodeID, path, p.conn.Err(), nil)
		}
	}
}

// dialError maps a failed dial. A connection lost during the handshake
// is ErrUnreachable, not ErrPeerGone: no request was sent, so the caller
// knows no handler ran.
func dialError(ctx context.Context, nodeID, path string, p *peer) error {
	if p.gone() == nil && (errors.Is(p.err, transport.ErrPeerGone) || errors.Is(p.err, transport.ErrClosed)) {
		return fmt.Errorf("%w: %s on node %q: connecting to %s: %w", ErrUnreachable, path, nodeID, p.addr, p.err)
	}
	return callError(ctx, nodeID, path, p.err, p.gone())
}

func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", transport.ErrTimeout, ctx.Err())
	}
	return ctx.Err()
}

// peerEntry returns the cache entry for the node, replacing one of
// another incarnation or address and one whose connection died, and
// starting a dial for a new one.
func (n *Node) peerEntry(nodeID, addr string, want transport.Identity, inc string) (*peer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	p := n.peers[nodeID]
	if p != nil && !p.matches(addr, inc) {
		n.dropLocked(p, fmt.Errorf("node %q is now %s at %s, no longer %s at %s", nodeID, inc, addr, p.incarnation, p.addr))
		p = nil
	}
	if p != nil && isClosed(p.ready) && (p.err != nil || isClosed(p.conn.Done())) {
		delete(n.peers, nodeID)
		p = nil
	}
	if p == nil {
		p = &peer{nodeID: nodeID, addr: addr, want: want, incarnation: inc, ready: make(chan struct{})}
		n.peers[nodeID] = p
		n.wg.Add(1)
		go n.dial(p)
	}
	return p, nil
}

// dial connects p and publishes the outcome. A failed dial is not cached:
// the calls waiting get its error, the next call dials again.
func (n *Node) dial(p *peer) {
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(n.ctx, n.dialTimeout)
	c, err := n.tr.Dial(ctx, p.addr, n.local, verifyTarget(n.local, p.nodeID, p.want))
	cancel()
	n.mu.Lock()
	dropped := p.why.Load() != nil
	if err != nil && n.peers[p.nodeID] == p {
		delete(n.peers, p.nodeID)
	}
	if err == nil && dropped {
		err = transport.ErrClosed
	}
	p.conn, p.err = c, err
	close(p.ready)
	if err == nil {
		n.m.conns.Inc()
		n.wg.Add(1)
		go n.watchConn(p)
	}
	n.mu.Unlock()
	if c != nil && dropped {
		_ = c.Close()
	}
	if err != nil && !dropped {
		n.log.Debug("rpc: dial failed", "node", p.nodeID, "addr", p.addr, "err", err)
	}
}

// watchConn forgets p once its connection ends.
func (n *Node) watchConn(p *peer) {
	defer n.wg.Done()
	<-p.conn.Done()
	n.m.conns.Dec()
	n.mu.Lock()
	if n.peers[p.nodeID] == p {
		delete(n.peers, p.nodeID)
	}
	n.mu.Unlock()
	if p.gone() == nil {
		n.log.Debug("rpc: connection ended", "node", p.nodeID, "peer", p.incarnation, "err", p.conn.Err())
	}
}

// dropLocked removes p from the cache and closes its connection (now, or
// when its dial ends); calls in flight on it fail, reporting why.
// n.mu is held.
func (n *Node) dropLocked(p *peer, why error) {
	if n.peers[p.nodeID] == p {
		delete(n.peers, p.nodeID)
	}
	if !p.why.CompareAndSwap(nil, &why) {
		return
	}
	if isClosed(p.ready) && p.conn != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			_ = p.conn.Close()
		}()
	}
}

// resolverChanged drops the connection to a node that left or is another
// incarnation now, so that calls in flight to it end at once.
func (n *Node) resolverChanged(nodeID string) {
	addr, want, err := n.res.Resolve(nodeID)
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[nodeID]
	switch {
	case p == nil:
	case err != nil:
		n.dropLocked(p, fmt.Errorf("node %q left the cluster (the resolver no longer knows it)", nodeID))
	case !p.matches(addr, want.Incarnation()):
		n.dropLocked(p, fmt.Errorf("node %q restarted or moved: now %s at %s", nodeID, want.Incarnation(), addr))
	}
}
