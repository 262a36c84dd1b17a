package multi

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats counts, per transport, the bytes and errors of every connection a
// multi Transport made or accepted, and which transport each peer is
// reached over. One Stats may be shared by several multi Transports of a
// process (an owner's RPC node and its cluster KV node) so that it is
// registered once; it is a prometheus.Collector.
type Stats struct {
	mu         sync.Mutex
	transports map[string]*counters
	// peers counts open dialed connections per (peer, transport).
	peers map[peerKey]int
	// fallbacks is the last fallback per peer endpoint string.
	fallbacks map[string]Fallback

	bytesDesc, errorsDesc, peerDesc *prometheus.Desc
}

type peerKey struct{ peer, transport string }

type counters struct {
	sent, received, errors atomic.Uint64
}

// Fallback records why a dial did not get the best transport both sides
// offer.
type Fallback struct {
	// Endpoint is the peer's endpoint string as dialed.
	Endpoint string
	// Wanted is the best common transport, Used the one connected over
	// ("" if none worked).
	Wanted, Used string
	// Reason is the error (or backoff) that skipped each better transport.
	Reason string
	At     time.Time
}

// TransportStats is one transport's counters.
type TransportStats struct {
	Name                     string
	BytesSent, BytesReceived uint64
	Errors                   uint64
}

// PeerStats says which transport this member's connections to a peer use.
type PeerStats struct {
	// Peer is the peer's instance key.
	Peer      string
	Transport string
	// Conns is the number of open connections.
	Conns int
}

// Snapshot is a copy of a Stats, sorted by name.
type Snapshot struct {
	Transports []TransportStats
	Peers      []PeerStats
	Fallbacks  []Fallback
}

// NewStats returns empty Stats.
func NewStats() *Stats {
	return &Stats{
		transports: map[string]*counters{},
		peers:      map[peerKey]int{},
		fallbacks:  map[string]Fallback{},
		bytesDesc: prometheus.NewDesc("fluxon_transport_bytes_total",
			"Message and bulk-read bytes per transport, by direction (sent, received), both for dialed and accepted connections.",
			[]string{"transport", "direction"}, nil),
		errorsDesc: prometheus.NewDesc("fluxon_transport_errors_total",
			"Failed dials and connection-level failures of calls per transport (handler errors are not counted).",
			[]string{"transport"}, nil),
		peerDesc: prometheus.NewDesc("fluxon_transport_peer_info",
			"Open connections this member dialed to a peer (instance key), labelled with the transport they use.",
			[]string{"peer", "transport"}, nil),
	}
}

func (s *Stats) counters(name string) *counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.transports[name]
	if c == nil {
		c = &counters{}
		s.transports[name] = c
	}
	return c
}

func (s *Stats) peerDelta(peer, tr string, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := peerKey{peer, tr}
	s.peers[k] += d
	if s.peers[k] <= 0 {
		delete(s.peers, k)
	}
}

func (s *Stats) setFallback(f Fallback) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fallbacks[f.Endpoint] = f
}

func (s *Stats) clearFallback(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.fallbacks, endpoint)
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out Snapshot
	for n, c := range s.transports {
		out.Transports = append(out.Transports, TransportStats{Name: n, BytesSent: c.sent.Load(), BytesReceived: c.received.Load(), Errors: c.errors.Load()})
	}
	for k, n := range s.peers {
		out.Peers = append(out.Peers, PeerStats{Peer: k.peer, Transport: k.transport, Conns: n})
	}
	for _, f := range s.fallbacks {
		out.Fallbacks = append(out.Fallbacks, f)
	}
	sort.Slice(out.Transports, func(i, j int) bool { return out.Transports[i].Name < out.Transports[j].Name })
	sort.Slice(out.Peers, func(i, j int) bool {
		a, b := out.Peers[i], out.Peers[j]
		return a.Peer < b.Peer || a.Peer == b.Peer && a.Transport < b.Transport
	})
	sort.Slice(out.Fallbacks, func(i, j int) bool { return out.Fallbacks[i].Endpoint < out.Fallbacks[j].Endpoint })
	return out
}

// Describe implements prometheus.Collector.
func (s *Stats) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.bytesDesc
	ch <- s.errorsDesc
	ch <- s.peerDesc
}

// Collect implements prometheus.Collector.
func (s *Stats) Collect(ch chan<- prometheus.Metric) {
	snap := s.Snapshot()
	for _, t := range snap.Transports {
		ch <- prometheus.MustNewConstMetric(s.bytesDesc, prometheus.CounterValue, float64(t.BytesSent), t.Name, "sent")
		ch <- prometheus.MustNewConstMetric(s.bytesDesc, prometheus.CounterValue, float64(t.BytesReceived), t.Name, "received")
		ch <- prometheus.MustNewConstMetric(s.errorsDesc, prometheus.CounterValue, float64(t.Errors), t.Name)
	}
	for _, p := range snap.Peers {
		ch <- prometheus.MustNewConstMetric(s.peerDesc, prometheus.GaugeValue, float64(p.Conns), p.Peer, p.Transport)
	}
}
