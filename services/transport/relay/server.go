package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Timeouts of the relay setup.
const (
	// DefaultSetupTimeout bounds reading a header, connecting the rest of
	// the path and hearing its reply. Each relay on a path waits for the
	// ones after it, so it is generous.
	DefaultSetupTimeout = 10 * time.Second
	// DefaultHopDialTimeout bounds one TCP connect to the next hop.
	DefaultHopDialTimeout = 3 * time.Second
)

// DialFunc opens a TCP connection; tests inject one that blocks some
// addresses to stand in for a firewall.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// NetDial is the DialFunc of the real network, with TCP_NODELAY left at
// Go's default (on).
func NetDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// ServerOptions configure a relay Server.
type ServerOptions struct {
	// ID is this member's id as paths name it (its instance key).
	ID string
	// Dial connects to the next hop. Default NetDial.
	Dial DialFunc
	// Log receives refused paths. Default slog.Default().
	Log *slog.Logger
	// SetupTimeout: default DefaultSetupTimeout.
	SetupTimeout time.Duration
	// HopDialTimeout: default DefaultHopDialTimeout.
	HopDialTimeout time.Duration
	// Dir, when set, gives the addresses to try for the next relay: first
	// the one this member's own probe reached (Dir.ReachedAt(ID, next)),
	// then the one the header names, then every one it advertises.
	// Without it only the header's address is dialed.
	Dir Directory
}

// Server is a relay: it serves one or more listeners (one per advertised
// address), connecting each accepted connection to the next hop its
// header names.
type Server struct {
	o   ServerOptions
	lns []net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Serve starts relaying connections accepted on ln until Close.
func Serve(ln net.Listener, o ServerOptions) *Server {
	return ServeAll([]net.Listener{ln}, o)
}

// ServeAll starts relaying connections accepted on every one of lns until
// Close: a relay on several networks listens on an address of each.
func ServeAll(lns []net.Listener, o ServerOptions) *Server {
	if o.Dial == nil {
		o.Dial = NetDial
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Log = o.Log.With("component", "relay")
	if o.SetupTimeout <= 0 {
		o.SetupTimeout = DefaultSetupTimeout
	}
	if o.HopDialTimeout <= 0 {
		o.HopDialTimeout = DefaultHopDialTimeout
	}
	s := &Server{o: o, lns: lns, conns: make(map[net.Conn]struct{})}
	for _, ln := range lns {
		s.wg.Add(1)
		go s.accept(ln)
	}
	return s
}

// Addr is the address of the relay's first listener.
func (s *Server) Addr() string { return s.lns[0].Addr().String() }

// Addrs are the addresses of all the relay's listeners, in order.
func (s *Server) Addrs() []string {
	out := make([]string, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

// Close stops accepting and closes every relayed connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	var err error
	for _, ln := range s.lns {
		if e := ln.Close(); err == nil {
			err = e
		}
	}
	s.wg.Wait()
	return err
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	_ = c.Close()
}

func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.o.Log.Error("relay listener stopped", "err", err)
			}
			return
		}
		if !s.track(c) {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.handle(c)
		}()
	}
}

// handle reads a header, connects the rest of the path, replies, then
// copies bytes both ways until either side ends.
func (s *Server) handle(in net.Conn) {
	_ = in.SetDeadline(time.Now().Add(s.o.SetupTimeout))
	h, err := ReadHeader(in)
	if err == nil {
		err = h.Check(s.o.ID)
	}
	if errors.Is(err, io.EOF) {
		// Closed before its first byte: a reachability probe (an owner
		// connects to its neighbours' relay addresses every
		// owner.ReachProbeInterval to see which it reaches), nothing to
		// refuse or to warn about.
		s.o.Log.Debug("relay: connection closed before a header", "from", in.RemoteAddr().String())
		return
	}
	if err != nil {
		s.o.Log.Warn("relay: refused a path", "from", in.RemoteAddr().String(), "path", fmt.Sprintf("%x", h.PathID), "err", err)
		_ = writeReply(in, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.SetupTimeout)
	out, err := s.connectNext(ctx, &h)
	cancel()
	if err != nil {
		s.o.Log.Warn("relay: path failed", "path", fmt.Sprintf("%x", h.PathID), "err", err)
		_ = writeReply(in, err)
		return
	}
	if !s.track(out) {
		return
	}
	defer s.untrack(out)
	if err := writeReply(in, nil); err != nil {
		return
	}
	_ = in.SetDeadline(time.Time{})
	splice(in, out)
}

// connectNext connects to the next relay (and hears that the rest of the
// path is connected) or, as the last relay, to the target.
func (s *Server) connectNext(ctx context.Context, h *Header) (net.Conn, error) {
	if len(h.Via) == 0 {
		c, err := s.dialHop(ctx, h.Target.Addr)
		if err != nil {
			return nil, fmt.Errorf("%w: relay %s cannot reach target %s at %s: %w", ErrNextHop, s.o.ID, h.Target.ID, h.Target.Addr, err)
		}
		return c, nil
	}
	next := h.Via[0]
	fwd := h.Forward(s.o.ID)
	addrs := []string{next.Addr}
	if s.o.Dir != nil {
		addrs = candidates([]string{s.o.Dir.ReachedAt(s.o.ID, next.ID), next.Addr}, s.o.Dir.RelayAddrs(next.ID))
	}
	c, _, err := dialAny(ctx, s.o.Dial, addrs, s.o.HopDialTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: relay %s cannot reach relay %s: %w", ErrNextHop, s.o.ID, next.ID, err)
	}
	if err := handshake(ctx, c, &fwd); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (s *Server) dialHop(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.HopDialTimeout)
	defer cancel()
	return s.o.Dial(ctx, addr)
}

// handshake sends h on c and reads the reply, within ctx.
func handshake(ctx context.Context, c net.Conn, h *Header) error {
	b, err := h.AppendTo(nil)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
		defer func() { _ = c.SetDeadline(time.Time{}) }()
	}
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("%w: sending the header to %s: %w", ErrNextHop, c.RemoteAddr(), err)
	}
	return readReply(c)
}

// splice copies both ways; when either direction ends, both connections
// close, which ends the other.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// Route is a path to a target through relays.
type Route struct {
	// Relays are the relays to pass, the first one dialed directly.
	Relays []Hop
	// FirstAlternates are more addresses of the first relay, tried in
	// order when Relays[0].Addr does not connect.
	FirstAlternates []string
	// Target is the endpoint the last relay connects to.
	Target Hop
}

// DialRoute connects to r's first relay and sends the header for the rest
// of the path; once every relay has connected, the returned connection
// carries bytes to and from r.Target as if dialed directly. self is the
// dialer's member id (the first entry of the trail).
func DialRoute(ctx context.Context, dial DialFunc, self string, r Route, hopLimit uint8) (net.Conn, error) {
	if len(r.Relays) == 0 {
		return nil, fmt.Errorf("%w: a route with no relays", ErrNoRoute)
	}
	if hopLimit == 0 {
		hopLimit = DefaultHopLimit
	}
	if dial == nil {
		dial = NetDial
	}
	h := Header{HopLimit: hopLimit, PathID: rand.Uint64(), Trail: []string{self}, Via: r.Relays[1:], Target: r.Target}
	if err := h.Check(r.Relays[0].ID); err != nil {
		return nil, err
	}
	first := r.Relays[0]
	c, _, err := dialAny(ctx, dial, candidates([]string{first.Addr}, r.FirstAlternates), DefaultHopDialTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: relay %s: %w", ErrNextHop, first.ID, err)
	}
	if err := handshake(ctx, c, &h); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}
