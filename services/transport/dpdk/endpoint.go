package dpdk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport/dpdk/rel"
)

// EtherType marks our frames: 0x88B5 is IEEE 802's "local experimental"
// EtherType, free for a protocol that never leaves a link.
const EtherType = 0x88B5

// Frame layout: Ethernet header (dst, src, EtherType), then our kind, the
// receiver's and the sender's connection ids, then the kind's body (a rel
// datagram for kindData, the service port for kindSyn).
const (
	ethHeader   = 14
	frameHeader = ethHeader + 1 + 4 + 4

	kindSyn    = 1
	kindSynAck = 2
	kindData   = 3
	kindRst    = 4
)

// Defaults.
const (
	// DefaultMTU is the link's: the Ethernet payload our header and a rel
	// datagram share.
	DefaultMTU = 1500
	// synRetryMin and synRetryMax bound a dial's SYN retransmission.
	synRetryMin = 20 * time.Millisecond
	synRetryMax = 500 * time.Millisecond
	// acceptBacklog bounds connections waiting for Accept.
	acceptBacklog = 128
)

// Link sends raw Ethernet frames; received frames go to the Endpoint's
// Receive. A DPDK port is one, MemHub makes in-memory ones for tests.
type Link interface {
	MAC() [6]byte
	// Send queues a copy of frame; it must not block for long and may drop.
	Send(frame []byte) error
	Close() error
}

// Kicker is a Link whose transmit loop can call Endpoint.Flush just before
// it sends (a DPDK port's PortConfig.BeforeTx): Kick asks it to, on its
// next turn. Over such a link connections coalesce: what they queue
// between two turns leaves as full datagrams, acks included.
type Kicker interface {
	Kick()
}

// EndpointConfig configures an Endpoint.
type EndpointConfig struct {
	// MTU is the link's Ethernet payload size (DefaultMTU).
	MTU int
	// Rel is the template for each connection's reliable stream (its MTU,
	// Output, OnDone and addresses are set per connection).
	Rel rel.Config
	// PollSpin is how long a DPDK port's poller keeps polling after
	// the last frame before it parks (cgo/dpdk's DefaultSpin when 0). A
	// spin longer than a round trip keeps request/reply latency off the
	// park-and-wake path at the cost of a busy core.
	PollSpin time.Duration
	// Faults, when active, are injected into every connection's outgoing
	// datagrams (tests: this kernel has no sch_netem for tc netem).
	Faults rel.Faults
}

type remoteKey struct {
	mac [6]byte
	id  uint32
}

// Endpoint multiplexes connections over one link: it sets them up (SYN,
// SYN-ACK, RST) and hands each one's datagrams to its rel.Conn.
type Endpoint struct {
	name string
	cfg  EndpointConfig
	link Link
	mac  [6]byte

	mu        sync.Mutex
	nextID    uint32
	nextPort  uint16
	seed      uint64
	conns     map[uint32]*rel.Conn
	accepted  map[remoteKey]uint32 // SYNs already answered, for retransmitted SYNs
	synacks   map[uint32][]byte    // the SYN-ACK each accepted connection was answered with
	keys      map[uint32]remoteKey
	listeners map[uint16]*rawListener
	dials     map[uint32]*pendingDial
	closed    bool

	// dirty: connections waiting for Flush (deferred output).
	dmu   sync.Mutex
	dirty []*rel.Conn
	spare []*rel.Conn
}

type pendingDial struct {
	peer [6]byte
	addr string
	done chan error
	conn *rel.Conn
}

func newEndpoint(name string, cfg EndpointConfig) *Endpoint {
	if cfg.MTU <= 0 {
		cfg.MTU = DefaultMTU
	}
	return &Endpoint{
		name: name, cfg: cfg, nextID: 1, nextPort: 1, seed: cfg.Faults.Seed,
		conns: map[uint32]*rel.Conn{}, accepted: map[remoteKey]uint32{}, synacks: map[uint32][]byte{},
		keys: map[uint32]remoteKey{}, listeners: map[uint16]*rawListener{}, dials: map[uint32]*pendingDial{},
	}
}

func (e *Endpoint) attach(l Link) {
	e.link = l
	e.mac = l.MAC()
}

// Name is the device name addresses use.
func (e *Endpoint) Name() string { return e.name }

// MAC is the link's address.
func (e *Endpoint) MAC() [6]byte { return e.mac }

// Close closes the link and aborts every connection.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	e.closed = true
	conns := make([]*rel.Conn, 0, len(e.conns))
	for _, c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.Unlock()
	for _, c := range conns {
		c.Abort(nil)
	}
	return e.link.Close()
}

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

// Addr is an endpoint address: "dpdk://<device>/<mac>:<port>".
type Addr struct {
	Device string
	MAC    [6]byte
	Port   uint16
}

// Network implements net.Addr.
func (Addr) Network() string { return Name }

func (a Addr) String() string {
	return fmt.Sprintf("dpdk://%s/%s:%d", a.Device, macString(a.MAC), a.Port)
}

// ParseAddr parses "dpdk://<device>/<mac>:<port>"; Listen also takes
// "dpdk://<device>:<port>" (port 0: any free one).
func ParseAddr(s string) (a Addr, hasMAC bool, err error) {
	rest, ok := strings.CutPrefix(s, "dpdk://")
	if !ok {
		return a, false, fmt.Errorf("dpdk address %q: want dpdk://<device>/<mac>:<port>", s)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return a, false, fmt.Errorf("dpdk address %q: no :<port>", s)
	}
	p, err := strconv.ParseUint(rest[i+1:], 10, 16)
	if err != nil {
		return a, false, fmt.Errorf("dpdk address %q: port: %w", s, err)
	}
	a.Port = uint16(p)
	rest = rest[:i]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		hw, err := net.ParseMAC(rest[j+1:])
		if err != nil || len(hw) != 6 {
			return a, false, fmt.Errorf("dpdk address %q: MAC: %v", s, err)
		}
		copy(a.MAC[:], hw)
		hasMAC = true
		rest = rest[:j]
	}
	a.Device = rest
	if a.Device == "" {
		return a, false, fmt.Errorf("dpdk address %q: no device", s)
	}
	return a, hasMAC, nil
}

func (e *Endpoint) frame(kind byte, dst [6]byte, dstID, srcID uint32, body []byte) []byte {
	b := make([]byte, frameHeader, frameHeader+len(body))
	copy(b, dst[:])
	copy(b[6:], e.mac[:])
	binary.BigEndian.PutUint16(b[12:], EtherType)
	b[ethHeader] = kind
	binary.LittleEndian.PutUint32(b[ethHeader+1:], dstID)
	binary.LittleEndian.PutUint32(b[ethHeader+5:], srcID)
	return append(b, body...)
}

// newConnLocked makes the rel.Conn for local id talking to (peer, remote).
func (e *Endpoint) newConnLocked(id uint32, peer [6]byte, remote uint32, port uint16, local bool) *rel.Conn {
	cfg := e.cfg.Rel
	cfg.MTU = e.cfg.MTU - (frameHeader - ethHeader)
	hdr := e.frame(kindData, peer, remote, id, nil)
	buf := make([]byte, 0, frameHeader+cfg.MTU)
	send := func(b []byte) error {
		buf = append(append(buf[:0], hdr...), b...)
		return e.link.Send(buf)
	}
	if e.cfg.Faults.Active() {
		f := e.cfg.Faults
		e.seed++
		f.Seed = e.seed
		cfg.Output = f.Wrap(send)
	} else {
		cfg.Output = send
	}
	cfg.OnDone = func() { e.forget(id) }
	var c *rel.Conn
	if k, ok := e.link.(Kicker); ok {
		cfg.Kick = func() {
			e.dmu.Lock()
			e.dirty = append(e.dirty, c)
			e.dmu.Unlock()
			k.Kick()
		}
	}
	me := Addr{Device: e.name, MAC: e.mac, Port: port}
	them := Addr{Device: "peer", MAC: peer, Port: port}
	if local {
		cfg.Local, cfg.Remote = me, them
	} else {
		cfg.Local, cfg.Remote = Addr{Device: e.name, MAC: e.mac}, them
	}
	c = rel.New(cfg)
	e.conns[id] = c
	return c
}

// Flush sends what connections queued since the last Flush (see Kicker).
// The link's transmit loop calls it.
func (e *Endpoint) Flush() {
	e.dmu.Lock()
	d := e.dirty
	e.dirty, e.spare = e.spare[:0], nil
	e.dmu.Unlock()
	for _, c := range d {
		c.Flush()
	}
	clear(d)
	e.dmu.Lock()
	if e.spare == nil {
		e.spare = d[:0]
	}
	e.dmu.Unlock()
}

func (e *Endpoint) forget(id uint32) {
	e.mu.Lock()
	delete(e.conns, id)
	if k, ok := e.keys[id]; ok {
		delete(e.accepted, k)
		delete(e.keys, id)
		delete(e.synacks, id)
	}
	e.mu.Unlock()
}

func (e *Endpoint) allocIDLocked() uint32 {
	for {
		id := e.nextID
		e.nextID++
		if id == 0 {
			continue
		}
		if _, busy := e.conns[id]; busy {
			continue
		}
		if _, busy := e.dials[id]; busy {
			continue
		}
		return id
	}
}

// Receive takes one frame from the link (on the link's thread).
func (e *Endpoint) Receive(f []byte) {
	if len(f) < frameHeader || binary.BigEndian.Uint16(f[12:]) != EtherType || [6]byte(f[:6]) != e.mac {
		return // the kernel's own traffic, or not for us
	}
	var src [6]byte
	copy(src[:], f[6:12])
	kind := f[ethHeader]
	dstID := binary.LittleEndian.Uint32(f[ethHeader+1:])
	srcID := binary.LittleEndian.Uint32(f[ethHeader+5:])
	body := f[frameHeader:]
	switch kind {
	case kindData:
		e.mu.Lock()
		c := e.conns[dstID]
		e.mu.Unlock()
		if c == nil {
			_ = e.link.Send(e.frame(kindRst, src, srcID, dstID, nil))
			return
		}
		c.Input(body)
	case kindSyn:
		e.onSyn(src, srcID, body)
	case kindSynAck:
		e.mu.Lock()
		d := e.dials[dstID]
		if d != nil && d.peer == src && d.conn == nil {
			delete(e.dials, dstID)
			d.conn = e.newConnLocked(dstID, src, srcID, 0, false)
			d.done <- nil
		}
		e.mu.Unlock()
	case kindRst:
		e.mu.Lock()
		d := e.dials[dstID]
		if d != nil && d.peer == src {
			delete(e.dials, dstID)
		}
		c := e.conns[dstID]
		e.mu.Unlock()
		if d != nil && d.peer == src {
			d.done <- fmt.Errorf("nothing listens at %s", d.addr)
			return
		}
		if c != nil && c.RemoteAddr().(Addr).MAC == src {
			c.Abort(rel.ErrReset)
		}
	}
}

func (e *Endpoint) onSyn(src [6]byte, srcID uint32, body []byte) {
	if len(body) < 2 {
		return
	}
	port := binary.LittleEndian.Uint16(body)
	k := remoteKey{src, srcID}
	e.mu.Lock()
	if id, ok := e.accepted[k]; ok {
		sa := e.synacks[id]
		e.mu.Unlock()
		_ = e.link.Send(sa) // our SYN-ACK was lost
		return
	}
	l := e.listeners[port]
	if l == nil || e.closed {
		e.mu.Unlock()
		_ = e.link.Send(e.frame(kindRst, src, srcID, 0, nil))
		return
	}
	id := e.allocIDLocked()
	c := e.newConnLocked(id, src, srcID, port, true)
	sa := e.frame(kindSynAck, src, srcID, id, nil)
	e.accepted[k], e.keys[id], e.synacks[id] = id, k, sa
	e.mu.Unlock()
	if !l.push(c) {
		c.Abort(nil)
		return
	}
	_ = e.link.Send(sa)
}

// DialRaw opens a reliable stream to addr (the SYN exchange only; no
// fluxon handshake). It fails with an error wrapping errUnreachable when
// nothing listens there, or ctx's error.
func (e *Endpoint) DialRaw(ctx context.Context, addr string) (*rel.Conn, error) {
	a, hasMAC, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	if !hasMAC {
		return nil, fmt.Errorf("dpdk address %q: Dial needs the MAC (dpdk://<device>/<mac>:<port>)", addr)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, net.ErrClosed
	}
	id := e.allocIDLocked()
	d := &pendingDial{peer: a.MAC, addr: addr, done: make(chan error, 1)}
	e.dials[id] = d
	e.mu.Unlock()
	var port [2]byte
	binary.LittleEndian.PutUint16(port[:], a.Port)
	syn := e.frame(kindSyn, a.MAC, 0, id, port[:])
	retry := synRetryMin
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case err := <-d.done:
			if err != nil {
				return nil, fmt.Errorf("%w: %w", errUnreachable, err)
			}
			return d.conn, nil
		case <-t.C:
			_ = e.link.Send(syn)
			t.Reset(retry)
			retry = min(2*retry, synRetryMax)
		case <-ctx.Done():
			e.mu.Lock()
			delete(e.dials, id)
			c := d.conn
			e.mu.Unlock()
			if c != nil {
				c.Abort(nil)
			}
			return nil, ctx.Err()
		}
	}
}

var errUnreachable = errors.New("dpdk: unreachable")

// ListenRaw accepts reliable streams on port (0: any free one).
func (e *Endpoint) ListenRaw(port uint16) (net.Listener, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, net.ErrClosed
	}
	if port == 0 {
		for i := 0; ; i++ {
			if i > 1<<16 {
				return nil, errors.New("dpdk: no free port")
			}
			p := e.nextPort
			e.nextPort++
			if p != 0 && e.listeners[p] == nil {
				port = p
				break
			}
		}
	} else if e.listeners[port] != nil {
		return nil, fmt.Errorf("dpdk: port %d of %s is in use; choose another", port, e.name)
	}
	l := &rawListener{e: e, port: port, addr: Addr{Device: e.name, MAC: e.mac, Port: port},
		q: make(chan *rel.Conn, acceptBacklog), done: make(chan struct{})}
	e.listeners[port] = l
	return l, nil
}

type rawListener struct {
	e    *Endpoint
	port uint16
	addr Addr
	mu   sync.Mutex
	q    chan *rel.Conn
	done chan struct{}
	shut bool
}

func (l *rawListener) push(c *rel.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return false
	}
	select {
	case l.q <- c:
		return true
	default:
		return false
	}
}

// Accept implements net.Listener.
func (l *rawListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.q:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; connections not yet accepted are reset.
func (l *rawListener) Close() error {
	l.mu.Lock()
	if l.shut {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.shut = true
	close(l.done)
	l.mu.Unlock()
	l.e.mu.Lock()
	if l.e.listeners[l.port] == l {
		delete(l.e.listeners, l.port)
	}
	l.e.mu.Unlock()
	for {
		select {
		case c := <-l.q:
			c.Abort(nil)
		default:
			return nil
		}
	}
}

// Addr implements net.Listener.
func (l *rawListener) Addr() net.Addr { return l.addr }
