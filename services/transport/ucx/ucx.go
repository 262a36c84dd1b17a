// Package ucx is the UCX transport: messages run the framed protocol over a
// TCP control connection (exactly as the tcp transport does), and bulk
// reads are one-sided UCX gets straight into the caller's buffer.
//
// A ReadRemote asks the owner, over the control connection, to lease the
// range: the owner calls its Handler's ServeRead, maps the returned bytes
// with UCX (pinning them) and answers with their address and packed rkey.
// The reader then gets the bytes with ucp_get_nbx, without the owner's CPU
// where the transport has RDMA (rc, dc, or cma/knem on one host), and
// releases the lease with a one-way message; the owner unmaps and calls
// the ServeRead release. dst is not mapped: it is Go memory that UCX uses
// only during the get call (UCX registers it, or over tcp receives into it
// from the socket, as its transport needs); no bounce buffer is used.
//
// Why control over TCP rather than UCX active messages or a UCX stream:
// the framed engine (requests, cancel, keepalive, handshake) needs a byte
// stream with deadlines, which a TCP socket gives for free; UCX itself
// connects over sockets for wireup. Only bulk bytes benefit from UCX.
//
// Configuration: UCX picks its transports from the environment, read when
// the first connection or listener of a process opens: UCX_TLS=tcp,
// UCX_TLS=sm,self (one host), or unset (all UCX finds: RDMA NICs, sm,
// tcp). UCX_NET_DEVICES picks NICs. Paths starting with "_ucx/" are this
// transport's own and never reach the Handler.
//
// The transport needs the "ucx" build tag and libucx (cgo/ucx); without
// them New returns ucx.ErrNotSupported from cgo/ucx.
package ucx

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/core"
	cucx "github.com/fluxon-dev/fluxon/cgo/ucx"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// Name is the transport's name in configs.
const Name = "ucx"

// The transport's own paths on the control connection.
const (
	pathPrefix  = "_ucx/"
	pathAddress = pathPrefix + "address"
	pathLease   = pathPrefix + "lease"
	pathRelease = pathPrefix + "release"
)

// DefaultLeaseTTL bounds how long an owner keeps a range mapped for a
// reader that never released it (it died, or its connection did). A read
// must finish within it.
const DefaultLeaseTTL = 2 * time.Minute

// releaseTimeout bounds queueing a lease's release message.
const releaseTimeout = 5 * time.Second

// Options configure the UCX transport.
type Options struct {
	transport.Options
	// LeaseTTL: see DefaultLeaseTTL.
	LeaseTTL time.Duration
}

// Transport is the UCX transport.
type Transport struct {
	opts    Options
	control *tcp.Transport

	// The dialers' node, shared by every Conn and closed with the last.
	mu    sync.Mutex
	node  *cucx.Node
	nrefs int
}

var _ transport.Transport = (*Transport)(nil)

// New returns a UCX transport, or cgo/ucx's ErrNotSupported in a build
// without UCX.
func New(o Options) (*Transport, error) {
	if !cucx.Supported() {
		return nil, cucx.ErrNotSupported
	}
	o.Options = o.Options.WithDefaults()
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	c, err := tcp.New(tcp.Options{Options: o.Options})
	if err != nil {
		return nil, err
	}
	return &Transport{opts: o, control: c}, nil
}

// Name implements transport.Transport.
func (t *Transport) Name() string { return Name }

func (t *Transport) acquire() (*cucx.Node, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.node == nil {
		n, err := cucx.Open()
		if err != nil {
			return nil, fmt.Errorf("ucx transport: %w; check UCX_TLS", err)
		}
		t.node = n
	}
	t.nrefs++
	return t.node, nil
}

func (t *Transport) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nrefs--; t.nrefs == 0 {
		_ = t.node.Close()
		t.node = nil
	}
}

// Listen implements transport.Transport. Each listener has its own UCX node.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: Listen needs a Handler", transport.ErrInvalid)
	}
	n, err := cucx.Open()
	if err != nil {
		return nil, fmt.Errorf("ucx transport: %w; check UCX_TLS", err)
	}
	s := &server{h: h, node: n, ttl: t.opts.LeaseTTL, log: t.opts.Log,
		leases: map[leaseKey]*lease{}, tombs: map[leaseKey]time.Time{}, stop: make(chan struct{})}
	s.inline, _ = h.(transport.InlineHandler)
	l, err := t.control.Listen(ctx, addr, local, s, verify)
	if err != nil {
		_ = n.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.reap()
	return &listener{Listener: l, s: s}, nil
}

// Dial implements transport.Transport.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	n, err := t.acquire()
	if err != nil {
		return nil, err
	}
	fc, err := t.control.Dial(ctx, addr, local, verify)
	if err != nil {
		t.release()
		return nil, err
	}
	c := &conn{Conn: fc, t: t, node: n, nonce: rand.Uint64()}
	go func() {
		<-fc.Done()
		c.closeUCX()
	}()
	return c, nil
}

type listener struct {
	transport.Listener
	s    *server
	once sync.Once
}

// Close implements transport.Listener: the control listener first (no new
// leases), then every lease, then the node.
func (l *listener) Close() error {
	err := l.Listener.Close()
	l.once.Do(l.s.close)
	return err
}

type leaseKey struct{ nonce, id uint64 }

type lease struct {
	m       *cucx.Mapping
	release func()
	expires time.Time
}

func (l *lease) end() {
	if l.m != nil {
		_ = l.m.Close()
	}
	if l.release != nil {
		l.release()
	}
}

// server wraps the user's Handler, serving the transport's own paths.
type server struct {
	h      transport.Handler
	inline transport.InlineHandler
	node   *cucx.Node
	ttl    time.Duration
	log    interface {
		Warn(string, ...any)
	}

	mu     sync.Mutex
	closed bool
	leases map[leaseKey]*lease
	// tombs are releases that arrived before their lease was granted (the
	// reader gave up first); the grant then ends the lease at once.
	tombs map[leaseKey]time.Time

	stop chan struct{}
	wg   sync.WaitGroup
}

func (s *server) ServesInline(path string) bool {
	if strings.HasPrefix(path, pathPrefix) {
		return path == pathRelease || path == pathAddress
	}
	return s.inline != nil && s.inline.ServesInline(path)
}

func (s *server) ServeRead(ctx context.Context, peer transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
	return s.h.ServeRead(ctx, peer, ref)
}

func (s *server) HandleRequest(ctx context.Context, peer transport.Identity, path string, payload []byte) ([]byte, error) {
	switch path {
	case pathAddress:
		return s.node.Address()
	case pathLease:
		return s.grant(ctx, peer, payload)
	case pathRelease:
		k, ok := parseKey(payload)
		if !ok {
			return nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: "malformed lease release"}
		}
		s.end(k)
		return nil, nil
	}
	return s.h.HandleRequest(ctx, peer, path, payload)
}

// A lease request: nonce, id (the reader's key for the lease), then the
// RemoteRef's segment, offset, length and tag.
const leaseReqSize = 8 + 8 + 4 + 8 + 8 + 8

func parseKey(b []byte) (leaseKey, bool) {
	if len(b) < 16 {
		return leaseKey{}, false
	}
	return leaseKey{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])}, true
}

func (s *server) grant(ctx context.Context, peer transport.Identity, b []byte) ([]byte, error) {
	if len(b) != leaseReqSize {
		return nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: "malformed lease request"}
	}
	k, _ := parseKey(b)
	ref := transport.RemoteRef{
		Segment: binary.LittleEndian.Uint32(b[16:]),
		Offset:  binary.LittleEndian.Uint64(b[20:]),
		Length:  binary.LittleEndian.Uint64(b[28:]),
		Tag:     binary.LittleEndian.Uint64(b[36:]),
	}
	src, release, err := s.h.ServeRead(ctx, peer, ref)
	l := &lease{release: release, expires: time.Now().Add(s.ttl)}
	if err == nil && uint64(len(src)) != ref.Length {
		s.log.Warn("ucx transport: ServeRead returned the wrong length", "ref", ref.String(), "len", len(src))
		err = &transport.RemoteError{Code: transport.CodeInternal, Message: fmt.Sprintf("ServeRead returned %d bytes for %s", len(src), ref)}
	}
	if err == nil && len(src) > 0 {
		if l.m, err = s.node.Map(src); err != nil {
			err = &transport.RemoteError{Code: transport.CodeInternal, Message: fmt.Sprintf("mapping %s for UCX: %v", ref, err)}
		}
	}
	if err != nil {
		l.end()
		return nil, err
	}
	s.mu.Lock()
	_, gaveUp := s.tombs[k]
	delete(s.tombs, k)
	if s.closed || gaveUp || len(src) == 0 {
		s.mu.Unlock()
		l.end()
		if gaveUp || s.closed {
			return nil, &transport.RemoteError{Code: transport.CodeUnavailable, Message: "the lease ended before it was granted"}
		}
		return make([]byte, 8), nil
	}
	s.leases[k] = l
	s.mu.Unlock()
	out := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(l.m.RKey())), l.m.Addr())
	return append(out, l.m.RKey()...), nil
}

func (s *server) end(k leaseKey) {
	s.mu.Lock()
	l, ok := s.leases[k]
	delete(s.leases, k)
	if !ok && !s.closed {
		s.tombs[k] = time.Now().Add(s.ttl)
	}
	s.mu.Unlock()
	if ok {
		l.end()
	}
}

// reap ends leases (and forgets tombs) older than the TTL.
func (s *server) reap() {
	defer s.wg.Done()
	tick := time.NewTicker(s.ttl / 4)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-tick.C:
			var old []*lease
			s.mu.Lock()
			for k, l := range s.leases {
				if now.After(l.expires) {
					old = append(old, l)
					delete(s.leases, k)
				}
			}
			for k, exp := range s.tombs {
				if now.After(exp) {
					delete(s.tombs, k)
				}
			}
			s.mu.Unlock()
			for _, l := range old {
				s.log.Warn("ucx transport: a reader never released its lease; ended it after the lease TTL")
				l.end()
			}
		}
	}
}

func (s *server) close() {
	close(s.stop)
	s.wg.Wait()
	s.mu.Lock()
	s.closed = true
	leases := s.leases
	s.leases = map[leaseKey]*lease{}
	s.mu.Unlock()
	for _, l := range leases {
		l.end()
	}
	_ = s.node.Close()
}

// conn is the dialer's side: the framed control connection plus a UCX
// endpoint to the listener's node, opened at the first ReadRemote.
type conn struct {
	transport.Conn
	t     *Transport
	node  *cucx.Node
	nonce uint64
	next  atomic.Uint64

	mu     sync.RWMutex // ReadRemote's gets hold it for reading; closeUCX for writing
	ep     *cucx.Endpoint
	closed bool
	once   sync.Once
}

// Close implements transport.Conn.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closeUCX()
	return err
}

func (c *conn) closeUCX() {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		if c.ep != nil {
			_ = c.ep.Close()
			c.ep = nil
		}
		c.mu.Unlock()
		c.t.release()
	})
}

// endpoint returns the UCX endpoint, asking the listener for its worker's
// address the first time.
func (c *conn) endpoint(ctx context.Context) (*cucx.Endpoint, error) {
	c.mu.RLock()
	ep, closed := c.ep, c.closed
	c.mu.RUnlock()
	if ep != nil {
		return ep, nil
	}
	if closed {
		return nil, fmt.Errorf("%w: ucx connection closed", transport.ErrClosed)
	}
	addr, err := c.Conn.Request(ctx, pathAddress, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%w: ucx connection closed", transport.ErrClosed)
	}
	if c.ep == nil {
		if c.ep, err = c.node.Connect(addr); err != nil {
			return nil, fmt.Errorf("%w: ucx connect to %s: %w", transport.ErrUnreachable, c.RemoteAddr(), err)
		}
	}
	return c.ep, nil
}

func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: bulk read: %w", transport.ErrTimeout, ctx.Err())
	}
	return fmt.Errorf("transport: bulk read: %w", ctx.Err())
}

// ReadRemote implements transport.Conn. The get gives up when ctx is
// done, and at the latest after the lease TTL, past which the owner may
// have unmapped the range: it never waits on a stalled peer or lane for
// ever. UCX cannot cancel a get, so giving up closes the endpoint (dst is
// not written after ReadRemote returns); the next read connects again.
func (c *conn) ReadRemote(ctx context.Context, ref transport.RemoteRef, dst []byte) error {
	if uint64(len(dst)) != ref.Length {
		return fmt.Errorf("%w: dst of %d bytes for a range of %d (%s)", transport.ErrInvalid, len(dst), ref.Length, ref)
	}
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	ep, err := c.endpoint(ctx)
	if err != nil {
		return err
	}
	id := c.next.Add(1)
	req := make([]byte, 0, leaseReqSize)
	req = binary.LittleEndian.AppendUint64(req, c.nonce)
	req = binary.LittleEndian.AppendUint64(req, id)
	req = binary.LittleEndian.AppendUint32(req, ref.Segment)
	req = binary.LittleEndian.AppendUint64(req, ref.Offset)
	req = binary.LittleEndian.AppendUint64(req, ref.Length)
	req = binary.LittleEndian.AppendUint64(req, ref.Tag)
	resp, err := c.Conn.Request(ctx, pathLease, req)
	if err != nil {
		var re *transport.RemoteError
		if !errors.As(err, &re) {
			c.releaseLease(req[:16]) // the owner may grant it after we gave up
		}
		return err
	}
	if len(resp) < 8 {
		return fmt.Errorf("%w: ucx lease reply of %d bytes", transport.ErrInvalid, len(resp))
	}
	if ref.Length == 0 {
		return nil // nothing was mapped, nothing to release
	}
	defer c.releaseLease(req[:16])
	gctx, cancel := context.WithTimeout(ctx, c.t.opts.LeaseTTL)
	defer cancel()
	err = c.get(gctx, ep, binary.LittleEndian.Uint64(resp), resp[8:], dst)
	switch {
	case err == nil:
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		return nil
	case errors.Is(err, errGaveUp):
		c.dropEndpoint(ep)
		if ctx.Err() != nil {
			return fmt.Errorf("%w: ucx get %s from %s", ctxErr(ctx), ref, c.RemoteAddr())
		}
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) { // C's clock ran out before ctx's timer fired
			return fmt.Errorf("%w: bulk read: %w: ucx get %s from %s", transport.ErrTimeout, context.DeadlineExceeded,
				ref, c.RemoteAddr())
		}
		return fmt.Errorf("%w: ucx get %s from %s: no reply within the lease TTL %v", transport.ErrTimeout, ref,
			c.RemoteAddr(), c.t.opts.LeaseTTL)
	case c.Err() != nil:
		return fmt.Errorf("%w: ucx get %s: %w (%w)", transport.ErrPeerGone, ref, err, c.Err())
	default:
		return fmt.Errorf("%w: ucx get %s: %w", transport.ErrPeerGone, ref, err)
	}
}

// testHookBeforeGet, when set by a test, runs after the lease and before
// the get.
var testHookBeforeGet func()

// errGaveUp marks a get that ended because its context did.
var errGaveUp = errors.New("ucx get gave up")

// get reads the leased range at raddr (rkey: its packed key) into dst.
func (c *conn) get(ctx context.Context, ep *cucx.Endpoint, raddr uint64, rkey, dst []byte) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed || c.ep != ep {
		return fmt.Errorf("%w: ucx connection closed", transport.ErrClosed)
	}
	rk, err := ep.Unpack(rkey)
	if err != nil {
		return fmt.Errorf("%w: ucx rkey from %s: %w", transport.ErrInvalid, c.RemoteAddr(), err)
	}
	if testHookBeforeGet != nil {
		testHookBeforeGet()
	}
	err = ep.Get(ctx, rk, raddr, dst)
	_ = rk.Close()
	if errors.Is(err, &core.Error{Code: core.ETIMEDOUT}) || errors.Is(err, &core.Error{Code: core.ECANCELED}) {
		return fmt.Errorf("%w: %w", errGaveUp, err)
	}
	return err
}

// dropEndpoint closes ep, which a get that gave up left unusable, so that
// the next read connects again.
func (c *conn) dropEndpoint(ep *cucx.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ep == ep {
		_ = ep.Close()
		c.ep = nil
	}
}

func (c *conn) releaseLease(key []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	_ = c.Conn.Send(ctx, pathRelease, key) // a dead connection: the owner's TTL ends the lease
}
