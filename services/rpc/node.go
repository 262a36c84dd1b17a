// Package rpc is node-to-node RPC between any members of a cluster
// (owners, externals, the master, on any host): a Node registers handlers
// under paths ("/svc/method") and calls the handlers of other nodes by
// node id, over a transport.Transport (tcp today).
//
// A call's payload and reply are bytes, or a flat dict (kv.Dict) with
// CallDict and DictHandler. Its timeout is its context's deadline, of any
// length: the deadline travels to the handler, whose context ends with
// it, and the caller gets ErrTimeout as soon as it passes. Failures are
// told apart with errors.Is against the package's sentinels
// (ErrUnknownNode, ErrUnknownPath, ErrHandler, ErrHandlerPanic,
// ErrTimeout, ErrPeerGone, ErrStaleNode, ...); a handler gives its caller
// a numeric application code with Errorf.
//
// A Resolver maps node ids to an address and the incarnation expected
// there (StaticResolver; MetaResolver from the cluster's member records).
// Each connection's handshake checks that incarnation, so a node that
// restarted is never called under its old identity (ErrStaleNode).
//
// docs/rpc.md describes the design, the errors and the metrics.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// Paths and limits.
const (
	// ReservedPrefix is where the built-in handlers live; Register refuses
	// paths under it.
	ReservedPrefix = "/fluxon/"
	// PathPing returns its payload: a liveness and round-trip probe.
	PathPing = "/fluxon/ping"
	// PathInfo returns the node's Info as JSON.
	PathInfo = "/fluxon/info"
	// MaxPathLen bounds a path (the transport's limit).
	MaxPathLen = transport.MaxPathLen
	// DefaultDialTimeout bounds connecting to a peer (TCP connect and the
	// handshake), independently of the call that triggered it: calls
	// waiting for the connection give up at their own deadline, the dial
	// goes on for the next ones.
	DefaultDialTimeout = 5 * time.Second
)

// Handler serves one path. from is the calling member as its handshake
// presented it. ctx ends when the caller's deadline passes, the caller
// cancels or gives up, the connection ends or the Node closes. The
// payload is the handler's to keep; the returned reply belongs to the
// transport from then on (it may still be writing it after the handler
// returned), so the handler must not modify it afterwards.
//
// A returned error reaches the caller as ErrHandler with its message
// (return an *Error, e.g. from Errorf, to give it a code); a panic is
// recovered and reaches the caller as ErrHandlerPanic with the panic's
// value, and the Node keeps serving.
type Handler func(ctx context.Context, from transport.Identity, payload []byte) ([]byte, error)

// DictHandler adapts a handler of flat dicts: the request is decoded
// (an empty payload is an empty dict), the reply encoded. A request that
// is not a dict fails with an *Error saying so.
func DictHandler(f func(ctx context.Context, from transport.Identity, req kv.Dict) (kv.Dict, error)) Handler {
	return func(ctx context.Context, from transport.Identity, payload []byte) ([]byte, error) {
		req, err := decodeDict(payload)
		if err != nil {
			return nil, Errorf(0, "the request is not a flat dict (docs/values.md): %v", err)
		}
		reply, err := f(ctx, from, req)
		if err != nil {
			return nil, err
		}
		b, err := kv.EncodeDict(reply)
		if err != nil {
			return nil, fmt.Errorf("encoding the reply dict: %w", err)
		}
		return b, nil
	}
}

func decodeDict(b []byte) (kv.Dict, error) {
	if len(b) == 0 {
		return nil, nil
	}
	return kv.DecodeDict(b)
}

// Options configure a Node.
type Options struct {
	// Local is this member's identity, presented in every handshake.
	Local transport.Identity
	// Transport makes the connections (required).
	Transport transport.Transport
	// ListenAddr is where Start listens ("127.0.0.1:0" picks a port).
	ListenAddr string
	// Resolver maps node ids for Call; nil: every call fails with
	// ErrUnknownNode (a node that only serves).
	Resolver Resolver
	// Log: default slog.Default().
	Log *slog.Logger
	// Registerer receives the metrics; nil: none.
	Registerer prometheus.Registerer
	// DialTimeout: default DefaultDialTimeout.
	DialTimeout time.Duration
}

// Node serves registered handlers to other members and calls theirs. All
// methods are safe for concurrent use.
//
// Locks: mu (the connection cache), regMu (Register, Unregister) and the
// resolver's own are never held together: Resolve is called without mu,
// and a resolver calls its Watch callbacks (which take mu) without its
// lock.
type Node struct {
	local       transport.Identity
	tr          transport.Transport
	listenAddr  string
	res         Resolver
	log         *slog.Logger
	m           *metrics
	reg         prometheus.Registerer
	dialTimeout time.Duration

	// routes is replaced whole (copy on write) by Register and Unregister,
	// so serving a request takes no lock.
	routes atomic.Pointer[map[string]*route]
	regMu  sync.Mutex

	ctx       context.Context
	cancel    context.CancelFunc
	stopWatch func()
	wg        sync.WaitGroup

	mu     sync.RWMutex
	peers  map[string]*peer
	ln     transport.Listener
	addr   string
	closed bool
}

type route struct {
	path string
	h    Handler
	c    pathCounters
}

// New returns a Node; Start makes it serve, Call works without Start.
func New(o Options) (*Node, error) {
	if o.Transport == nil {
		return nil, errors.New("rpc: Options.Transport is required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("rpc: registering metrics: %w", err)
	}
	n := &Node{
		local: o.Local, tr: o.Transport, listenAddr: o.ListenAddr, res: o.Resolver,
		log: o.Log.With("component", "rpc"), m: m, reg: o.Registerer, dialTimeout: o.DialTimeout,
		peers: make(map[string]*peer),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.routes.Store(&map[string]*route{})
	n.add(PathPing, n.ping)
	n.add(PathInfo, n.info)
	if w, ok := o.Resolver.(Watcher); ok {
		n.stopWatch = w.Watch(n.resolverChanged)
	}
	return n, nil
}

// Start listens on Options.ListenAddr with the transport and serves the
// registered handlers (including those registered later). It returns the
// address to advertise (meta.Member.Endpoints["rpc"]).
func (n *Node) Start(ctx context.Context) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return "", ErrClosed
	case n.ln != nil:
		return "", fmt.Errorf("rpc: node %s already listens on %s", n.local.Incarnation(), n.addr)
	}
	ln, err := n.tr.Listen(ctx, n.listenAddr, n.local, transport.HandlerFuncs{Request: n.serve}, n.verifyDialer)
	if err != nil {
		return "", fmt.Errorf("rpc: listening on %s: %w", n.listenAddr, err)
	}
	n.ln, n.addr = ln, ln.Addr()
	n.log.Info("rpc: serving", "addr", n.addr, "transport", n.tr.Name(), "incarnation", n.local.Incarnation())
	return n.addr, nil
}

// Addr is the address Start listens on ("" before Start).
func (n *Node) Addr() string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.addr
}

// Local is the node's identity.
func (n *Node) Local() transport.Identity { return n.local }

// Close stops serving (running handlers' contexts are cancelled), fails
// calls in flight with ErrClosed and closes every connection.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	for _, p := range n.peers {
		n.dropLocked(p, ErrClosed)
	}
	ln := n.ln
	n.mu.Unlock()
	if n.stopWatch != nil {
		n.stopWatch()
	}
	n.cancel()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	n.wg.Wait()
	if n.reg != nil {
		for _, c := range n.m.regs {
			n.reg.Unregister(c)
		}
	}
	return err
}

// checkPath is what every path must be.
func checkPath(path string) error {
	switch {
	case path == "" || path[0] != '/':
		return fmt.Errorf("%w %q: paths start with '/', like /service/method", ErrInvalidPath, path)
	case len(path) > MaxPathLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidPath, len(path), MaxPathLen)
	}
	return nil
}

// Register serves h under path ("/svc/method"). A path already registered
// (ErrDuplicatePath), one under ReservedPrefix or malformed
// (ErrInvalidPath) is refused.
func (n *Node) Register(path string, h Handler) error {
	if err := checkPath(path); err != nil {
		return err
	}
	switch {
	case path == "/":
		return fmt.Errorf("%w %q: name a method, like /service/method", ErrInvalidPath, path)
	case strings.HasPrefix(path, ReservedPrefix):
		return fmt.Errorf("%w %q: paths under %s are the built-in handlers'; choose another prefix", ErrInvalidPath, path, ReservedPrefix)
	}
	if i := strings.IndexFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f }); i >= 0 {
		return fmt.Errorf("%w %q: a space or control character at byte %d", ErrInvalidPath, path, i)
	}
	if h == nil {
		return fmt.Errorf("rpc: Register(%q) with a nil handler", path)
	}
	return n.add(path, h)
}

func (n *Node) add(path string, h Handler) error {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	old := *n.routes.Load()
	if _, ok := old[path]; ok {
		return fmt.Errorf("%w: %q on node %s; Unregister it first", ErrDuplicatePath, path, n.local.Incarnation())
	}
	next := make(map[string]*route, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[path] = &route{path: path, h: h, c: n.m.forPath(path)}
	n.routes.Store(&next)
	return nil
}

// Unregister stops serving path to new requests; running ones finish.
func (n *Node) Unregister(path string) error {
	if strings.HasPrefix(path, ReservedPrefix) {
		return fmt.Errorf("%w %q: the built-in handlers cannot be unregistered", ErrInvalidPath, path)
	}
	n.regMu.Lock()
	defer n.regMu.Unlock()
	old := *n.routes.Load()
	if _, ok := old[path]; !ok {
		return fmt.Errorf("%w: %q is not registered on node %s", ErrUnknownPath, path, n.local.Incarnation())
	}
	next := make(map[string]*route, len(old))
	for k, v := range old {
		if k != path {
			next[k] = v
		}
	}
	n.routes.Store(&next)
	return nil
}

// Paths lists the registered paths, built-ins included, sorted.
func (n *Node) Paths() []string {
	routes := *n.routes.Load()
	out := make([]string, 0, len(routes))
	for p := range routes {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// serve is the transport handler: it finds the path's handler and runs it.
// Every error it returns is a *transport.RemoteError whose code the
// caller's side reads back (callError): CodeNotFound only for an unknown
// path, CodePanic for a panic, CodeHandler for a handler's error.
func (n *Node) serve(ctx context.Context, from transport.Identity, path string, payload []byte) (resp []byte, err error) {
	r := (*n.routes.Load())[path]
	if r == nil {
		n.m.handled.WithLabelValues("", handledUnknown).Inc()
		return nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: fmt.Sprintf(
			"no handler registered there (on %s); %s lists its paths", n.local.Incarnation(), PathInfo)}
	}
	n.m.inflight.Inc()
	defer n.m.inflight.Dec()
	defer func() {
		if p := recover(); p != nil {
			r.c.panicked.Inc()
			n.log.Error("rpc: handler panicked; the node keeps serving", "path", path, "from", from.Incarnation(), "panic", p, "stack", string(debug.Stack()))
			resp, err = nil, &transport.RemoteError{Code: transport.CodePanic, Message: fmt.Sprintf(
				"panic: %v (on %s; its log has the stack)", p, n.local.Incarnation())}
		}
	}()
	resp, err = r.h(ctx, from, payload)
	if err != nil {
		r.c.err.Inc()
		return nil, encodeHandlerError(err)
	}
	r.c.ok.Inc()
	return resp, nil
}

// verifyDialer accepts members of this cluster, except an incarnation
// older than the one the resolver knows for its instance key.
func (n *Node) verifyDialer(peer transport.Identity) error {
	if peer.ClusterName != n.local.ClusterName {
		return fmt.Errorf("%w: %s belongs to cluster %q, this node (%s) to %q; check cluster_name in both configs",
			transport.ErrWrongCluster, peer.Incarnation(), peer.ClusterName, n.local.Incarnation(), n.local.ClusterName)
	}
	if il, ok := n.res.(InstanceLookup); ok {
		if known, ok := il.LookupInstance(peer.InstanceKey); ok && known.StartTime.After(peer.StartTime) {
			return fmt.Errorf("%w: %s is an old incarnation: the cluster knows %s, started later; that process was replaced and should exit",
				transport.ErrStaleMember, peer.Incarnation(), known.Incarnation())
		}
	}
	return nil
}

// verifyTarget is the dialer's check of the member that answers at a
// node's address: the incarnation the resolver gave, nothing else.
func verifyTarget(local transport.Identity, nodeID string, want transport.Identity) transport.Verify {
	return func(peer transport.Identity) error {
		switch {
		case peer.ClusterName != local.ClusterName:
			return fmt.Errorf("%w: node %q's address is served by %s of cluster %q, this node is in %q; check cluster_name in both configs",
				transport.ErrWrongCluster, nodeID, peer.Incarnation(), peer.ClusterName, local.ClusterName)
		case want.InstanceKey != "" && peer.InstanceKey != want.InstanceKey:
			return fmt.Errorf("%w: node %q's address is served by %s, not instance %q: the resolver's address is out of date; retry once it has caught up",
				transport.ErrStaleMember, nodeID, peer.Incarnation(), want.InstanceKey)
		case !want.StartTime.IsZero() && !peer.StartTime.Equal(want.StartTime):
			return fmt.Errorf("%w: node %q answers as incarnation %s, the resolver knows %s: it restarted; retry once the resolver has caught up",
				transport.ErrStaleMember, nodeID, peer.Incarnation(), want.Incarnation())
		}
		return nil
	}
}

// Call sends payload to the handler for path on node nodeID and returns
// its reply. The timeout is ctx's deadline (none: the call waits until
// the reply, a failure of the connection or ctx's cancellation). The
// payload belongs to the transport from the call on, as in
// transport.Conn.Request: do not modify it, even after Call returned.
//
// Errors match one of ErrUnknownNode, ErrUnknownPath, ErrHandler (with
// the handler's *Error), ErrHandlerPanic, ErrTimeout (and
// context.DeadlineExceeded), context.Canceled, ErrPeerGone, ErrStaleNode,
// ErrUnreachable, ErrRefused, ErrTooLarge, ErrInvalidPath or ErrClosed.
// A call is never retried once sent, so a handler runs at most once per
// call; a cached connection found dead before sending is re-dialled once.
func (n *Node) Call(ctx context.Context, nodeID, path string, payload []byte) ([]byte, error) {
	start := time.Now()
	resp, err := n.call(ctx, nodeID, path, payload)
	n.m.calls[outcomeOf(err)].Inc()
	n.m.latency.Observe(time.Since(start).Seconds())
	return resp, err
}

func (n *Node) call(ctx context.Context, nodeID, path string, payload []byte) ([]byte, error) {
	if err := checkPath(path); err != nil {
		return nil, fmt.Errorf("rpc: call on node %q: %w", nodeID, err)
	}
	if n.res == nil {
		return nil, fmt.Errorf("%w: %s on node %q: this node has no resolver (Options.Resolver)", ErrUnknownNode, path, nodeID)
	}
	addr, want, err := n.res.Resolve(nodeID)
	if err != nil {
		if errors.Is(err, ErrUnknownNode) || errors.Is(err, ErrPeerGone) {
			return nil, fmt.Errorf("rpc: %s on node %q: %w", path, nodeID, err)
		}
		return nil, fmt.Errorf("%w: %s on node %q: resolving: %w", ErrUnknownNode, path, nodeID, err)
	}
	p, err := n.peer(ctx, nodeID, path, addr, want)
	if err != nil {
		return nil, err
	}
	resp, err := p.conn.Request(ctx, path, payload)
	if err != nil {
		return nil, callError(ctx, nodeID, path, err, p.gone())
	}
	return resp, nil
}

// CallDict calls with a dict payload and decodes the reply as a dict (an
// empty reply is an empty dict). A reply that does not decode gives an
// error matching kv.ErrBadValue.
func (n *Node) CallDict(ctx context.Context, nodeID, path string, req kv.Dict) (kv.Dict, error) {
	b, err := kv.EncodeDict(req)
	if err != nil {
		return nil, fmt.Errorf("rpc: %s on node %q: encoding the request dict: %w", path, nodeID, err)
	}
	resp, err := n.Call(ctx, nodeID, path, b)
	if err != nil {
		return nil, err
	}
	d, err := decodeDict(resp)
	if err != nil {
		return nil, fmt.Errorf("rpc: %s on node %q: the reply is not a flat dict: %w", path, nodeID, err)
	}
	return d, nil
}

// Info is what PathInfo returns (as JSON).
type Info struct {
	InstanceKey string    `json:"instance_key"`
	ClusterName string    `json:"cluster_name"`
	Role        string    `json:"role"`
	StartTime   time.Time `json:"start_time"`
	Incarnation string    `json:"incarnation"`
	Transport   string    `json:"transport"`
	Addr        string    `json:"addr,omitempty"`
	Paths       []string  `json:"paths"`
}

func (n *Node) ping(_ context.Context, _ transport.Identity, payload []byte) ([]byte, error) {
	return payload, nil
}

func (n *Node) info(context.Context, transport.Identity, []byte) ([]byte, error) {
	return json.Marshal(Info{
		InstanceKey: n.local.InstanceKey, ClusterName: n.local.ClusterName, Role: n.local.Role,
		StartTime: n.local.StartTime, Incarnation: n.local.Incarnation(), Transport: n.tr.Name(),
		Addr: n.Addr(), Paths: n.Paths(),
	})
}
