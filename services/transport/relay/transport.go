package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Defaults of the relaying transport.
const (
	// DefaultDirectTimeout bounds the direct connect tried before a
	// relayed one: a firewall that drops packets would otherwise hold the
	// dial for the whole connect timeout.
	DefaultDirectTimeout = time.Second
	// DefaultRetryDirectAfter is how long an address that needed relays is
	// dialed through relays first, before the direct path is tried again.
	DefaultRetryDirectAfter = 30 * time.Second
)

// StreamDialer is a transport that runs its protocol over a TCP
// connection the caller opened (tcp.Transport does).
type StreamDialer interface {
	transport.Transport
	DialConn(ctx context.Context, nc net.Conn, local transport.Identity, verify transport.Verify) (transport.Conn, error)
}

// Router finds the relays to pass to reach the member listening at addr.
type Router interface {
	Route(ctx context.Context, addr string) (Route, error)
}

// TransportOptions configure a relaying Transport.
type TransportOptions struct {
	// Inner runs the protocol over relayed streams (and, without Direct,
	// over direct ones); Listen goes to it unchanged.
	Inner StreamDialer
	// Direct, when set, makes direct dials (and Listen) with the dialed
	// address as is, e.g. a transport over several kinds that picks one;
	// Inner then only runs the streams that came through relays.
	Direct transport.Transport
	// TargetAddr maps a dialed address to the TCP address the last relay
	// connects to (Inner's address in an address of several kinds).
	// Default: the address as is.
	TargetAddr func(addr string) (string, error)
	// Router finds paths when the direct one fails; nil dials directly only.
	Router Router
	// Self is this member's id, the first entry of every path's trail.
	Self string
	// Dial opens TCP connections (direct, and to the first relay).
	// Default NetDial.
	Dial DialFunc
	// DirectTimeout: default DefaultDirectTimeout.
	DirectTimeout time.Duration
	// RetryDirectAfter: default DefaultRetryDirectAfter.
	RetryDirectAfter time.Duration
	// HopLimit: default DefaultHopLimit.
	HopLimit uint8
	// Log: default slog.Default().
	Log *slog.Logger
}

// Transport is a transport.Transport that dials directly when it can and
// through relays when it cannot. The protocol runs end to end either way,
// so the peer's identity is verified the same.
type Transport struct {
	o TransportOptions

	mu sync.Mutex
	// relayedAt: addresses whose direct dial failed, and when.
	relayedAt map[string]time.Time
}

var _ transport.Transport = (*Transport)(nil)

// NewTransport returns a relaying transport around o.Inner.
func NewTransport(o TransportOptions) *Transport {
	if o.Dial == nil {
		o.Dial = NetDial
	}
	if o.DirectTimeout <= 0 {
		o.DirectTimeout = DefaultDirectTimeout
	}
	if o.RetryDirectAfter <= 0 {
		o.RetryDirectAfter = DefaultRetryDirectAfter
	}
	if o.HopLimit == 0 {
		o.HopLimit = DefaultHopLimit
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Transport{o: o, relayedAt: make(map[string]time.Time)}
}

// Name implements transport.Transport: the inner transport's name, as the
// bytes on the wire are its own.
func (t *Transport) Name() string {
	if t.o.Direct != nil {
		return t.o.Direct.Name()
	}
	return t.o.Inner.Name()
}

// Listen implements transport.Transport. Relayed connections arrive as
// ordinary ones, from the last relay's address.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	if t.o.Direct != nil {
		return t.o.Direct.Listen(ctx, addr, local, h, verify)
	}
	return t.o.Inner.Listen(ctx, addr, local, h, verify)
}

// Dial implements transport.Transport: directly within DirectTimeout,
// then through the Router's relays. A refusal in the handshake (wrong
// cluster, stale member) is final: it came from the member at addr.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	var directErr error
	if t.o.Direct != nil && (t.o.Router == nil || !t.recentlyRelayed(addr)) {
		dctx, cancel := context.WithTimeout(ctx, t.o.DirectTimeout)
		c, err := t.o.Direct.Dial(dctx, addr, local, verify)
		cancel()
		switch {
		case err == nil:
			t.forget(addr)
			return c, nil
		case ctx.Err() != nil:
			return nil, ctxErr(ctx, addr)
		case t.o.Router == nil || errors.Is(err, transport.ErrWrongCluster) || errors.Is(err, transport.ErrStaleMember) || errors.Is(err, transport.ErrRefused):
			return nil, err // the member at addr answered: relays would not change that
		}
		directErr = err
	} else if t.o.Router == nil || !t.recentlyRelayed(addr) {
		dctx, cancel := context.WithTimeout(ctx, t.o.DirectTimeout)
		nc, err := t.o.Dial(dctx, addr)
		cancel()
		if err == nil {
			t.forget(addr)
			return t.o.Inner.DialConn(ctx, nc, local, verify)
		}
		if ctx.Err() != nil {
			return nil, ctxErr(ctx, addr)
		}
		if t.o.Router == nil {
			return nil, fmt.Errorf("%w: %w; is a member listening there? check the address it advertises", transport.ErrUnreachable, err)
		}
		directErr = err
	}
	route, err := t.o.Router.Route(ctx, addr)
	if err != nil {
		return nil, t.unreachable(addr, directErr, err)
	}
	if t.o.TargetAddr != nil {
		if route.Target.Addr, err = t.o.TargetAddr(addr); err != nil {
			return nil, t.unreachable(addr, directErr, err)
		}
	}
	nc, err := DialRoute(ctx, t.o.Dial, t.o.Self, route, t.o.HopLimit)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr(ctx, addr)
		}
		return nil, t.unreachable(addr, directErr, err)
	}
	if directErr != nil {
		t.mu.Lock()
		t.relayedAt[addr] = time.Now()
		t.mu.Unlock()
	}
	t.o.Log.Debug("relay: dialing through relays", "addr", addr, "relays", len(route.Relays), "direct_err", directErr)
	return t.o.Inner.DialConn(ctx, nc, local, verify)
}

func (t *Transport) unreachable(addr string, direct, relayed error) error {
	if direct == nil {
		return fmt.Errorf("%w: %s through relays: %w", transport.ErrUnreachable, addr, relayed)
	}
	return fmt.Errorf("%w: %s directly: %v; through relays: %w", transport.ErrUnreachable, addr, direct, relayed)
}

func (t *Transport) recentlyRelayed(addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.relayedAt[addr]
	if ok && time.Since(at) > t.o.RetryDirectAfter {
		delete(t.relayedAt, addr)
		return false
	}
	return ok
}

func (t *Transport) forget(addr string) {
	t.mu.Lock()
	delete(t.relayedAt, addr)
	t.mu.Unlock()
}

func ctxErr(ctx context.Context, addr string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: dial %s: %w", transport.ErrTimeout, addr, ctx.Err())
	}
	return fmt.Errorf("dial %s: %w", addr, ctx.Err())
}

// Directory is what a GraphRouter knows of the members.
type Directory interface {
	// MemberAt is the member that advertises addr as one of its endpoints.
	MemberAt(addr string) (id string, ok bool)
	// RelayAddrs are a member's relay addresses in its order of
	// preference (none if it relays nothing).
	RelayAddrs(id string) []string
	// ReachedAt is the relay address of member to that member from's last
	// probe connected to; "" if unknown (then to's first address is used).
	ReachedAt(from, to string) string
	// Graph is the current reachability graph.
	Graph() Graph
}

// GraphRouter routes over the shortest path of a Directory's graph.
type GraphRouter struct {
	Self string
	Dir  Directory
	// MaxHops bounds a path's edges; 0 means DefaultHopLimit.
	MaxHops int
}

// Route implements Router. For a path self, r1 ... rk, target the relays
// are r1 ... rk and rk connects to addr itself; a path self, target (self
// reaches the target's relay but not addr) goes through the target's own
// relay. Each relay is named at the address the member before it on the
// path reached in its probe, so every hop dials an address known to work
// from there; the first relay's other addresses are the dialer's fallback.
func (r *GraphRouter) Route(_ context.Context, addr string) (Route, error) {
	target, ok := r.Dir.MemberAt(addr)
	if !ok {
		return Route{}, fmt.Errorf("%w: no member advertises %s", ErrNoRoute, addr)
	}
	max := r.MaxHops
	if max <= 0 {
		max = DefaultHopLimit
	}
	path, err := ShortestPath(r.Dir.Graph(), r.Self, target, max)
	if err != nil {
		return Route{}, err
	}
	ids := path[1 : len(path)-1]
	if len(ids) == 0 {
		ids = path[len(path)-1:]
	}
	route := Route{Target: Hop{ID: target, Addr: addr}}
	for i, id := range ids {
		addrs := candidates([]string{r.Dir.ReachedAt(path[i], id)}, r.Dir.RelayAddrs(id))
		if len(addrs) == 0 {
			return Route{}, fmt.Errorf("%w: member %s on the path to %s advertises no relay endpoint", ErrNoRoute, id, target)
		}
		route.Relays = append(route.Relays, Hop{ID: id, Addr: addrs[0]})
		if i == 0 {
			route.FirstAlternates = addrs[1:]
		}
	}
	return route, nil
}

// StaticDirectory is a Directory of fixed maps, for tests and for callers
// that rebuild it on every change.
type StaticDirectory struct {
	// Endpoints maps an address to the member advertising it.
	Endpoints map[string]string
	// Relays maps a member to its relay addresses.
	Relays map[string][]string
	// ReachedAddr maps a member to the relay address of each member it
	// reached that its probe connected to.
	ReachedAddr map[string]map[string]string
	// Reach is the reachability graph.
	Reach Graph
}

// MemberAt implements Directory.
func (d *StaticDirectory) MemberAt(addr string) (string, bool) {
	id, ok := d.Endpoints[addr]
	return id, ok
}

// RelayAddrs implements Directory.
func (d *StaticDirectory) RelayAddrs(id string) []string { return d.Relays[id] }

// ReachedAt implements Directory.
func (d *StaticDirectory) ReachedAt(from, to string) string { return d.ReachedAddr[from][to] }

// Graph implements Directory.
func (d *StaticDirectory) Graph() Graph { return d.Reach }
