// Package tcp is the TCP transport: the framed protocol over TCP
// connections, with TCP_NODELAY, a per-connection writer that batches
// frames into writev, and one of two reactor modes per process for the
// reading side (network.tcp_reactor_mode):
//
//   - event_driven: reads go through Go's netpoller. A reader that finds no
//     data parks its goroutine until epoll says the socket is readable.
//   - busy_poll: after every read, the reader keeps retrying non-blocking
//     read(2) on the raw fd for up to Options.BusyPollSpin before parking in
//     the netpoller, and a caller of Request reads its own reply the same
//     way instead of waiting for the reader (framed's Stream.TryRead). A
//     reply arriving within the spin is picked up without an epoll wakeup
//     or a goroutine reschedule; the price is CPU: an
//     active connection's reader spends up to BusyPollSpin of CPU after each
//     read that drains the socket (so an idle connection costs one spin,
//     then nothing; a connection with gaps shorter than the spin keeps a
//     core busy). BenchmarkRoundTrip64 reports the CPU per round trip.
//     On Linux the socket is kept out of the runtime's epoll set, so that
//     segments arriving while it spins wake no thread (owned_linux.go).
//     It needs processors to spare: see docs/transport.md.
package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/framed"
)

// Name is the transport's name in configs and endpoint advertisements.
const Name = "tcp"

// ReactorMode is how a connection's reader waits for bytes. The values are
// those of the config key network.tcp_reactor_mode.
type ReactorMode string

// Reactor modes.
const (
	ReactorEventDriven ReactorMode = "event_driven"
	ReactorBusyPoll    ReactorMode = "busy_poll"
)

// ErrUnknownReactor: a reactor mode other than busy_poll or event_driven.
var ErrUnknownReactor = errors.New("tcp: unknown reactor mode")

// ParseReactorMode reads a network.tcp_reactor_mode value ("" means
// event_driven).
func ParseReactorMode(s string) (ReactorMode, error) {
	switch ReactorMode(s) {
	case "", ReactorEventDriven:
		return ReactorEventDriven, nil
	case ReactorBusyPoll:
		return ReactorBusyPoll, nil
	}
	return "", fmt.Errorf("%w %q; use busy_poll (lowest latency, spins a core) or event_driven", ErrUnknownReactor, s)
}

// Defaults.
const (
	// DefaultBusyPollSpin is how long a busy_poll reader retries before
	// parking: longer than a same-rack round trip, short enough that an
	// idle connection stops costing CPU almost at once.
	DefaultBusyPollSpin = 50 * time.Microsecond
	// MinBusyPollProcs: below this GOMAXPROCS, New warns that busy_poll
	// will cost more latency than it saves (measured on 2 processors: a
	// 64-byte round trip 1.1-4x as long as with event_driven).
	MinBusyPollProcs = 4
)

// Options configure the TCP transport.
type Options struct {
	transport.Options
	// Reactor is the reading mode of every connection of this transport.
	Reactor ReactorMode
	// BusyPollSpin bounds a busy_poll reader's spin after each read.
	BusyPollSpin time.Duration
	// SocketBuffer, when positive, sets SO_SNDBUF and SO_RCVBUF. Zero (the
	// default) leaves Linux's buffer autotuning on: setting either turns
	// autotuning off for that socket and the kernel caps the value at
	// net.core.{r,w}mem_max (208 KiB by default), which is far below what
	// autotuning reaches (net.ipv4.tcp_rmem's max, 6 MiB by default) on a
	// fast link.
	SocketBuffer int
}

// Transport is the TCP transport.
type Transport struct {
	opts Options
}

var _ transport.Transport = (*Transport)(nil)

// fewProcsWarned: the busy_poll-with-few-processors warning went out
// (once per process: an owner builds a transport per node).
var fewProcsWarned atomic.Bool

// New returns a TCP transport.
func New(o Options) (*Transport, error) {
	mode, err := ParseReactorMode(string(o.Reactor))
	if err != nil {
		return nil, err
	}
	if mode == ReactorBusyPoll && !busyPollSupported {
		return nil, fmt.Errorf("%w: busy_poll needs raw socket reads, which this platform lacks; use event_driven", ErrUnknownReactor)
	}
	o.Reactor = mode
	if o.BusyPollSpin <= 0 {
		o.BusyPollSpin = DefaultBusyPollSpin
	}
	o.Options = o.Options.WithDefaults()
	if procs := runtime.GOMAXPROCS(0); mode == ReactorBusyPoll && procs < MinBusyPollProcs && fewProcsWarned.CompareAndSwap(false, true) {
		o.Log.Warn("tcp transport: busy_poll with few processors: the spinning readers take the cores the work needs, so expect higher latency than event_driven",
			"gomaxprocs", procs, "recommended_min", MinBusyPollProcs)
	}
	return &Transport{opts: o}, nil
}

// Name implements transport.Transport.
func (t *Transport) Name() string { return Name }

// Reactor is the transport's reactor mode.
func (t *Transport) Reactor() ReactorMode { return t.opts.Reactor }

// Listen implements transport.Transport.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: Listen needs a Handler", transport.ErrInvalid)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp transport: listen on %s: %w; choose a free address", addr, err)
	}
	return framed.Serve(ln, t.prepare, local, h, verify, t.opts.Options), nil
}

// Dial implements transport.Transport.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	d := net.Dialer{Timeout: t.opts.HandshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("%w: dial %s: %w", transport.ErrTimeout, addr, ctx.Err())
			}
			return nil, fmt.Errorf("tcp transport: dial %s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %w; is a member listening there? check the address it advertises", transport.ErrUnreachable, err)
	}
	return t.DialConn(ctx, nc, local, verify)
}

// DialConn runs the protocol over nc, a TCP connection the caller already
// opened (to a relay that splices it to the listener; see transport/relay):
// the handshake and everything after it go end to end, exactly as over a
// connection Dial opened. nc belongs to the returned Conn, or is closed.
func (t *Transport) DialConn(ctx context.Context, nc net.Conn, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	s, err := t.prepare(nc)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	c, err := framed.Dial(ctx, s, local, verify, t.opts.Options)
	if err != nil {
		return nil, err // not a nil *framed.Conn in a non-nil interface
	}
	return c, nil
}

// prepare sets a connection's socket options and reading mode.
func (t *Transport) prepare(nc net.Conn) (framed.Stream, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return framed.Stream{}, fmt.Errorf("tcp transport: got a %T, want a *net.TCPConn", nc)
	}
	if err := tc.SetNoDelay(true); err != nil {
		return framed.Stream{}, fmt.Errorf("tcp transport: TCP_NODELAY: %w", err)
	}
	if n := t.opts.SocketBuffer; n > 0 {
		if err := tc.SetReadBuffer(n); err != nil {
			return framed.Stream{}, fmt.Errorf("tcp transport: SO_RCVBUF %d: %w", n, err)
		}
		if err := tc.SetWriteBuffer(n); err != nil {
			return framed.Stream{}, fmt.Errorf("tcp transport: SO_SNDBUF %d: %w", n, err)
		}
	}
	// Unacknowledged data older than the keepalive timeout ends the
	// connection too, so a peer that vanished while we were sending to it
	// is noticed as fast as one that vanished while we were listening.
	if err := setUserTimeout(tc, t.opts.KeepaliveTimeout); err != nil {
		return framed.Stream{}, fmt.Errorf("tcp transport: TCP_USER_TIMEOUT: %w", err)
	}
	stream := rawStream
	if t.opts.Reactor == ReactorBusyPoll {
		stream = busyStream
	}
	conn, tryRead, tryWrite, err := stream(tc)
	if err != nil {
		return framed.Stream{}, err
	}
	s := framed.Stream{Conn: conn, TryWrite: tryWrite, ResumableDeadlines: true}
	if t.opts.Reactor == ReactorBusyPoll {
		if tryRead == nil {
			return framed.Stream{}, fmt.Errorf("tcp transport: busy_poll is not supported on this platform")
		}
		s.TryRead, s.SpinWait = tryRead, t.opts.BusyPollSpin
	}
	return s, nil
}
