package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
)

// peerTransport is one row of `fluxon status --peers`: the transport an
// owner's connections to a peer use, read from the owner's /metrics
// (fluxon_transport_peer_info), so it is what the owner does, not what
// the records say it could do.
type peerTransport struct {
	Owner     string `json:"owner"`
	Peer      string `json:"peer"`
	Transport string `json:"transport"`
	Conns     int    `json:"conns"`
}

// transportTotals are an owner's counters for one transport.
type transportTotals struct {
	Owner         string `json:"owner"`
	Transport     string `json:"transport"`
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	Errors        uint64 `json:"errors"`
}

// offeredTransports lists the transports an owner advertises for RPC.
func offeredTransports(m meta.Member) string {
	names := multi.Names(m.Endpoints["rpc"])
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}

// collectPeers scrapes every owner's /metrics. An owner that does not
// answer is reported in the returned errors, not skipped silently.
func collectPeers(ctx context.Context, st *clusterStatus) []string {
	var problems []string
	for _, m := range st.Members[meta.RoleOwner] {
		addr := m.Endpoints["http"]
		if addr == "" {
			problems = append(problems, m.InstanceKey+": no http endpoint")
			continue
		}
		peers, totals, err := scrapeTransport(ctx, "http://"+addr+"/metrics", m.InstanceKey)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", m.InstanceKey, err))
			continue
		}
		st.Peers = append(st.Peers, peers...)
		st.Transports = append(st.Transports, totals...)
	}
	return problems
}

func scrapeTransport(ctx context.Context, url, owner string) ([]peerTransport, []transportTotals, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseTransportMetrics(resp.Body, owner)
}

// parseTransportMetrics reads the fluxon_transport_* series of a
// Prometheus text exposition.
func parseTransportMetrics(r io.Reader, owner string) ([]peerTransport, []transportTotals, error) {
	var peers []peerTransport
	totals := map[string]*transportTotals{}
	get := func(tr string) *transportTotals {
		if totals[tr] == nil {
			totals[tr] = &transportTotals{Owner: owner, Transport: tr}
		}
		return totals[tr]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "fluxon_transport_") {
			continue
		}
		name, labels, value, ok := parseSample(line)
		if !ok {
			return nil, nil, fmt.Errorf("unreadable metrics line %q", line)
		}
		switch name {
		case "fluxon_transport_peer_info":
			peers = append(peers, peerTransport{Owner: owner, Peer: labels["peer"], Transport: labels["transport"], Conns: int(value)})
		case "fluxon_transport_bytes_total":
			t := get(labels["transport"])
			if labels["direction"] == "sent" {
				t.BytesSent = uint64(value)
			} else {
				t.BytesReceived = uint64(value)
			}
		case "fluxon_transport_errors_total":
			get(labels["transport"]).Errors = uint64(value)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	out := make([]transportTotals, 0, len(totals))
	for _, t := range totals {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Transport < out[j].Transport })
	sort.Slice(peers, func(i, j int) bool { return peers[i].Peer < peers[j].Peer })
	return peers, out, nil
}

// parseSample reads `name{k="v",...} value`; label values here are names
// and instance keys, without quotes or commas.
func parseSample(line string) (string, map[string]string, float64, bool) {
	labels := map[string]string{}
	name, rest, hasLabels := strings.Cut(line, "{")
	if hasLabels {
		var body string
		var ok bool
		body, rest, ok = strings.Cut(rest, "}")
		if !ok {
			return "", nil, 0, false
		}
		for _, kv := range strings.Split(body, ",") {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return "", nil, 0, false
			}
			labels[k] = strings.Trim(v, `"`)
		}
	} else {
		name, rest, _ = strings.Cut(line, " ")
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return strings.TrimSpace(name), labels, v, err == nil
}

func printPeers(w io.Writer, st clusterStatus, problems []string) {
	fmt.Fprintf(w, "\npeer transports (from each owner's /metrics)\n")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  OWNER\tPEER\tTRANSPORT\tCONNS")
	for _, p := range st.Peers {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\n", p.Owner, p.Peer, p.Transport, p.Conns)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ntransport counters\n")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  OWNER\tTRANSPORT\tSENT\tRECEIVED\tERRORS")
	for _, t := range st.Transports {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\n", t.Owner, t.Transport, t.BytesSent, t.BytesReceived, t.Errors)
	}
	tw.Flush()
	for _, p := range problems {
		fmt.Fprintf(w, "  unreachable: %s\n", p)
	}
}
