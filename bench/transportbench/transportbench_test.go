package transportbench

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLoopback runs a tiny plan over loopback for tcp and websocket: every
// cell completes without errors, and the report compares them.
func TestLoopback(t *testing.T) {
	env := Env{Log: slog.New(slog.DiscardHandler)}
	s, err := Serve(context.Background(), "127.0.0.1:0", []string{"tcp", "websocket", "nosuch"}, env)
	require.NoError(t, err)
	defer s.Close()
	require.Contains(t, s.Skipped, "nosuch")
	var rows []Row
	for _, v := range []string{"tcp", "websocket"} {
		require.NoError(t, Measure(context.Background(), v, s.Addrs[v], Plan{Sizes: []int{64, 70000}, Concurrency: []int{1, 3}, Duration: 20 * time.Millisecond, MinOps: 5}, env,
			func(r Row) { rows = append(rows, r) }))
	}
	require.Len(t, rows, 2*2*2*3, "transports x sizes x concurrencies x modes (pingpong, stream, read)")
	for _, r := range rows {
		require.Empty(t, r.Err, "%+v", r)
		require.GreaterOrEqual(t, r.Ops, 5, "%+v", r)
		require.Positive(t, r.MBps, "%+v", r)
	}
	var out bytes.Buffer
	Print(&out, rows, Peers{Link: "loopback"}, s.Skipped)
	require.Contains(t, out.String(), "websocket")
	require.Contains(t, out.String(), "100%", "tcp against itself")
	require.Contains(t, out.String(), "skipped: nosuch")
}

func TestPrintRounds(t *testing.T) {
	var out bytes.Buffer
	printRounds(&out, []Round{{P50: 12, CP50: 8}, {P50: 9, CP50: 9}, {P50: 20, CP50: 10}, {P50: 11, CP50: 10}}, nil)
	// Ratios 1.5, 1.0, 2.0, 1.1: median (1.1+1.5)/2 = 1.3, range 1.0-2.0.
	for _, want := range []string{"over 4 interleaved rounds = 1.30x", "range 1.00-2.00x", "12.0/8.0 9.0/9.0 20.0/10.0 11.0/10.0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printRounds wrote %q, want %q in it", out.String(), want)
		}
	}
	out.Reset()
	printRounds(&out, []Round{{P50: 10, CP50: 8}}, errors.New("cping client: exit 1"))
	if !strings.Contains(out.String(), "FAILED after 1: cping client: exit 1") || !strings.Contains(out.String(), "= 1.25x") {
		t.Errorf("printRounds with an error wrote %q", out.String())
	}
}
