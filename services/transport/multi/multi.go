// Package multi is a transport.Transport over several named transports
// (tcp, quic, websocket, ucx, rdma): a listener per transport, advertised
// together in one endpoint string (see Encode), and a dialer that takes
// the best transport both sides offer in the configured preference order
// (network.transports), falls back to the next one when a dial fails,
// records why, and tries the better one again on a dial after RetryAfter.
//
// The retry happens on a later Dial: a connection that fell back stays on
// its transport until it ends (callers redial a connection that ends), so
// an upgrade never cancels calls in flight.
package multi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Name is the multi transport's name.
const Name = "multi"

// DefaultRetryAfter is how long a transport that failed to dial a peer is
// tried only after the others, before it is preferred again.
const DefaultRetryAfter = 30 * time.Second

// Options configure a multi Transport.
type Options struct {
	// Transports in preference order (best first). Names must differ.
	Transports []transport.Transport
	// RetryAfter: see DefaultRetryAfter.
	RetryAfter time.Duration
	// Stats receives the counters (nil: a Stats of this Transport's own).
	Stats *Stats
	// Log receives fallbacks and listeners that could not start.
	Log *slog.Logger
	// Now is the clock (nil: time.Now); for tests.
	Now func() time.Time
}

// Transport is the multi transport.
type Transport struct {
	opts  Options
	stats *Stats

	mu sync.Mutex
	// failed[endpoint][transport] is when a dial of that transport to that
	// peer last failed.
	failed map[string]map[string]time.Time
}

var _ transport.Transport = (*Transport)(nil)

// New checks o.
func New(o Options) (*Transport, error) {
	if len(o.Transports) == 0 {
		return nil, fmt.Errorf("%w: multi transport without transports", transport.ErrNoTransport)
	}
	seen := map[string]bool{}
	for _, t := range o.Transports {
		if seen[t.Name()] {
			return nil, fmt.Errorf("%w: transport %s listed twice", transport.ErrInvalid, t.Name())
		}
		seen[t.Name()] = true
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	st := o.Stats
	if st == nil {
		st = NewStats()
	}
	return &Transport{opts: o, stats: st, failed: map[string]map[string]time.Time{}}, nil
}

// Name implements transport.Transport.
func (t *Transport) Name() string { return Name }

// Names lists the wrapped transports in preference order.
func (t *Transport) Names() []string {
	out := make([]string, len(t.opts.Transports))
	for i, tr := range t.opts.Transports {
		out[i] = tr.Name()
	}
	return out
}

// Stats returns the counters this Transport feeds.
func (t *Transport) Stats() *Stats { return t.stats }

// Listener serves every transport that could listen.
type Listener struct {
	lns  []transport.Listener
	eps  Endpoints
	addr string
}

// Addr is the Encode string of Endpoints.
func (l *Listener) Addr() string { return l.addr }

// Endpoints maps each listening transport to its address.
func (l *Listener) Endpoints() Endpoints {
	out := Endpoints{}
	for k, v := range l.eps {
		out[k] = v
	}
	return out
}

// Close closes every listener.
func (l *Listener) Close() error {
	var errs []error
	for _, ln := range l.lns {
		errs = append(errs, ln.Close())
	}
	return errors.Join(errs...)
}

// Listen starts a listener per transport on addr's host. The port of addr
// goes to tcp (to the first transport when tcp is not listed), whose
// failure to listen fails Listen, as a single-transport member would; the
// others take ports the kernel picks, and one that cannot listen here is
// logged and left out of the advertised endpoints.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %w; use host:port", transport.ErrInvalid, addr, err)
	}
	primary := t.opts.Transports[0].Name()
	for _, tr := range t.opts.Transports {
		if tr.Name() == DefaultName {
			primary = DefaultName
		}
	}
	l := &Listener{eps: Endpoints{}}
	for _, tr := range t.opts.Transports {
		la := net.JoinHostPort(host, "0")
		if tr.Name() == primary {
			la = addr
		}
		ln, err := tr.Listen(ctx, la, local, &countingHandler{h: h, c: t.stats.counters(tr.Name())}, verify)
		if err != nil {
			if tr.Name() == primary {
				_ = l.Close()
				return nil, err
			}
			t.opts.Log.Warn("transport cannot listen here; not advertised", "transport", tr.Name(), "addr", la, "err", err)
			continue
		}
		l.lns = append(l.lns, ln)
		l.eps[tr.Name()] = ln.Addr()
	}
	if l.addr, err = Encode(l.eps); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

// refusal reports whether err is the peer (or verify) refusing the member,
// which another transport would not change.
func refusal(err error) bool {
	return errors.Is(err, transport.ErrWrongCluster) || errors.Is(err, transport.ErrStaleMember) ||
		errors.Is(err, transport.ErrVersionMismatch) || errors.Is(err, transport.ErrRefused)
}

// Dial connects to an endpoint string (Encode's form, or a bare host:port
// for tcp) over the best transport both sides offer. Transports that
// failed to reach this endpoint less than RetryAfter ago are tried last.
// A handshake refusal is returned at once: another transport would be
// refused alike.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	eps, err := Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrInvalid, err)
	}
	now := t.opts.Now()
	var fresh, backedOff []transport.Transport
	t.mu.Lock()
	for _, tr := range t.opts.Transports {
		if _, ok := eps[tr.Name()]; !ok {
			continue
		}
		if at, ok := t.failed[addr][tr.Name()]; ok && now.Sub(at) < t.opts.RetryAfter {
			backedOff = append(backedOff, tr)
		} else {
			fresh = append(fresh, tr)
		}
	}
	t.mu.Unlock()
	if len(fresh)+len(backedOff) == 0 {
		return nil, fmt.Errorf("%w: %s offers %s, this member %s; list a common one in network.transports",
			transport.ErrUnreachable, addr, strings.Join(Names(addr), ","), strings.Join(t.Names(), ","))
	}
	order := append(fresh, backedOff...)
	// wanted is the best transport both sides offer, backed off or not.
	wanted := order[0].Name()
	for _, tr := range backedOff {
		if t.rank(tr.Name()) < t.rank(wanted) {
			wanted = tr.Name()
		}
	}
	var reasons []string
	var errs []error
	for _, tr := range backedOff {
		if t.rank(tr.Name()) < t.rank(order[0].Name()) {
			reasons = append(reasons, fmt.Sprintf("%s: failed less than %s ago, retried after", tr.Name(), t.opts.RetryAfter))
		}
	}
	for _, tr := range order {
		name := tr.Name()
		c, err := tr.Dial(ctx, eps[name], local, verify)
		if err == nil {
			t.mu.Lock()
			delete(t.failed[addr], name)
			t.mu.Unlock()
			if name != wanted {
				f := Fallback{Endpoint: addr, Wanted: wanted, Used: name, Reason: strings.Join(reasons, "; "), At: now}
				t.stats.setFallback(f)
				t.opts.Log.Info("transport fallback", "peer", c.Peer().InstanceKey, "wanted", wanted, "using", name, "reason", f.Reason)
			} else {
				t.stats.clearFallback(addr)
			}
			return t.track(name, c), nil
		}
		t.stats.counters(name).errors.Add(1)
		if refusal(err) || ctx.Err() != nil {
			return nil, err
		}
		t.mu.Lock()
		if t.failed[addr] == nil {
			t.failed[addr] = map[string]time.Time{}
		}
		t.failed[addr][name] = now
		t.mu.Unlock()
		reasons = append(reasons, name+": "+err.Error())
		errs = append(errs, err)
	}
	t.stats.setFallback(Fallback{Endpoint: addr, Wanted: wanted, Reason: strings.Join(reasons, "; "), At: now})
	return nil, fmt.Errorf("dial %s: every common transport failed (%s): %w", addr, strings.Join(reasons, "; "), errors.Join(errs...))
}

func (t *Transport) rank(name string) int {
	for i, tr := range t.opts.Transports {
		if tr.Name() == name {
			return i
		}
	}
	return len(t.opts.Transports)
}

func (t *Transport) track(name string, c transport.Conn) transport.Conn {
	peer := c.Peer().InstanceKey
	t.stats.peerDelta(peer, name, 1)
	go func() {
		<-c.Done()
		t.stats.peerDelta(peer, name, -1)
	}()
	return &Conn{Conn: c, name: name, c: t.stats.counters(name)}
}

// Conn is a connection over one of the wrapped transports.
type Conn struct {
	transport.Conn
	name string
	c    *counters
}

// Transport names the transport the connection uses.
func (c *Conn) Transport() string { return c.name }

// OneSided implements transport.OneSided for the wrapped connection.
func (c *Conn) OneSided() bool { return transport.IsOneSided(c.Conn) }

// countable reports whether err is the connection's failure rather than
// the handler's or the caller's.
func countable(err error) bool {
	return err != nil && !errors.Is(err, transport.ErrRemote) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, transport.ErrInvalid) && !errors.Is(err, transport.ErrFrameTooLarge)
}

// Request implements transport.Conn.
func (c *Conn) Request(ctx context.Context, path string, payload []byte) ([]byte, error) {
	resp, err := c.Conn.Request(ctx, path, payload)
	if err == nil || errors.Is(err, transport.ErrRemote) {
		c.c.sent.Add(uint64(len(path) + len(payload)))
		c.c.received.Add(uint64(len(resp)))
	}
	if countable(err) {
		c.c.errors.Add(1)
	}
	return resp, err
}

// Send implements transport.Conn.
func (c *Conn) Send(ctx context.Context, path string, payload []byte) error {
	err := c.Conn.Send(ctx, path, payload)
	if err == nil {
		c.c.sent.Add(uint64(len(path) + len(payload)))
	} else if countable(err) {
		c.c.errors.Add(1)
	}
	return err
}

// ReadRemote implements transport.Conn.
func (c *Conn) ReadRemote(ctx context.Context, ref transport.RemoteRef, dst []byte) error {
	err := c.Conn.ReadRemote(ctx, ref, dst)
	if err == nil {
		c.c.received.Add(uint64(len(dst)))
	} else if countable(err) {
		c.c.errors.Add(1)
	}
	return err
}

// countingHandler counts an accepted connection's bytes.
type countingHandler struct {
	h transport.Handler
	c *counters
}

func (h *countingHandler) HandleRequest(ctx context.Context, peer transport.Identity, path string, payload []byte) ([]byte, error) {
	h.c.received.Add(uint64(len(path) + len(payload)))
	resp, err := h.h.HandleRequest(ctx, peer, path, payload)
	h.c.sent.Add(uint64(len(resp)))
	return resp, err
}

func (h *countingHandler) ServeRead(ctx context.Context, peer transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
	src, release, err := h.h.ServeRead(ctx, peer, ref)
	if err == nil {
		h.c.sent.Add(uint64(len(src)))
	}
	return src, release, err
}

// ServesInline keeps the wrapped handler's inline paths inline.
func (h *countingHandler) ServesInline(path string) bool {
	ih, ok := h.h.(transport.InlineHandler)
	return ok && ih.ServesInline(path)
}
