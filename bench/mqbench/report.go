package mqbench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/fluxon-dev/fluxon/bench/kvbench"
)

// Target is a goal of issue 6: fluxon's msgs/s at least Ratio times
// JetStream's for every cell of a message size.
type Target struct {
	Size  int
	Ratio float64
}

// Targets of issue 6.
var Targets = []Target{{Size: 256, Ratio: 1}, {Size: 1 << 20, Ratio: 2}}

// Peer is the system fluxon is compared with.
const Peer = "jetstream"

// ratio is fluxon's msgs/s over the peer's in the same cell, or 0 when
// either is missing or failed.
func ratio(rs []Result, c Cell, sys string) float64 {
	var a, b float64
	for _, r := range rs {
		if r.Cell != c || r.Err != nil || r.Lost > 0 {
			continue
		}
		switch r.System {
		case sys:
			a = r.MsgsPerSec()
		case Peer:
			b = r.MsgsPerSec()
		}
	}
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// PrintTable prints one row per system and cell, fluxon's with its ratio
// to JetStream's msgs/s.
func PrintTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cell\tsystem\tmsgs\tmsgs/s\tMB/s\tp50 ms\tp99 ms\tdups\tlost\tbad\tsrv µs/msg\tcli µs/msg\tvs jetstream\t")
	for _, r := range rs {
		rat := ""
		if r.System != Peer {
			if x := ratio(rs, r.Cell, r.System); x > 0 {
				rat = fmt.Sprintf("%.2fx", x)
			} else {
				rat = "-"
			}
		}
		if r.Err != nil {
			rat += " FAILED"
		}
		srv, cli := r.CPUPerMsg()
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.1f\t%s\t%s\t%d\t%d\t%d\t%.1f\t%.1f\t%s\t\n", r.Cell.Key(), r.System, r.Unique,
			r.MsgsPerSec(), r.MBPerSec(), ms(r.P50), ms(r.P99), r.Dups, r.Lost, r.Bad, us(srv), us(cli), rat)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rs {
		if r.Err != nil {
			fmt.Fprintf(w, "FAILED %s %s: %v\n", r.Cell.Key(), r.System, r.Err)
		}
	}
	return nil
}

// PrintTargets says, per target, whether every cell of its size met it.
func PrintTargets(w io.Writer, rs []Result) {
	for _, t := range Targets {
		var cells []Cell
		for _, r := range rs {
			if r.Cell.Size == t.Size && r.System == Peer {
				cells = append(cells, r.Cell)
			}
		}
		if len(cells) == 0 {
			continue
		}
		met := true
		worst := 0.0
		for i, c := range cells {
			x := ratio(rs, c, "fluxon")
			if i == 0 || x < worst {
				worst = x
			}
			if x < t.Ratio {
				met = false
			}
		}
		verdict := "MET"
		if !met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "target: fluxon >= %gx JetStream msgs/s at %s: %s (lowest ratio %.2fx over %d cells)\n",
			t.Ratio, kvbench.FormatSize(t.Size), verdict, worst, len(cells))
	}
}
