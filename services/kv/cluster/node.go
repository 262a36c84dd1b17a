// Package cluster is the owner's KV across hosts: keys are homed by
// rendezvous hashing over the routing table (placement), each home keeps the
// directory of its keys (directory), values move between pools by bulk reads
// over the transport, and holder sessions make every read linearizable: once
// an overwrite or remove has returned, no owner serves the old value. The
// design is in docs/architecture.md ("Keys across hosts: the protocol").
//
// Epoch changes re-home every key (rehome.go): each owner reports its
// copies to their new homes, each old home forwards what it knew, and a new
// home answers only once every owner of the new table has reported.
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

	// epochMu orders epoch switches with operations: every client
	// operation attempt and every home-side request holds it shared, a
	// switch holds it exclusively. Home-side requests only try it, and
	// answer busy while a switch waits, so no chain of owners waiting on
	// each other can form.
	epochMu sync.RWMutex

	mu      sync.Mutex
	member  bool          // this owner is in the routing table
	epochCh chan struct{} // closed and replaced at every epoch switch
	// roundHave: the members whose claims for the current epoch arrived
	// here; roundDone is closed when all did (the directory answers then).
	roundHave map[string]bool
	roundDone chan struct{}
	peers     []Peer
	byName    map[string]Peer
	nodes     []placement.Node
	epoch     uint64
	local     map[string]localCopy
	gen       map[string]uint64 // bumped by every invalidation of a key
	// invalidated is, per key, the highest write id that invalidated it
	// here: a write of ours with a lower id was superseded before we could
	// install it.
	invalidated map[string]uint64
	writing     map[string]chan struct{} // keys with a local write in flight; closed when done
	sessions    map[string]time.Time     // home -> session deadline as this node believes it
	sessIDs     map[string]uint64        // home -> newest session id it gave us
	renewing    map[string]bool          // homes with a background renewal in flight
	conds       map[*kv.Reservation]cond // conditions of reservations made by Reserve
	backupQ     map[string][]directory.Floor
	backupArmed bool

	bmu     sync.Mutex
	backups map[string]directory.Floor // directory backups of keys homed elsewhere
	closed  bool
	conns   map[string]transport.Conn

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
	size    uint64
	home    string
	session uint64 // the session with home it is registered under
	// confirmed: home counts this copy, so it may be served here (while
	// the session is live). Unconfirmed copies are being registered by a
	// pull, or were claimed in the re-homing round of claimEpoch; their
	// bytes may be pinned for others (they are the version named) but
	// this owner does not serve them.
	confirmed  bool
	claimEpoch uint64
	claimGen   uint64 // gen[key] when claimed: an invalidation since voids the claim
	sent       bool   // the claim went to home under session
}

// pinned is a copy held for bulk reads of its bytes, in one range or in
// stripes: it is released once every byte was sent (or when it expires).
type pinned struct {
	h       *kv.Holder
	expires time.Time
	left    uint64 // bytes not yet handed to a read
	sending int    // reads whose bytes the transport is still sending
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
		gen: map[string]uint64{}, invalidated: map[string]uint64{}, writing: map[string]chan struct{}{}, sessions: map[string]time.Time{}, sessIDs: map[string]uint64{}, renewing: map[string]bool{}, conds: map[*kv.Reservation]cond{}, backupQ: map[string][]directory.Floor{}, backups: map[string]directory.Floor{},
		conns: map[string]transport.Conn{}, dir: directory.New(o.SessionTTL, 0), changed: make(chan struct{}),
		epochCh: make(chan struct{}), roundHave: map[string]bool{}, roundDone: make(chan struct{}),
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
	n.mu.Lock()
	n.closed = true // no new background work from here on
	n.mu.Unlock()
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
	return n.connN(ctx, to, 0)
}

// connKey names connection i to a peer: 0 carries control requests and
// small reads, the others are extra lanes for striped bulk reads.
func connKey(to string, i int) string {
	if i == 0 {
		return to
	}
	return fmt.Sprintf("%s#%d", to, i)
}

// connN returns connection i to the named peer, dialling it if needed.
func (n *Node) connN(ctx context.Context, to string, i int) (transport.Conn, error) {
	key := connKey(to, i)
	n.mu.Lock()
	c := n.conns[key]
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
	if old := n.conns[key]; old != nil {
		select {
		case <-old.Done():
		default:
			// Another goroutine dialled first and its connection is live: use it.
			_ = c.Close()
			return old, nil
		}
	}
	n.conns[key] = c
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

// renewAll renews the session with every other member. Each home's
// renewal runs on its own: a dead or slow home never delays the renewals
// with the live ones (a renewal still in flight is not started again).
func (n *Node) renewAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.peers {
		home := p.Name()
		if home == n.self || n.renewing[home] || n.closed {
			continue
		}
		n.renewing[home] = true
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), n.o.SessionTTL/3)
			defer cancel()
			_ = n.renew(ctx, home)
			n.mu.Lock()
			delete(n.renewing, home)
			n.mu.Unlock()
		}()
	}
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
		// A claim not sent yet (session 0) is sent under the new session.
		if lc.home == home && lc.session < id && (lc.claimEpoch == 0 || lc.sent) {
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
