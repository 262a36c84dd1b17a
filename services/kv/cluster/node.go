// Package cluster is the owner's KV across hosts: keys are homed by
// rendezvous hashing over the routing table (placement), each home keeps the
// directory of its keys (directory), values move between pools by bulk reads
// over the transport, and holder sessions make every read linearizable: once
// an overwrite or remove has returned, no owner serves the old value. The
// design is in docs/architecture.md ("Keys across hosts: the protocol").
//
// This first version handles one routing epoch: re-homing on an epoch change
// (Claim) is the next step.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/directory"
	"github.com/fluxon-dev/fluxon/services/kv/placement"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// Timing.
const (
	busyRetryMin = 500 * time.Microsecond
	busyRetryMax = 20 * time.Millisecond
	expireTick   = 50 * time.Millisecond
	pinTimeout   = 30 * time.Second
	// invalidateRetry paces invalidations to a holder that did not answer.
	invalidateRetry = 50 * time.Millisecond
)

// Errors.
var (
	ErrUnavailable = errors.New("cluster: key unavailable: no live holder")
	ErrNoRouting   = errors.New("cluster: no routing table yet")
)

// Peer is an owner in the routing table.
type Peer struct {
	ID   transport.Identity
	Addr string // transport endpoint
	Host string
}

// Name is the peer's holder name (its incarnation).
func (p Peer) Name() string { return p.ID.Incarnation() }

// Options configure a Node.
type Options struct {
	Self       transport.Identity
	Store      *kv.Store
	Transport  transport.Transport
	ListenAddr string
	SessionTTL time.Duration
	Log        *slog.Logger
}

// Node is one owner's part of the cluster KV.
type Node struct {
	o    Options
	self string
	ln   transport.Listener

	mu     sync.Mutex
	peers  []Peer
	byName map[string]Peer
	nodes  []placement.Node
	epoch  uint64
	local  map[string]localCopy
	gen    map[string]uint64 // bumped by every invalidation of a key
	// invalidated is, per key, the highest write id that invalidated it
	// here: a write of ours with a lower id was superseded before we could
	// install it.
	invalidated map[string]uint64
	writing     map[string]chan struct{} // keys with a local write in flight; closed when done
	sessions    map[string]time.Time     // home -> session deadline as this node believes it
	sessIDs     map[string]uint64        // home -> newest session id it gave us
	conns       map[string]transport.Conn

	dirMu   sync.Mutex
	dir     *directory.Directory
	changed chan struct{} // closed and replaced on every directory change

	pinMu sync.Mutex
	pins  map[uint64]pinned
	pinID atomic.Uint64

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type localCopy struct {
	version uint64
	home    string
	session uint64 // the session with home it is registered under
}

type pinned struct {
	h       *kv.Holder
	expires time.Time
}

// New returns a node; Start serves it.
func New(o Options) *Node {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = directory.DefaultSessionTTL
	}
	n := &Node{
		o: o, self: o.Self.Incarnation(), byName: map[string]Peer{}, local: map[string]localCopy{},
		gen: map[string]uint64{}, invalidated: map[string]uint64{}, writing: map[string]chan struct{}{}, sessions: map[string]time.Time{}, sessIDs: map[string]uint64{},
		conns: map[string]transport.Conn{}, dir: directory.New(o.SessionTTL, 0), changed: make(chan struct{}),
		pins: map[uint64]pinned{}, stop: make(chan struct{}),
	}
	// This owner's copies of keys homed on itself need no session with
	// itself; without a permanent one, its first AddHolder would start a
	// fresh session and drop it from every entry.
	n.dir.Keep(directory.Holder(n.self))
	return n
}

// Start listens on the transport and runs the session and expiry loops.
func (n *Node) Start(ctx context.Context) (string, error) {
	ln, err := n.o.Transport.Listen(ctx, n.o.ListenAddr, n.o.Self, transport.HandlerFuncs{Request: n.handle, Read: n.serveRead}, nil)
	if err != nil {
		return "", err
	}
	n.ln = ln
	n.wg.Add(2)
	go n.sessionLoop()
	go n.expireLoop()
	return ln.Addr(), nil
}

// Close stops the node.
func (n *Node) Close() error {
	already := true
	n.closeOnce.Do(func() { already = false })
	if already {
		return nil
	}
	close(n.stop)
	var err error
	if n.ln != nil {
		err = n.ln.Close()
	}
	n.wg.Wait()
	n.mu.Lock()
	for _, c := range n.conns {
		_ = c.Close()
	}
	n.conns = map[string]transport.Conn{}
	n.mu.Unlock()
	n.pinMu.Lock()
	for id, p := range n.pins {
		_ = p.h.Close()
		delete(n.pins, id)
	}
	n.pinMu.Unlock()
	return err
}

// SetRouting installs the routing table of epoch.
func (n *Node) SetRouting(epoch uint64, peers []Peer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.epoch != 0 && epoch != n.epoch {
		return fmt.Errorf("cluster: routing epoch %d -> %d: re-homing keys on an epoch change is not implemented yet", n.epoch, epoch)
	}
	n.epoch = epoch
	n.peers = append([]Peer(nil), peers...)
	n.byName = map[string]Peer{}
	n.nodes = make([]placement.Node, len(peers))
	for i, p := range peers {
		n.byName[p.Name()] = p
		n.nodes[i] = placement.Node{ID: p.Name(), Host: p.Host}
	}
	n.dirMu.Lock()
	n.dir.SetEpoch(epoch)
	n.dirMu.Unlock()
	go n.renewAll() // sessions with every home before the first request
	return nil
}

func (n *Node) homeOf(key string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	i := placement.Home(placement.KeyHash(key), n.nodes)
	if i < 0 {
		return "", ErrNoRouting
	}
	return n.nodes[i].ID, nil
}

// call sends a control request to the named peer (or handles it here).
func (n *Node) call(ctx context.Context, to, path string, req, resp any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var out []byte
	if to == n.self {
		out, err = n.handle(ctx, n.o.Self, path, b)
	} else {
		out, err = n.request(ctx, to, path, b)
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(out, resp)
}

func (n *Node) conn(ctx context.Context, to string) (transport.Conn, error) {
	n.mu.Lock()
	c := n.conns[to]
	p, known := n.byName[to]
	n.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
		default:
			return c, nil
		}
	}
	if !known {
		return nil, fmt.Errorf("%w: %s is not in the routing table", ErrUnavailable, to)
	}
	want := p.ID
	c, err := n.o.Transport.Dial(ctx, p.Addr, n.o.Self, func(peer transport.Identity) error {
		if peer.Incarnation() != want.Incarnation() {
			return fmt.Errorf("%w: expected %s, found %s", transport.ErrStaleMember, want.Incarnation(), peer.Incarnation())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old := n.conns[to]; old != nil {
		select {
		case <-old.Done():
		default:
			// Another goroutine dialled first and its connection is live: use it.
			_ = c.Close()
			return old, nil
		}
	}
	n.conns[to] = c
	return c, nil
}

func (n *Node) request(ctx context.Context, to, path string, payload []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		c, err := n.conn(ctx, to)
		if err != nil {
			return nil, err
		}
		out, err := c.Request(ctx, path, payload)
		if err != nil && attempt == 0 && (errors.Is(err, transport.ErrPeerGone) || errors.Is(err, transport.ErrClosed)) {
			continue // a cached connection died: dial once more
		}
		return out, err
	}
}

// --- the holder side: sessions, reads, writes ---

func (n *Node) sessionLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.o.SessionTTL / 3)
	defer t.Stop()
	for {
		n.renewAll()
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

func (n *Node) renewAll() {
	n.mu.Lock()
	peers := append([]Peer(nil), n.peers...)
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.Name() == n.self {
			continue
		}
		wg.Add(1)
		go func(home string) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), n.o.SessionTTL/3)
			defer cancel()
			_ = n.renew(ctx, home)
		}(p.Name())
	}
	wg.Wait()
}

// renew extends this node's session with home. The deadline it believes
// starts from before the request was sent, so it ends here first.
func (n *Node) renew(ctx context.Context, home string) error {
	sent := time.Now()
	var resp renewResp
	if err := n.call(ctx, home, pathRenew, renewReq{Holder: n.self}, &resp); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.adoptSessionLocked(home, resp.Session)
	if resp.Session == n.sessIDs[home] {
		if d := sent.Add(n.o.SessionTTL); d.After(n.sessions[home]) {
			n.sessions[home] = d
		}
	}
	return nil
}

// adoptSessionLocked records a session id home gave us. Copies registered
// under an older session are no longer counted by home: drop them. n.mu held.
func (n *Node) adoptSessionLocked(home string, id uint64) {
	if id <= n.sessIDs[home] {
		return
	}
	n.sessIDs[home] = id
	n.sessions[home] = time.Time{} // a new session: live again only from a renewal of it
	for k, lc := range n.local {
		if lc.home == home && lc.session < id {
			n.dropLocked(k)
		}
	}
}

func (n *Node) liveSession(home string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sessionLive(home)
}

// sessionLive: n.mu held.
func (n *Node) sessionLive(home string) bool {
	if home == n.self {
		return true
	}
	return time.Now().Before(n.sessions[home])
}

// dropLocked removes the local copy of key. n.mu held.
func (n *Node) dropLocked(key string) {
	if _, ok := n.local[key]; ok {
		delete(n.local, key)
		_ = n.o.Store.Remove(key)
	}
}

// Get returns key's current value from this owner's pool, pulling it from a
// holder first when this owner has no valid copy.
func (n *Node) Get(ctx context.Context, key string) (*kv.Holder, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, err
	}
	home, err := n.homeOf(key)
	if err != nil {
		return nil, err
	}
	backoff := busyRetryMin
	for {
		n.mu.Lock()
		lc, ok := n.local[key]
		if ok && n.sessionLive(home) {
			h, err := n.o.Store.Get(key)
			n.mu.Unlock()
			if err == nil && h.Info.Size >= 0 {
				_ = lc
				return h, nil
			}
		} else {
			n.mu.Unlock()
		}
		if !n.liveSession(home) {
			if err := n.renew(ctx, home); err != nil {
				return nil, fmt.Errorf("%w: home of %q unreachable: %v", ErrUnavailable, key, err)
			}
		}
		var loc lookupResp
		if err := n.call(ctx, home, pathLookup, keyReq{Key: key}, &loc); err != nil {
			return nil, fmt.Errorf("%w: looking up %q at its home: %v", ErrUnavailable, key, err)
		}
		switch loc.Status {
		case "notfound":
			return nil, fmt.Errorf("%w: %q", kv.ErrNotFound, key)
		case "busy":
			if err := sleepCtx(ctx, backoff); err != nil {
				return nil, err
			}
			backoff = min(backoff*2, busyRetryMax)
			continue
		}
		done, err := n.pull(ctx, key, home, loc)
		if err != nil {
			return nil, err
		}
		if !done {
			continue // a write came in between: look up again
		}
	}
}

// Stat describes key's current value (size and cluster version) without
// copying it here: from this owner's copy when it may serve one, else from
// the key's home.
func (n *Node) Stat(ctx context.Context, key string) (kv.Info, error) {
	if err := kv.CheckKey(key); err != nil {
		return kv.Info{}, err
	}
	home, err := n.homeOf(key)
	if err != nil {
		return kv.Info{}, err
	}
	n.mu.Lock()
	lc, ok := n.local[key]
	if ok && n.sessionLive(home) {
		info, err := n.o.Store.Stat(key)
		n.mu.Unlock()
		if err == nil {
			info.Version = lc.version
			return info, nil
		}
	} else {
		n.mu.Unlock()
	}
	backoff := busyRetryMin
	for {
		var loc lookupResp
		if err := n.call(ctx, home, pathLookup, keyReq{Key: key}, &loc); err != nil {
			return kv.Info{}, fmt.Errorf("%w: looking up %q at its home: %v", ErrUnavailable, key, err)
		}
		switch loc.Status {
		case "notfound":
			return kv.Info{}, fmt.Errorf("%w: %q", kv.ErrNotFound, key)
		case "busy":
			if err := sleepCtx(ctx, backoff); err != nil {
				return kv.Info{}, err
			}
			backoff = min(backoff*2, busyRetryMax)
			continue
		}
		return kv.Info{Key: key, Size: loc.Size, Version: loc.Version}, nil
	}
}

// pull copies the current version from a holder into this pool and
// registers this owner as a holder. false: the version went stale meanwhile.
func (n *Node) pull(ctx context.Context, key, home string, loc lookupResp) (bool, error) {
	var lastErr error
	for _, holder := range loc.Holders {
		if holder == n.self {
			n.mu.Lock()
			ch := n.writing[key]
			lc, ok := n.local[key]
			n.mu.Unlock()
			if ch != nil {
				// Our own write of the key is committing: read after it.
				select {
				case <-ch:
				case <-ctx.Done():
					return false, ctx.Err()
				}
				return false, nil
			}
			if ok && lc.version == loc.Version {
				return false, nil // it is servable again (the session was renewed)
			}
			// The home lists a copy of ours that is not installed here (yet):
			// another Get of this owner registered it and is installing it
			// now. Never tell the home to drop it (that would untrack a copy
			// about to be served); try the other holders, else look again.
			continue
		}
		var pin pinResp
		if err := n.call(ctx, holder, pathPin, pinReq{Key: key, Version: loc.Version}, &pin); err != nil {
			lastErr = err
			continue
		}
		if pin.Status != "ok" {
			return false, nil
		}
		n.mu.Lock()
		gen := n.gen[key]
		n.mu.Unlock()
		r, err := n.o.Store.Reserve(ctx, key, pin.Size, kv.PutOptions{})
		if err != nil {
			return false, err
		}
		c, err := n.conn(ctx, holder)
		if err == nil {
			err = c.ReadRemote(ctx, transport.RemoteRef{Length: pin.Size, Tag: pin.Pin}, n.o.Store.Bytes(r))
		}
		if err != nil {
			_ = n.o.Store.Abort(r)
			lastErr = err
			continue
		}
		var st statusResp
		if err := n.call(ctx, home, pathAddHolder, holderReq{Key: key, Holder: n.self, Version: loc.Version}, &st); err != nil || st.Status != "ok" {
			_ = n.o.Store.Abort(r)
			if err != nil {
				return false, fmt.Errorf("%w: registering a copy of %q at its home: %v", ErrUnavailable, key, err)
			}
			if st.Status == "nosession" {
				_ = n.renew(ctx, home)
			}
			return false, nil
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		n.adoptSessionLocked(home, st.Session)
		if n.gen[key] != gen || st.Session != n.sessIDs[home] {
			_ = n.o.Store.Abort(r)
			return false, nil // invalidated while we pulled, or registered under a session since replaced
		}
		if _, err := n.o.Store.Commit(r); err != nil {
			return false, err
		}
		n.local[key] = localCopy{version: loc.Version, home: home, session: st.Session}
		return true, nil
	}
	if lastErr == nil {
		// Only this owner is listed: its own copy is being installed.
		if err := sleepCtx(ctx, busyRetryMin); err != nil {
			return false, err
		}
		return false, nil
	}
	return false, fmt.Errorf("%w: %q: %v", ErrUnavailable, key, lastErr)
}

// Put stores value under key: written into this owner's pool, made current
// at the key's home once every other copy is gone.
func (n *Node) Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	if err := kv.CheckKey(key); err != nil {
		return 0, err
	}
	r, err := n.o.Store.Reserve(ctx, key, uint64(len(value)), o)
	if err != nil {
		return 0, err
	}
	copy(n.o.Store.Bytes(r), value)
	return n.write(ctx, key, r)
}

// Commit makes a reservation of this owner's store (Store.Reserve, filled
// through Store.Bytes) the key's current value across the cluster, as Put
// does with a copy. The reservation is consumed, committed or aborted.
func (n *Node) Commit(ctx context.Context, r *kv.Reservation) (uint64, error) {
	return n.write(ctx, r.Key, r)
}

// Remove deletes key everywhere; when it returns no owner serves it.
func (n *Node) Remove(ctx context.Context, key string) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	_, err := n.write(ctx, key, nil)
	return err
}

// write runs an overwrite (r != nil) or a remove (r == nil) of key.
func (n *Node) write(ctx context.Context, key string, r *kv.Reservation) (uint64, error) {
	remove := r == nil
	var size uint64
	if r != nil {
		size = r.Size
	}
	home, err := n.homeOf(key)
	if err != nil {
		if r != nil {
			_ = n.o.Store.Abort(r)
		}
		return 0, err
	}
	// Stop serving our old copy before the home orders anything.
	n.mu.Lock()
	for n.writing[key] != nil {
		ch := n.writing[key]
		n.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			if r != nil {
				_ = n.o.Store.Abort(r)
			}
			return 0, ctx.Err()
		}
		n.mu.Lock()
	}
	done := make(chan struct{})
	n.writing[key] = done
	n.gen[key]++
	delete(n.local, key)
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.writing, key)
		close(done)
		n.mu.Unlock()
	}()

	var resp writeResp
	for attempt := 0; ; attempt++ {
		// The home records the writer as the new holder: that needs a live session.
		if !n.liveSession(home) {
			if err = n.renew(ctx, home); err != nil {
				break
			}
		}
		err = n.call(ctx, home, pathWrite, writeReq{Key: key, Writer: n.self, Remove: remove, Size: size}, &resp)
		if err != nil || resp.Status != "nosession" || attempt > 0 {
			break
		}
		n.mu.Lock()
		delete(n.sessions, home)
		n.mu.Unlock()
	}
	if err != nil || resp.Status != "ok" {
		if r != nil {
			_ = n.o.Store.Abort(r)
		}
		if err == nil {
			err = fmt.Errorf("home refused the write: %s", resp.Status)
		}
		return 0, fmt.Errorf("%w: writing %q through its home: %v", ErrUnavailable, key, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if remove {
		_ = n.o.Store.Remove(key)
		return 0, nil
	}
	if n.invalidated[key] > resp.Write {
		// A later write already took over (and invalidated us) before this
		// reply came: our value is committed, and superseded. Never serve it.
		_ = n.o.Store.Abort(r)
		_ = n.o.Store.Remove(key) // our old copy, if the store still has it
		return resp.Version, nil
	}
	if home != n.self {
		n.adoptSessionLocked(home, resp.Session)
		if resp.Session != n.sessIDs[home] {
			// Registered under a session that has since been replaced: the
			// home no longer counts this copy.
			_ = n.o.Store.Abort(r)
			_ = n.o.Store.Remove(key)
			return resp.Version, nil
		}
	}
	if _, err := n.o.Store.Commit(r); err != nil {
		return 0, err
	}
	n.local[key] = localCopy{version: resp.Version, home: home, session: resp.Session}
	return resp.Version, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
