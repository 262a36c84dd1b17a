package kvbench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// table is a right-aligned tabwriter whose lines carry no trailing blanks.
type table struct {
	*tabwriter.Writer
	buf bytes.Buffer
	out io.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	return t
}

func (t *table) flush() error {
	if err := t.Flush(); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(t.buf.String(), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(t.out, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// Ratio returns r's throughput (ops/s) over that of its peer in results:
// the row of the peer target for the same workload whose get mode is Copy
// (or NoGet), the fair comparison for every mode. ok is false when there is
// no usable peer row.
func Ratio(results []Result, r Result, peer string) (ratio float64, ok bool) {
	for _, p := range results {
		if p.Target != peer || p.Workload != r.Workload || (p.Mode != Copy && p.Mode != NoGet) {
			continue
		}
		if p.Err != nil || p.OpsPerSec() == 0 {
			return 0, false
		}
		return r.OpsPerSec() / p.OpsPerSec(), true
	}
	return 0, false
}

// RatioRange returns the lowest and highest per-round ratio of r's rows
// against the peer's rows of the same round (see Ratio), over raw,
// uncombined results. ok is false when no round has both.
func RatioRange(raw []Result, r Result, peer string) (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range raw {
		if x.Workload != r.Workload || x.Target != r.Target || x.Mode != r.Mode || x.Err != nil {
			continue
		}
		var round []Result
		for _, y := range raw {
			if y.Round == x.Round {
				round = append(round, y)
			}
		}
		if v, found := Ratio(round, x, peer); found {
			lo, hi, ok = min(lo, v), max(hi, v), true
		}
	}
	return lo, hi, ok
}

// FormatDuration prints a latency with three significant digits.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + "ms"
	}
	return sig3(d.Seconds()) + "s"
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// FormatSize prints a byte count in the unit it was most likely written in:
// binary (KiB, MiB) when it is a multiple of one, else decimal (KB, MB).
func FormatSize(n int) string {
	units := []struct {
		name string
		size int
	}{{"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}}
	for _, u := range units {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	for _, u := range units {
		if n >= u.size {
			return fmt.Sprintf("%.1f%s", float64(n)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// FormatSizes joins FormatSize of each size with "/".
func FormatSizes(sizes []int) string {
	s := make([]string, len(sizes))
	for i, n := range sizes {
		s[i] = FormatSize(n)
	}
	return strings.Join(s, "/")
}

// PrintTable writes one row per workload, target and get mode, its rounds
// combined (see Combine): throughput, latency percentiles over every
// operation, misses, the server's CPU, and the throughput ratio against the
// peer target of the same workload (see Ratio). With several rounds, a last
// column gives the range of the per-round ratios.
func PrintTable(w io.Writer, raw []Result, peer string) error {
	results := Combine(raw)
	rounds := 0
	for _, r := range raw {
		rounds = max(rounds, r.Round+1)
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "workload\ttarget\tget\tthreads\tops\tops/s\tMiB/s\tp50\tp99\tp999\tmiss\tsrv cores\tvs %s\t", peer)
	if rounds > 1 {
		fmt.Fprintf(tw, "%d rounds\t", rounds)
	}
	fmt.Fprintln(tw)
	for _, r := range results {
		ratio := "n/a"
		switch {
		case r.Target == peer:
			ratio = "peer"
		default:
			if v, ok := Ratio(results, r, peer); ok {
				ratio = fmt.Sprintf("%.2fx", v)
			}
		}
		if r.Err != nil {
			ratio = "FAILED"
		}
		miss := "0"
		if r.Misses > 0 {
			miss = fmt.Sprintf("%.1f%%", 100*float64(r.Misses)/float64(max(r.Gets, 1)))
		}
		cores := "-"
		if r.ServerCores > 0 {
			cores = fmt.Sprintf("%.2f", r.ServerCores)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t",
			r.Workload, r.Target, r.Mode, r.Threads, r.Ops, r.OpsPerSec(), r.MiBPerSec(),
			FormatDuration(r.Latency.Percentile(0.50)), FormatDuration(r.Latency.Percentile(0.99)),
			FormatDuration(r.Latency.Percentile(0.999)), miss, cores, ratio)
		if rounds > 1 {
			spread := ""
			if lo, hi, ok := RatioRange(raw, r, peer); ok && r.Target != peer {
				spread = fmt.Sprintf("%.2f-%.2fx", lo, hi)
			}
			fmt.Fprintf(tw, "%s\t", spread)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.flush(); err != nil {
		return err
	}
	for _, r := range raw {
		if r.Err != nil {
			fmt.Fprintf(w, "FAILED %s %s %s: %v\n", r.Workload, r.Target, r.Mode, r.Err)
		}
	}
	return nil
}

// PrintLatencySplit writes get and put latencies separately for each result
// that has both.
func PrintLatencySplit(w io.Writer, raw []Result) error {
	results := Combine(raw)
	tw := newTable(w)
	fmt.Fprintf(tw, "workload\ttarget\tget\tgets\tget p50\tget p99\tputs\tput p50\tput p99\t\n")
	for _, r := range results {
		if r.Gets == 0 || r.Puts == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t\n", r.Workload, r.Target, r.Mode,
			r.Gets, FormatDuration(r.GetLatency.Percentile(0.5)), FormatDuration(r.GetLatency.Percentile(0.99)),
			r.Puts, FormatDuration(r.PutLatency.Percentile(0.5)), FormatDuration(r.PutLatency.Percentile(0.99)))
	}
	return tw.flush()
}
