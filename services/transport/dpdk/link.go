package dpdk

import (
	"fmt"
	"net"
	"sync"

	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
)

// OpenDPDK opens an Endpoint on the DPDK port device (a vdev's name, e.g.
// "net_af_packet0" from EAL.VDevs "net_af_packet0,iface=eth1"), starting
// the process's EAL with e the first time. It returns cgo/dpdk's
// ErrNotSupported in a build without the dpdk tag.
//
// Frames a port sends to its own MAC never come back (a NIC does not loop
// them), so a process that dials its own listener needs a second port.
func OpenDPDK(e cdpdk.EAL, device string, cfg EndpointConfig) (*Endpoint, error) {
	ep := newEndpoint(device, cfg)
	p, err := cdpdk.Open(e, cdpdk.PortConfig{Device: device, EtherType: EtherType, Receive: ep.Receive,
		BeforeTx: ep.Flush, Spin: cfg.PollSpin})
	if err != nil {
		return nil, fmt.Errorf("dpdk transport: %w", err)
	}
	ep.attach(p)
	return ep, nil
}

// MemHub is an in-memory Ethernet segment: a Link per endpoint, frames
// delivered by destination MAC from one goroutine per link (like a NIC's
// receive path), dropped when a link's queue is full. A link's goroutine
// also flushes its endpoint's connections when kicked, as a DPDK port's
// EAL thread does, so coalescing runs here too. It lets the
// transport's own logic (setup, reliability, the framed protocol on top)
// run in every build, without DPDK or root.
type MemHub struct {
	mu    sync.Mutex
	links map[[6]byte]*memLink
	next  byte
}

// NewMemHub returns an empty segment.
func NewMemHub() *MemHub { return &MemHub{links: map[[6]byte]*memLink{}} }

const memQueue = 8192

// Endpoint adds an endpoint named name with a fresh MAC.
func (h *MemHub) Endpoint(name string, cfg EndpointConfig) *Endpoint {
	ep := newEndpoint(name, cfg)
	h.mu.Lock()
	h.next++
	mac := [6]byte{0x02, 0xf1, 0, 0, 0, h.next} // locally administered
	l := &memLink{hub: h, mac: mac, q: make(chan []byte, memQueue), done: make(chan struct{}), recv: ep.Receive,
		kick: make(chan struct{}, 1), flush: ep.Flush}
	h.links[mac] = l
	h.mu.Unlock()
	go l.run()
	ep.attach(l)
	return ep
}

type memLink struct {
	hub  *MemHub
	mac  [6]byte
	q    chan []byte
	done chan struct{}
	once sync.Once
	recv func([]byte)
	// kick asks run to call flush (Kicker), as a DPDK port's poller
	// runs BeforeTx.
	kick  chan struct{}
	flush func()
}

func (l *memLink) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *memLink) MAC() [6]byte { return l.mac }

func (l *memLink) Send(f []byte) error {
	if len(f) < 6 {
		return nil
	}
	l.hub.mu.Lock()
	to := l.hub.links[[6]byte(f[:6])]
	l.hub.mu.Unlock()
	if to == nil {
		return nil
	}
	select {
	case <-l.done:
		return net.ErrClosed
	case to.q <- append([]byte(nil), f...):
	default: // the receiver is behind: dropped, as a NIC would
	}
	return nil
}

func (l *memLink) run() {
	for {
		select {
		case f := <-l.q:
			l.recv(f)
		case <-l.kick:
			l.flush()
		case <-l.done:
			return
		}
	}
}

func (l *memLink) Close() error {
	l.once.Do(func() {
		l.hub.mu.Lock()
		delete(l.hub.links, l.mac)
		l.hub.mu.Unlock()
		close(l.done)
	})
	return nil
}
