package main

// The cross-host test: values of 16 MiB written through host 1 and read
// once from host 2, next to iperf3 over the same link in the same run.

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fluxon-dev/fluxon/bench/benchenv"
	"github.com/fluxon-dev/fluxon/bench/kvbench"
)

// xhostRow is one path of the cross-host test.
type xhostRow struct {
	label  string
	fluxon bool
	res    kvbench.Result
	err    error
}

// bytesPerSec is the value bytes the reads delivered per second.
func (r xhostRow) bytesPerSec() float64 {
	if r.res.Elapsed <= 0 {
		return 0
	}
	return float64(r.res.Bytes) / r.res.Elapsed.Seconds()
}

// xhostResult is the cross-host test's outcome.
type xhostResult struct {
	keys     int
	from, to string
	// iperf is iperf3's bytes per second from host 1 to host 2, measured
	// for iperfFor.
	iperf    float64
	iperfFor time.Duration
	iperfErr error
	rows     []xhostRow
}

// crossHost puts the test's values through host 1's owner and reads them
// from host 2 (fluxon-shm, copy), does the same through redis, then runs
// iperf3 from host 1 to host 2 for as long as Fluxon's reads took.
func (c *cluster) crossHost(ctx context.Context, log io.Writer, p plan) (*xhostResult, error) {
	spec := kvbench.Spec{Name: xhostName, Keys: p.xhostKeys, GetFraction: 1, Sizes: []int{xhostSize}}
	w, err := kvbench.Compile(spec, p.run.Seed)
	if err != nil {
		return nil, err
	}
	const writer, reader = 0, 1
	x := &xhostResult{keys: w.Keys, from: c.lab.Hosts[writer].Name, to: c.lab.Hosts[reader].Name}
	var fluxonTook time.Duration
	// Fluxon both ways: copying the bytes out (the fair comparison with a
	// RESP client) and holding a zero-copy view in the pool.
	paths := []struct {
		name string
		mode kvbench.GetMode
	}{{targetFluxonShm, kvbench.Copy}, {targetFluxonShm, kvbench.View}, {targetRedis, kvbench.Copy}}
	for _, path := range paths {
		name := path.name
		if name == targetFluxonShm && len(c.owners) == 0 || name == targetRedis && c.redis == nil {
			continue
		}
		row := xhostRow{label: fmt.Sprintf("%s get (%s)", name, path.mode), fluxon: name == targetFluxonShm}
		base := job{Spec: spec, Seed: p.run.Seed, Threads: 1, Mode: path.mode, AllKeys: true}
		put := base
		put.Phase, put.Target = phasePreload, c.target(name, writer)
		if r := c.worker(ctx, writer, put); r.Err != "" {
			row.err = fmt.Errorf("put through %s: %s", x.from, r.Err)
		} else {
			get := base
			get.Phase, get.Target = phaseGetAll, c.target(name, reader)
			r := c.worker(ctx, reader, get)
			switch {
			case r.Err != "":
				row.err = fmt.Errorf("get from %s: %s", x.to, r.Err)
			case r.Result != nil:
				row.res = *r.Result
				row.err = row.res.Err
			}
		}
		if ctx.Err() != nil {
			return x, ctx.Err()
		}
		if name == targetFluxonShm && path.mode == kvbench.Copy {
			fluxonTook = row.res.Elapsed
		}
		x.rows = append(x.rows, row)
		fmt.Fprintf(log, "%s %s: %d of %d values read from %s, %.1f MB/s\n", xhostName, name, row.res.Gets-row.res.Misses, w.Keys, x.to, row.bytesPerSec()/1e6)
		clear := base
		clear.Phase = phaseClear
		for _, i := range []int{writer, reader} {
			clear.Target = c.target(name, i)
			if r := c.worker(ctx, i, clear); r.Err != "" {
				return x, fmt.Errorf("%s: clearing %s on %s: %s", name, xhostName, c.lab.Hosts[i].Name, r.Err)
			}
		}
	}
	ip, err := benchenv.NewIperf3()
	if err != nil {
		return x, err
	}
	// The same duration as Fluxon's reads, in whole seconds (iperf3's unit),
	// at least the plan's run length when there was nothing to time.
	x.iperfFor = fluxonTook
	if fluxonTook < time.Second {
		x.iperfFor = max(min(p.run.Duration, 10*time.Second), time.Second)
	}
	x.iperfFor = x.iperfFor.Round(time.Second)
	x.iperf, x.iperfErr = ip.Measure(ctx, filepath.Join(c.dir, "redis"), c.lab.Hosts[writer].NS, c.lab.Hosts[writer].IP, c.lab.Hosts[reader].NS, x.iperfFor)
	if ctx.Err() != nil {
		return x, ctx.Err()
	}
	fmt.Fprintf(log, "iperf3 %s -> %s: %.1f MB/s over %s\n", x.from, x.to, x.iperf/1e6, x.iperfFor)
	return x, nil
}

// print writes the cross-host table: each path's MB/s as a share of
// iperf3's over the same link.
func (x *xhostResult) print(w io.Writer) error {
	fmt.Fprintf(w, "cross-host: %d values of 16MiB put through %s's owner, each read once from %s (1 client); iperf3 -R, 1 stream, %s -> %s\n",
		x.keys, x.from, x.to, x.from, x.to)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "path\tread\tmiss\tMB/s\tp50\tp99\tvs iperf3\t\n")
	if x.iperfErr != nil {
		fmt.Fprintf(tw, "iperf3 (%s)\t-\t-\t-\t-\t-\tFAILED\t\n", x.iperfFor)
	} else {
		fmt.Fprintf(tw, "iperf3 (%s)\t-\t-\t%.1f\t-\t-\tpeer\t\n", x.iperfFor, x.iperf/1e6)
	}
	for _, r := range x.rows {
		read := r.res.Gets - r.res.Misses
		ratio, rate := "n/a", "-"
		if read > 0 {
			rate = fmt.Sprintf("%.1f", r.bytesPerSec()/1e6)
			if x.iperfErr == nil && x.iperf > 0 {
				ratio = fmt.Sprintf("%.0f%%", 100*r.bytesPerSec()/x.iperf)
			}
		}
		if r.err != nil {
			ratio = "FAILED"
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%s\t%s\t%s\t%s\t\n", r.label, read, x.keys, r.res.Misses, rate,
			kvbench.FormatDuration(r.res.GetLatency.Percentile(0.5)), kvbench.FormatDuration(r.res.GetLatency.Percentile(0.99)), ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeTrimmed(w, b.String()); err != nil {
		return err
	}
	if x.iperfErr != nil {
		fmt.Fprintf(w, "iperf3 FAILED: %v\n", x.iperfErr)
	}
	for _, r := range x.rows {
		switch {
		case r.err != nil:
			fmt.Fprintf(w, "FAILED %s: %v\n", r.label, r.err)
		case r.res.Misses > 0:
			fmt.Fprintf(w, "%s: %d of %d reads from %s missed: the owners do not share keys (yet), so a value put through %s is not found from %s\n",
				r.label, r.res.Misses, x.keys, x.to, x.from, x.to)
		}
	}
	for _, r := range x.rows {
		if !r.fluxon || r.err != nil || x.iperfErr != nil || x.iperf <= 0 {
			continue
		}
		verdict := "met"
		if r.res.Misses > 0 {
			verdict = "not measurable (misses)"
		} else if r.bytesPerSec()/x.iperf < xhostTarget {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "target: %s at >= %.0f%% of iperf3: %s\n", r.label, 100*xhostTarget, verdict)
	}
	return nil
}

// writeTrimmed writes text with the trailing blanks of each line removed
// (a right-aligned tabwriter pads every cell).
func writeTrimmed(w io.Writer, text string) error {
	for _, line := range strings.SplitAfter(text, "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}
