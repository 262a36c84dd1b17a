package transportbench

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// Peers are the non-Fluxon measurements of the same link in the same run.
type Peers struct {
	// Link describes where everything ran ("loopback", "veth 10.0.0.1 -> 10.0.0.2").
	Link string
	// IperfBps is iperf3's single-stream bytes per second (0: not run).
	IperfBps float64
	IperfErr error
	// CpingP50, CpingP99: the C ping-pong's 64 B round trip, microseconds,
	// with blocking reads; SpinP50, SpinP99: the same with both ends
	// polling their socket (the floor for a busy-polling transport).
	CpingP50, CpingP99 float64
	CpingErr           error
	SpinP50, SpinP99   float64
	SpinErr            error
	// Rounds alternate the spinning C ping-pong with tcp busy-poll's 64 B
	// round trip (--rounds), for a ratio that a moment's noise on a
	// shared machine does not decide.
	Rounds    []Round
	RoundsErr error
}

// Round is one interleaved round: busy-poll's p50 and then the spinning C
// ping-pong's, microseconds.
type Round struct {
	P50, CP50 float64
}

// BulkSize is the message size whose stream at concurrency 1 is compared
// with iperf3 and across transports: the largest one.
const BulkSize = 16 << 20

// SmallSize is the size whose round trip is compared with the C ping-pong.
const SmallSize = 64

func find(rows []Row, tr, mode string, size, conc int) (Row, bool) {
	for _, r := range rows {
		if r.Transport == tr && r.Mode == mode && r.Size == size && r.Concurrency == conc && r.Err == "" && r.Ops > 0 {
			return r, true
		}
	}
	return Row{}, false
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// Print writes the table (every cell, with ratios against tcp of the same
// size, mode and concurrency) and the comparisons with the peers.
func Print(w io.Writer, rows []Row, peers Peers, skipped map[string]string) {
	fmt.Fprintf(w, "transport benchmark over %s\n", peers.Link)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "transport\tsize\tconc\tpp ops\tpp p50 us\tpp p99 us\tp50 vs tcp\tstream MB/s\tvs tcp\tread MB/s\tvs tcp\t\n")
	type key struct {
		tr         string
		size, conc int
	}
	var order []key
	seen := map[key]bool{}
	for _, r := range rows {
		k := key{r.Transport, r.Size, r.Concurrency}
		if !seen[k] {
			seen[k] = true
			order = append(order, k)
		}
	}
	for _, k := range order {
		pp, okPP := find(rows, k.tr, "pingpong", k.size, k.conc)
		st, okST := find(rows, k.tr, "stream", k.size, k.conc)
		tpp, okTPP := find(rows, "tcp", "pingpong", k.size, k.conc)
		tst, okTST := find(rows, "tcp", "stream", k.size, k.conc)
		rd, okRD := find(rows, k.tr, "read", k.size, k.conc)
		trd, okTRD := find(rows, "tcp", "read", k.size, k.conc)
		cells := []string{k.tr, sizeName(k.size), fmt.Sprint(k.conc), "-", "-", "-", "-", "-", "-", "-", "-"}
		if okRD {
			cells[9] = fmt.Sprintf("%.1f", rd.MBps)
			if okTRD && trd.MBps > 0 {
				cells[10] = fmt.Sprintf("%.0f%%", 100*rd.MBps/trd.MBps)
			}
		}
		if okPP {
			cells[3], cells[4], cells[5] = fmt.Sprint(pp.Ops), fmt.Sprintf("%.1f", pp.P50), fmt.Sprintf("%.1f", pp.P99)
			if okTPP && tpp.P50 > 0 {
				cells[6] = fmt.Sprintf("%.2fx", pp.P50/tpp.P50)
			}
		} else {
			cells[3] = "FAILED"
		}
		if okST {
			cells[7] = fmt.Sprintf("%.1f", st.MBps)
			if okTST && tst.MBps > 0 {
				cells[8] = fmt.Sprintf("%.0f%%", 100*st.MBps/tst.MBps)
			}
		} else {
			cells[7] = "FAILED"
		}
		for _, c := range cells {
			fmt.Fprint(tw, c+"\t")
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Err != "" {
			fmt.Fprintf(w, "  error: %s %s %s conc %d: %s\n", r.Transport, r.Mode, sizeName(r.Size), r.Concurrency, r.Err)
		}
	}
	printSkipped(w, skipped)

	fmt.Fprintf(w, "\nagainst the peers (same link, same run):\n")
	// Bulk is the transport's bulk path: ReadRemote of a range straight
	// into the caller's buffer (what a cross-host get does). One-way
	// messages (stream) copy into a fresh buffer on the far side.
	bulkMode := "read"
	tcpBulk, okBulk := find(rows, "tcp", bulkMode, BulkSize, 1)
	if !okBulk {
		bulkMode = "stream"
		tcpBulk, okBulk = find(rows, "tcp", bulkMode, BulkSize, 1)
	}
	switch {
	case peers.IperfErr != nil:
		fmt.Fprintf(w, "  iperf3: FAILED: %v\n", peers.IperfErr)
	case peers.IperfBps == 0:
		fmt.Fprintf(w, "  iperf3: not run (only with --netns)\n")
	case !okBulk:
		fmt.Fprintf(w, "  iperf3 single stream %.1f MB/s; tcp bulk not measured\n", peers.IperfBps/1e6)
	default:
		fmt.Fprintf(w, "  tcp bulk (%s %s, conc 1) %.1f MB/s = %.0f%% of iperf3 single stream %.1f MB/s (target >= 80%%)\n",
			bulkMode, sizeName(BulkSize), tcpBulk.MBps, 100*tcpBulk.MBps*1e6/peers.IperfBps, peers.IperfBps/1e6)
	}
	bp, okBP := find(rows, "tcp-busypoll", "pingpong", SmallSize, 1)
	ev, okEv := find(rows, "tcp", "pingpong", SmallSize, 1)
	cping(w, "tcp busy-poll", "spinning", bp, okBP, peers.SpinP50, peers.SpinP99, peers.SpinErr, " (target <= 1.2x)")
	printRounds(w, peers.Rounds, peers.RoundsErr)
	cping(w, "tcp (event-driven)", "blocking", ev, okEv, peers.CpingP50, peers.CpingP99, peers.CpingErr, "")
	for _, tr := range []string{"quic", "websocket", "ucx", "rdma", "dpdk"} {
		r, ok := find(rows, tr, bulkMode, BulkSize, 1)
		if !ok || !okBulk {
			fmt.Fprintf(w, "  %s bulk vs tcp: not measured\n", tr)
			continue
		}
		fmt.Fprintf(w, "  %s bulk %.1f MB/s = %.0f%% of tcp\n", tr, r.MBps, 100*r.MBps/tcpBulk.MBps)
	}
}

// cping prints one 64 B round trip against a C ping-pong's.
func cping(w io.Writer, what, kind string, r Row, ok bool, p50, p99 float64, err error, target string) {
	switch {
	case err != nil:
		fmt.Fprintf(w, "  cping (%s): FAILED: %v\n", kind, err)
	case p50 == 0:
		fmt.Fprintf(w, "  cping (%s): not run\n", kind)
	case !ok:
		fmt.Fprintf(w, "  cping (%s) 64 B RTT p50 %.1f us; %s not measured\n", kind, p50, what)
	default:
		fmt.Fprintf(w, "  %s 64 B RTT p50 %.1f us = %.2fx the %s C ping-pong's %.1f us (p99 %.1f vs %.1f)%s\n",
			what, r.P50, r.P50/p50, kind, p50, r.P99, p99, target)
	}
}

// printRounds prints the interleaved rounds' ratios and their median.
func printRounds(w io.Writer, rounds []Round, err error) {
	if err != nil {
		fmt.Fprintf(w, "  interleaved rounds: FAILED after %d: %v\n", len(rounds), err)
	}
	if len(rounds) == 0 {
		return
	}
	ratios := make([]float64, len(rounds))
	per := ""
	for i, r := range rounds {
		ratios[i] = r.P50 / r.CP50
		per += fmt.Sprintf(" %.1f/%.1f", r.P50, r.CP50)
	}
	sorted := slices.Clone(ratios)
	slices.Sort(sorted)
	med := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		med = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	fmt.Fprintf(w, "  tcp busy-poll 64 B RTT p50 over %d interleaved rounds = %.2fx the spinning C ping-pong's, median (range %.2f-%.2fx; us per round, busy-poll/C:%s) (target <= 1.2x)\n",
		len(rounds), med, sorted[0], sorted[len(sorted)-1], per)
}
