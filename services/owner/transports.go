package owner

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
	"github.com/fluxon-dev/fluxon/services/transport/quic"
	"github.com/fluxon-dev/fluxon/services/transport/rdma"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/ucx"
	"github.com/fluxon-dev/fluxon/services/transport/websocket"
)

// errNotWired: a transport that exists but that the owner cannot offer yet.
var errNotWired = errors.New("not offered by the owner yet")

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
func (o *Owner) newTransport(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*multi.Transport, *tcp.Transport, error) {
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
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) { return ucx.New(ucx.Options{Options: topts}) }})
		case config.TransportRDMA:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) {
				rt, err := rdma.New(rdma.Options{Options: topts, Control: tc, DeviceNames: cfg.Network.RDMADeviceNames})
				if err != nil {
					return nil, err
				}
				_ = rt.Close()
				// One-sided reads need the pool's segments registered, which
				// the owner does not hand to rdma yet: offering it would
				// advertise reads that fail.
				return nil, fmt.Errorf("rdma: %w (pool segment registration)", errNotWired)
			}})
		case config.TransportDPDK:
			cands = append(cands, transport.Candidate{Name: name, New: func() (transport.Transport, error) {
				return nil, fmt.Errorf("dpdk: %w (no dpdk transport in this build)", errNotWired)
			}})
		}
	}
	var trs []transport.Transport
	for _, c := range cands {
		t, err := c.New()
		if err != nil {
			if !o.skipLogged {
				log.Info("transport not offered", "transport", c.Name, "reason", err)
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
