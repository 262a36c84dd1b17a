package owner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
	"github.com/fluxon-dev/fluxon/cgo/pool"
	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	cucx "github.com/fluxon-dev/fluxon/cgo/ucx"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/dpdk"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
	"github.com/fluxon-dev/fluxon/services/transport/quic"
	"github.com/fluxon-dev/fluxon/services/transport/rdma"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/ucx"
	"github.com/fluxon-dev/fluxon/services/transport/websocket"
)

// errNotConfigured: a transport that needs per-host settings this
// owner's config does not give.
var errNotConfigured = errors.New("not configured")

// errUCXWithoutRDMA: ucx in the default transport order on a host without
// an RDMA device. UCX would run over TCP there, below the tcp transport
// (bulk about half its rate on the 2-core test VM, docs/transport.md), and
// the default order would make every peer pair prefer it.
var errUCXWithoutRDMA = errors.New("not offered by default on a host without an RDMA device: UCX would run over TCP, slower than the tcp transport; list ucx in network.transports to offer it anyway")

// rdmaHost reports whether the host has an RDMA device (the devices
// rdma-core finds are those under /sys/class/infiniband: InfiniBand,
// RoCE, iWARP and soft-RoCE alike), whether or not this binary has the
// rdma build tag. A variable for tests.
var rdmaHost = func() bool {
	devs, _ := filepath.Glob("/sys/class/infiniband/*")
	return len(devs) > 0
}

// nodeTransports says how one of the owner's nodes uses its transports.
type nodeTransports struct {
	// dpdkAddr is where the node's dpdk listener goes
	// (network.dpdk.address for the RPC node; the same device on any free
	// port for the KV node).
	dpdkAddr string
}

// transportStats returns the owner's transport counters, registered on reg
// the first time: the RPC node and the cluster KV node share them.
func (o *Owner) transportStats(reg prometheus.Registerer) *multi.Stats {
	if o.tstats == nil {
		o.tstats = multi.NewStats()
		if reg != nil {
			reg.MustRegister(o.tstats)
		}
	}
	return o.tstats
}

// newTransport builds the owner's data-plane transport: every transport
// of network.transports that can run here, in that order, behind one
// multi transport. The ones that cannot run are logged once, with why.
func (o *Owner) newTransport(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, node nodeTransports) (*multi.Transport, *tcp.Transport, error) {
	topts := transport.Options{Log: log}
	tc, err := tcp.New(tcp.Options{Options: topts, Reactor: tcp.ReactorMode(cfg.Network.TCPReactorMode)})
	if err != nil {
		return nil, nil, fmt.Errorf("network.tcp_reactor_mode: %w", err)
	}
	// network.tls: quic and websocket (then wss) present this certificate
	// and verify peers against the CA; without it quic uses an in-memory
	// self-signed one and websocket is plain ws.
	tlsc := cfg.Network.TLS
	var cands []transport.Candidate
	for _, name := range cfg.Network.Transports {
		switch name {
		case config.TransportTCP:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) { return tc, nil }})
		case config.TransportQUIC:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) {
				return quic.New(quic.Options{Options: topts, CertFile: tlsc.CertFile, KeyFile: tlsc.KeyFile, CAFile: tlsc.CAFile})
			}})
		case config.TransportWebSocket:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) {
				return websocket.New(websocket.Options{Options: topts, CertFile: tlsc.CertFile, KeyFile: tlsc.KeyFile, CAFile: tlsc.CAFile})
			}})
		case config.TransportUCX:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) {
				if cucx.Supported() && cfg.Network.TransportsDefaulted && !rdmaHost() {
					return nil, errUCXWithoutRDMA
				}
				return ucx.New(ucx.Options{Options: topts})
			}})
		case config.TransportRDMA:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) {
				return o.rdmaTransport(cfg, topts, tc)
			}})
		case config.TransportDPDK:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) {
				return o.dpdkTransport(cfg, topts, node.dpdkAddr)
			}})
		}
	}
	var trs []transport.Transport
	for _, c := range cands {
		t, err := c.New()
		if err != nil {
			if !o.skipLogged {
				logNotOffered(log, c.Name, err)
			}
			continue
		}
		trs = append(trs, t)
	}
	o.skipLogged = true
	if len(trs) == 0 {
		return nil, nil, fmt.Errorf("%w: none of network.transports %v runs here; add tcp", transport.ErrNoTransport, cfg.Network.Transports)
	}
	mt, err := multi.New(multi.Options{Transports: trs, Stats: o.transportStats(reg), Log: log})
	return mt, tc, err
}

// logNotOffered says once why a transport of network.transports is not
// offered; a missing RDMA device is a warning on a line of its own, the
// one operators grep for.
func logNotOffered(log *slog.Logger, name string, err error) {
	if errors.Is(err, cgordma.ErrNoDevice) && !errors.Is(err, cgordma.ErrNotCompiled) {
		log.Warn("no RDMA device: rdma not offered; peers use the next transport of network.transports", "err", err)
		return
	}
	log.Info("transport not offered", "transport", name, "reason", err)
}

// rdmaTransport opens the RDMA device once per owner with the pool's
// segments offered to one-sided reads. Both nodes share it: the RPC node
// and the cluster KV node, whose bulk reads name pinned objects by their
// pool position (segment, offset inside it), which a one-sided READ of
// the registered segment serves as is. Its error, matching
// cgo/rdma.ErrNoDevice on a host without a device (every host these tests
// ran on so far: ibv_get_device_list finds none), is kept too, so the
// second node gets the same reason and it is logged once.
func (o *Owner) rdmaTransport(cfg *config.Config, topts transport.Options, control transport.Transport) (transport.Transport, error) {
	if o.rdma == nil && o.rdmaErr == nil {
		// The owner reports a missing device itself, once per owner
		// (logNotOffered); rdma's own once-per-process warning would repeat it.
		quiet := topts
		quiet.Log = slog.New(slog.DiscardHandler)
		rt, err := o.openRDMA(rdma.Options{Options: quiet, Control: control, DeviceNames: cfg.Network.RDMADeviceNames, Segments: o.rdmaSegments})
		if err != nil {
			o.rdmaErr = err
			return nil, err
		}
		// Closed before the pool (closers run last first): the NIC must
		// let go of the segments before they are unmapped.
		o.rdma = rt
		o.closers = append(o.closers, rt.Close)
	}
	if o.rdmaErr != nil {
		return nil, o.rdmaErr
	}
	return o.rdma, nil
}

// openRDMA is rdma.New, with no typed nil in the interface on failure.
func openRDMA(o rdma.Options) (ClosableTransport, error) {
	t, err := rdma.New(o)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// rdmaSegments lists the pool's segments for rdma to register.
func (o *Owner) rdmaSegments() []rdma.Segment {
	segs, err := o.Pool.Segments()
	if err != nil {
		o.log.Error("rdma: listing the pool's segments failed; peers cannot read this owner one-sided", "err", err)
		return nil
	}
	return rdmaSegments(segs)
}

// rdmaSegments maps pool segments to rdma's: segment i of the pool is
// RemoteRef.Segment i, so a peer reads an object at pool offset off at
// segment off/SegmentSize, offset off%SegmentSize.
func rdmaSegments(segs []pool.Segment) []rdma.Segment {
	out := make([]rdma.Segment, len(segs))
	for i, s := range segs {
		out[i] = rdma.Segment{ID: s.Index, Base: s.Data, Len: s.Len}
	}
	return out
}

// dpdkTransport opens network.dpdk's port once per owner (the EAL starts
// once per process) and returns a transport listening on addr.
func (o *Owner) dpdkTransport(cfg *config.Config, topts transport.Options, addr string) (transport.Transport, error) {
	d := cfg.Network.DPDK
	if d.Address == "" {
		return nil, fmt.Errorf("dpdk: %w: set network.dpdk.address (docs/config.md) to offer it", errNotConfigured)
	}
	if o.dpdkEP == nil && o.dpdkErr == nil {
		a, _, err := dpdk.ParseAddr(d.Address)
		if err == nil {
			o.dpdkEP, err = dpdk.OpenDPDK(dpdkEAL(d), a.Device, dpdk.EndpointConfig{})
		}
		if err != nil {
			o.dpdkErr = fmt.Errorf("network.dpdk: %w", err)
		} else {
			o.closers = append(o.closers, o.dpdkEP.Close)
		}
	}
	if o.dpdkErr != nil {
		return nil, o.dpdkErr
	}
	t, err := dpdk.New(dpdk.Options{Options: topts, Endpoints: []*dpdk.Endpoint{o.dpdkEP}})
	if err != nil {
		return nil, err
	}
	return listenAt{Transport: t, addr: addr}, nil
}

// dpdkEAL turns network.dpdk into the EAL's settings.
func dpdkEAL(d config.DPDKConfig) cdpdk.EAL {
	return cdpdk.EAL{NoHuge: d.NoHuge, MemoryMB: int(uint64(d.Memory) >> 20), VDevs: d.VDevs, PCI: d.PCIDevices, Extra: d.EALArgs}
}

// dpdkAnyPort is network.dpdk.address's device on any free service port:
// where a second node of the owner (the cluster KV) listens.
func dpdkAnyPort(address string) string {
	a, _, err := dpdk.ParseAddr(address)
	if err != nil {
		return address
	}
	return "dpdk://" + a.Device + ":0"
}

// listenAt is a transport whose listeners go to addr whatever address the
// caller gives: multi hands every transport but tcp the host of
// listen.transport, which names no DPDK port.
type listenAt struct {
	transport.Transport
	addr string
}

func (l listenAt) Listen(ctx context.Context, _ string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	return l.Transport.Listen(ctx, l.addr, local, h, verify)
}

// advertisedAll applies advertised to every address of an endpoint string.
func advertisedAll(endpoints, advertise string) string {
	e, err := multi.Parse(endpoints)
	if err != nil {
		return endpoints
	}
	for k, v := range e {
		e[k] = advertised(v, advertise)
	}
	s, err := multi.Encode(e)
	if err != nil {
		return endpoints
	}
	return s
}
