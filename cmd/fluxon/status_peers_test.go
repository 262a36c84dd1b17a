package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStatusPeersParse reads series in the shape multi.Stats exposes
// them (names and labels from services/transport/multi/stats.go).
func TestStatusPeersParse(t *testing.T) {
	text := `# HELP fluxon_transport_bytes_total x
# TYPE fluxon_transport_bytes_total counter
fluxon_transport_bytes_total{direction="received",transport="quic"} 3000
fluxon_transport_bytes_total{direction="sent",transport="quic"} 3006
fluxon_transport_errors_total{transport="quic"} 2
fluxon_transport_peer_info{peer="o2",transport="quic"} 2
fluxon_transport_peer_info{peer="o3",transport="tcp"} 1
fluxon_member_info{role="owner"} 1
`
	peers, totals, err := parseTransportMetrics(strings.NewReader(text), "o1")
	require.NoError(t, err)
	require.Equal(t, []peerTransport{{Owner: "o1", Peer: "o2", Transport: "quic", Conns: 2}, {Owner: "o1", Peer: "o3", Transport: "tcp", Conns: 1}}, peers)
	require.Equal(t, []transportTotals{{Owner: "o1", Transport: "quic", BytesSent: 3006, BytesReceived: 3000, Errors: 2}}, totals)

	var out bytes.Buffer
	printPeers(&out, clusterStatus{Peers: peers, Transports: totals}, []string{"o4: connection refused"})
	require.Regexp(t, `o1\s+o2\s+quic\s+2`, out.String())
	require.Contains(t, out.String(), "unreachable: o4")

	_, _, err = parseTransportMetrics(strings.NewReader("fluxon_transport_peer_info{peer=\"x\" 1\n"), "o1")
	require.Error(t, err)
}
