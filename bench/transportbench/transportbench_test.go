package transportbench

import (
	"bytes"
	"context"
	"log/slog"
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
