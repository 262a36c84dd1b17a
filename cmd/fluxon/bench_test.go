package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
)

// tinyBench is a plan small enough for a unit test: two sizes, one
// concurrency, a few operations per cell.
var tinyBench = []string{"--sizes", "64,4096", "--concurrency", "1", "--duration", "5ms", "--min-ops", "3"}

// benchRow matches a table row of transport tr at size: every cell
// measured (ops, p50, p99, stream MB/s, read MB/s are numbers).
func benchRow(tr, size string) *regexp.Regexp {
	num := `[0-9]+(\.[0-9]+)?`
	return regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(tr) + `\s+` + regexp.QuoteMeta(size) + `\s+1\s+` +
		`[0-9]+\s+` + num + `\s+` + num + `\s+` + num + `x\s+` + num + `\s+` + num + `%\s+` + num + `\s+` + num + `%`)
}

func noRDMADevice(t *testing.T) {
	t.Helper()
	if _, err := cgordma.Devices(); err == nil {
		t.Skip("this host has an RDMA device; the skip reason is for hosts without one")
	}
}

// fluxon bench transport over loopback: tcp has a measured row per size;
// rdma, with no device here, and dpdk, with no port given (or not built
// in), are listed as skipped with the reason.
func TestBenchTransportLoopback(t *testing.T) {
	noRDMADevice(t)
	r := newRoot()
	var out bytes.Buffer
	r.SetOut(&out)
	r.SetArgs(append([]string{"bench", "transport", "--transports", "tcp,rdma,dpdk"}, tinyBench...))
	require.NoError(t, r.Execute())
	s := out.String()
	require.Contains(t, s, "transport benchmark over loopback")
	require.Regexp(t, benchRow("tcp", "64 B"), s)
	require.Regexp(t, benchRow("tcp", "4 KiB"), s)
	require.Regexp(t, `(?m)^  skipped: rdma: rdma transport: no RDMA device`, s)
	require.Regexp(t, `(?m)^  skipped: dpdk: dpdk: (not in this build|no DPDK port configured; give --dpdk-address)`, s)
	require.NotRegexp(t, `(?m)^\s*(rdma|dpdk)\s+64 B`, s, "skipped transports have no rows")
}

// The two-host form on one host: --listen serves until cancelled and says
// where; --connect measures it and reports the server's skipped transports
// with the server's reason.
func TestBenchTransportListenConnect(t *testing.T) {
	noRDMADevice(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	defer pr.Close()
	srv := newRoot()
	srv.SetOut(pw)
	srv.SetArgs([]string{"bench", "transport", "--listen", "127.0.0.1:0", "--transports", "tcp,websocket,rdma"})
	done := make(chan error, 1)
	go func() { done <- srv.ExecuteContext(ctx) }()

	// What it prints before it waits: where it listens, what it serves, and
	// what it skips (the last line here: rdma, skipped).
	var served []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		served = append(served, sc.Text())
		if strings.HasPrefix(sc.Text(), "  skipped: rdma") {
			break
		}
	}
	require.NoError(t, sc.Err())
	banner := strings.Join(served, "\n")
	m := regexp.MustCompile(`listening on (127\.0\.0\.1:[0-9]+)`).FindStringSubmatch(banner)
	require.NotNil(t, m, "the server never said where it listens: %q", banner)
	addr := m[1]
	require.Regexp(t, `(?m)^  serving: websocket 127\.0\.0\.1:[0-9]+`, banner)
	require.Regexp(t, `(?m)^  skipped: rdma: rdma transport: no RDMA device`, banner)

	cli := newRoot()
	var out bytes.Buffer
	cli.SetOut(&out)
	cli.SetArgs(append([]string{"bench", "transport", "--connect", addr, "--transports", "tcp,websocket,rdma"}, tinyBench...))
	require.NoError(t, cli.Execute())
	s := out.String()
	require.Contains(t, s, "transport benchmark over the network to "+addr)
	require.Regexp(t, benchRow("tcp", "64 B"), s)
	require.Regexp(t, benchRow("websocket", "4 KiB"), s)
	require.Regexp(t, `(?m)^  skipped: rdma: on the server: rdma transport: no RDMA device`, s)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("--listen did not stop when its context ended")
	}
}

// Flags that cannot work are usage errors, with the fix in the message.
func TestBenchTransportUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--sizes", "0"},
		{"--transports", "tcp,carrier-pigeon"},
		{"--concurrency", "0"},
	} {
		r := newRoot()
		r.SetOut(&bytes.Buffer{})
		r.SetArgs(append([]string{"bench", "transport"}, args...))
		err := r.Execute()
		var ue usageError
		require.ErrorAs(t, err, &ue, "%v", args)
		require.True(t, strings.Contains(err.Error(), args[0]), "%v: %v names the flag", args, err)
	}
}
