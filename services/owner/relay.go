package owner

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
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

// startRelay starts the owner's relay (network.relay) on each of
// network.relay_addresses (by default on a port of its own on the host of
// listen.transport), and the loop that probes the other members and
// publishes the reachability graph. Without etcd or with relaying off it
// does nothing and the owner dials directly only.
func (o *Owner) startRelay(cfg *config.Config, instanceKey string, log *slog.Logger, deps Deps) error {
	if deps.Meta == nil || !cfg.Network.Relay {
		return nil
	}
	lns, addrs, err := relayListeners(cfg.Listen.Transport, cfg.Network.RelayAddresses, cfg.Network.AdvertiseAddress)
	if err != nil {
		return err
	}
	enc, err := relay.EncodeAddrs(addrs)
	if err != nil {
		for _, ln := range lns {
			_ = ln.Close()
		}
		return fmt.Errorf("relay addresses: %w", err)
	}
	dir := &liveDirectory{}
	dir.d.Store(&relay.StaticDirectory{})
	srv := relay.ServeAll(lns, relay.ServerOptions{ID: instanceKey, Log: log, Dir: dir})
	o.closers = append(o.closers, srv.Close)
	o.Endpoints[RelayEndpointKey] = enc

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

// relayListeners opens the relay's listeners and says the address each
// is advertised at. With no relay_addresses: one, on a free port of the
// host of listen.transport, advertised like the other endpoints. With
// them: one per entry, exactly there (no wildcard, so the relay is
// reachable only on the networks named), advertised with the host as
// written and the port it got.
func relayListeners(listenTransport string, relayAddrs []string, advertise string) ([]net.Listener, []string, error) {
	if len(relayAddrs) == 0 {
		host, _, err := net.SplitHostPort(listenTransport)
		if err != nil {
			return nil, nil, fmt.Errorf("listen.transport %q: %w; use host:port", listenTransport, err)
		}
		addr := net.JoinHostPort(host, "0")
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("relay listener on %s (the host of listen.transport): %w", addr, err)
		}
		return []net.Listener{ln}, []string{advertised(ln.Addr().String(), advertise)}, nil
	}
	var lns []net.Listener
	var addrs []string
	for i, a := range relayAddrs {
		host, port, err := config.SplitRelayAddress(a)
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err == nil {
				lns = append(lns, ln)
				addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
				continue
			}
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
		return nil, nil, fmt.Errorf("relay listener on network.relay_addresses[%d] %q: %w", i, a, err)
	}
	return lns, addrs, nil
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
func (l *liveDirectory) RelayAddrs(id string) []string       { return l.d.Load().RelayAddrs(id) }
func (l *liveDirectory) ReachedAt(from, to string) string    { return l.d.Load().ReachedAt(from, to) }
func (l *liveDirectory) Graph() relay.Graph                  { return l.d.Load().Graph() }

// relayAddrsOf is a member's relay addresses; none if it advertises no
// relay, or a relay endpoint this build cannot read.
func relayAddrsOf(m meta.Member) []string {
	a := m.Endpoints[RelayEndpointKey]
	if a == "" {
		return nil
	}
	addrs, err := relay.ParseAddrs(a)
	if err != nil {
		return nil
	}
	return addrs
}

// buildDirectory maps every endpoint of every member to the member, each
// member to its relay addresses, and keeps the graph and the addresses
// each probe reached from the members' reach records.
func buildDirectory(members []meta.Member, reach map[string]meta.ReachRecord) *relay.StaticDirectory {
	d := &relay.StaticDirectory{Endpoints: map[string]string{}, Relays: map[string][]string{}, ReachedAddr: map[string]map[string]string{}, Reach: relay.Graph{}}
	for _, m := range members {
		for name, addr := range m.Endpoints {
			if name == "socket" || name == RelayEndpointKey || addr == "" {
				continue
			}
			d.Endpoints[addr] = m.InstanceKey
		}
		if addrs := relayAddrsOf(m); len(addrs) > 0 {
			d.Relays[m.InstanceKey] = addrs
			for _, a := range addrs {
				d.Endpoints[a] = m.InstanceKey
			}
		}
	}
	for id, rec := range reach {
		d.Reach[id] = rec.Reaches
		if len(rec.At) > 0 {
			d.ReachedAddr[id] = rec.At
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
	targets := map[string][]string{}
	for _, m := range members {
		if addrs := relayAddrsOf(m); len(addrs) > 0 && m.InstanceKey != self {
			targets[m.InstanceKey] = addrs
		}
	}
	reached := probe(ctx, relay.NetDial, targets)
	for id := range reached {
		if len(targets[id]) == 1 {
			reached[id] = "" // the only address: the record need not say
		}
	}
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

// probe connects to every address of every target at once and maps each
// target that accepted to the first of its addresses (in its order of
// preference) that did.
func probe(ctx context.Context, dial relay.DialFunc, targets map[string][]string) map[string]string {
	var mu sync.Mutex
	var wg sync.WaitGroup
	best := map[string]int{}
	for id, addrs := range targets {
		for i, addr := range addrs {
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
				if j, ok := best[id]; !ok || i < j {
					best[id] = i
				}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	out := make(map[string]string, len(best))
	for id, i := range best {
		out[id] = targets[id][i]
	}
	return out
}
