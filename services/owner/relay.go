package owner

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
	"github.com/fluxon-dev/fluxon/services/transport/relay"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// RelayEndpointKey is the member endpoint where an owner's relay listens.
const RelayEndpointKey = "relay"

// Timings of the reachability probe.
const (
	// ReachProbeInterval is how often an owner probes the other members'
	// relays and republishes whom it reaches.
	ReachProbeInterval = 2 * time.Second
	// ReachProbeTimeout bounds one TCP connect of a probe.
	ReachProbeTimeout = 500 * time.Millisecond
	// ReachTTL is the lease of a reachability record: a few missed probes.
	ReachTTL = 4 * ReachProbeInterval
)

// startRelay starts the owner's relay (network.relay) on a port of its own
// on the host of listen.transport, and the loop that probes the other
// members and publishes the reachability graph. Without etcd or with
// relaying off it does nothing and the owner dials directly only.
func (o *Owner) startRelay(cfg *config.Config, instanceKey string, log *slog.Logger, deps Deps) error {
	if deps.Meta == nil || !cfg.Network.Relay {
		return nil
	}
	host, _, err := net.SplitHostPort(cfg.Listen.Transport)
	if err != nil {
		return fmt.Errorf("listen.transport %q: %w; use host:port", cfg.Listen.Transport, err)
	}
	addr := net.JoinHostPort(host, "0")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("relay listener on %s (the host of listen.transport): %w", addr, err)
	}
	srv := relay.Serve(ln, relay.ServerOptions{ID: instanceKey, Log: log})
	o.closers = append(o.closers, srv.Close)
	o.Endpoints[RelayEndpointKey] = advertised(srv.Addr(), cfg.Network.AdvertiseAddress)

	dir := &liveDirectory{}
	dir.d.Store(&relay.StaticDirectory{})
	o.relayRouter = &relay.GraphRouter{Self: instanceKey, Dir: dir}
	o.relaySelf = instanceKey
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		reachLoop(ctx, deps.Meta, instanceKey, dir, log.With("component", "relay"))
	}()
	o.closers = append(o.closers, func() error { cancel(); wg.Wait(); return nil })
	return nil
}

// dialVia wraps tr so that members it cannot reach directly are dialed
// through relays; tr unchanged when this owner does not relay.
// Direct dials take the best transport both ends offer (mt); a stream
// through relays runs the tcp transport (tc) to the peer's tcp address.
func (o *Owner) dialVia(mt *multi.Transport, tc *tcp.Transport, log *slog.Logger) transport.Transport {
	if o.relayRouter == nil {
		return mt
	}
	return relay.NewTransport(relay.TransportOptions{Inner: tc, Direct: mt, TargetAddr: tcpAddrOf, Router: o.relayRouter, Self: o.relaySelf, Log: log})
}

// tcpAddrOf is the tcp address in an endpoint string of several transports.
func tcpAddrOf(endpoints string) (string, error) {
	e, err := multi.Parse(endpoints)
	if err != nil {
		return "", err
	}
	a, ok := e[tcp.Name]
	if !ok {
		return "", fmt.Errorf("%s offers no tcp address, which relays need", endpoints)
	}
	return a, nil
}

// liveDirectory is the relay.Directory the reach loop keeps current.
type liveDirectory struct {
	d atomic.Pointer[relay.StaticDirectory]
}

func (l *liveDirectory) MemberAt(addr string) (string, bool) { return l.d.Load().MemberAt(addr) }
func (l *liveDirectory) RelayAddr(id string) string          { return l.d.Load().RelayAddr(id) }
func (l *liveDirectory) Graph() relay.Graph                  { return l.d.Load().Graph() }

// buildDirectory maps every endpoint of every member to the member, and
// each member to its relay endpoint.
func buildDirectory(members []meta.Member, g relay.Graph) *relay.StaticDirectory {
	d := &relay.StaticDirectory{Endpoints: map[string]string{}, Relays: map[string]string{}, Reach: g}
	for _, m := range members {
		for name, addr := range m.Endpoints {
			if name == "socket" || addr == "" {
				continue
			}
			d.Endpoints[addr] = m.InstanceKey
		}
		if a := m.Endpoints[RelayEndpointKey]; a != "" {
			d.Relays[m.InstanceKey] = a
		}
	}
	return d
}

// reachLoop probes, publishes and reads the graph every ReachProbeInterval.
func reachLoop(ctx context.Context, store *meta.Store, self string, dir *liveDirectory, log *slog.Logger) {
	t := time.NewTicker(ReachProbeInterval)
	defer t.Stop()
	for {
		if err := reachOnce(ctx, store, self, dir); err != nil && ctx.Err() == nil {
			log.Warn("relay: reachability update failed; keeping the last graph", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func reachOnce(ctx context.Context, store *meta.Store, self string, dir *liveDirectory) error {
	members, _, err := store.Members(ctx)
	if err != nil {
		return err
	}
	targets := map[string]string{}
	for _, m := range members {
		if a := m.Endpoints[RelayEndpointKey]; a != "" && m.InstanceKey != self {
			targets[m.InstanceKey] = a
		}
	}
	reached := probe(ctx, relay.NetDial, targets)
	if err := store.PublishReach(ctx, self, reached, ReachTTL); err != nil {
		return err
	}
	g, err := store.ReachGraph(ctx)
	if err != nil {
		return err
	}
	dir.d.Store(buildDirectory(members, g))
	return nil
}

// probe connects to every target at once and lists those that accepted.
func probe(ctx context.Context, dial relay.DialFunc, targets map[string]string) []string {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []string
	for id, addr := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, ReachProbeTimeout)
			defer cancel()
			c, err := dial(pctx, addr)
			if err != nil {
				return
			}
			_ = c.Close()
			mu.Lock()
			out = append(out, id)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
