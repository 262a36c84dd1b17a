// Package dpdk is the DPDK transport: the framed protocol (messages, bulk
// reads, keepalive, handshake: exactly as over TCP) runs over rel, a
// reliable stream of our own, whose datagrams travel as raw Ethernet
// frames (EtherType 0x88B5) through a DPDK port busy-polled by the
// process's poller (cgo/dpdk). No kernel socket and no IP are involved.
//
// Connections are set up by the Endpoint of each port (SYN, SYN-ACK, RST,
// carrying connection ids and a service port) and then carry rel datagrams:
// sequence numbers, cumulative and selective acks, retransmission, flow
// control and fragmentation of large writes into frames (package rel).
//
// Addresses are "dpdk://<device>/<mac>:<port>"; Listen also takes
// "dpdk://<device>:<port>" with port 0 for any free one, and Listener.Addr
// gives the full form to dial.
//
// Without the dpdk build tag OpenDPDK returns cgo/dpdk's ErrNotSupported;
// the transport still runs over MemHub (in-memory links), which is how its
// logic is tested in every build.
package dpdk

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/dpdk/rel"
	"github.com/fluxon-dev/fluxon/services/transport/framed"
)

// Name is the transport's name in configs.
const Name = "dpdk"

// Options configure the DPDK transport.
type Options struct {
	transport.Options
	// Endpoints are the ports it listens and dials on (OpenDPDK, or
	// MemHub.Endpoint in tests). Listen picks the one an address names;
	// Dial uses the first whose MAC is not the destination's.
	Endpoints []*Endpoint
}

// Transport is the DPDK transport.
type Transport struct {
	opts Options
}

var _ transport.Transport = (*Transport)(nil)

// New returns a transport over o.Endpoints.
func New(o Options) (*Transport, error) {
	if len(o.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: the dpdk transport needs an endpoint (OpenDPDK)", transport.ErrInvalid)
	}
	o.Options = o.Options.WithDefaults()
	return &Transport{opts: o}, nil
}

// Name implements transport.Transport.
func (t *Transport) Name() string { return Name }

func (t *Transport) endpoint(dev string) *Endpoint {
	for _, e := range t.opts.Endpoints {
		if e.name == dev {
			return e
		}
	}
	return nil
}

// Listen implements transport.Transport.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: Listen needs a Handler", transport.ErrInvalid)
	}
	a, _, err := ParseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrInvalid, err)
	}
	e := t.endpoint(a.Device)
	if e == nil {
		return nil, fmt.Errorf("%w: dpdk transport: no device %q; the transport has %v", transport.ErrInvalid, a.Device, t.devices())
	}
	ln, err := e.ListenRaw(a.Port)
	if err != nil {
		return nil, err
	}
	return framed.Serve(ln, prepare, local, h, verify, t.opts.Options), nil
}

func (t *Transport) devices() []string {
	var d []string
	for _, e := range t.opts.Endpoints {
		d = append(d, e.name)
	}
	return d
}

func prepare(nc net.Conn) (framed.Stream, error) {
	// rel's deadlines interrupt a Read without losing stream bytes.
	s := framed.Stream{Conn: nc, ResumableDeadlines: true}
	if rc, ok := nc.(*rel.Conn); ok {
		s.TryWrite = rc.TryWrite
	}
	return s, nil
}

// dialer picks the endpoint to dial mac from.
func (t *Transport) dialer(mac [6]byte) *Endpoint {
	for _, e := range t.opts.Endpoints {
		if e.mac != mac {
			return e
		}
	}
	return t.opts.Endpoints[0]
}

// DialRaw opens a bare reliable stream to addr: what Dial runs the
// handshake over (the conformance suite speaks the protocol by hand on it).
func (t *Transport) DialRaw(ctx context.Context, addr string) (net.Conn, error) {
	a, _, err := ParseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrInvalid, err)
	}
	ctx, cancel := context.WithTimeout(ctx, t.opts.HandshakeTimeout)
	defer cancel()
	c, err := t.dialer(a.MAC).DialRaw(ctx, addr)
	if err != nil {
		switch {
		case errors.Is(err, errUnreachable):
			return nil, fmt.Errorf("%w: %w; is a member listening there? check the address it advertises", transport.ErrUnreachable, err)
		case errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("%w: no answer from %s: %w", transport.ErrUnreachable, addr, err)
		}
		return nil, fmt.Errorf("dpdk transport: dial %s: %w", addr, err)
	}
	return c, nil
}

// ListenRaw opens a bare listener that Dial reaches at its Addr.
func (t *Transport) ListenRaw(addr string) (net.Listener, error) {
	a, _, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	e := t.endpoint(a.Device)
	if e == nil {
		return nil, fmt.Errorf("dpdk transport: no device %q", a.Device)
	}
	return e.ListenRaw(a.Port)
}

// Dial implements transport.Transport.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	nc, err := t.DialRaw(ctx, addr)
	if err != nil {
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("%w: dial %s: %w", transport.ErrTimeout, addr, ctx.Err())
			}
			return nil, fmt.Errorf("dpdk transport: dial %s: %w", addr, ctx.Err())
		}
		return nil, err
	}
	s, _ := prepare(nc)
	return framed.Dial(ctx, s, local, verify, t.opts.Options)
}
