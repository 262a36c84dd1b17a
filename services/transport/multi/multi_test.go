package multi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
	"github.com/fluxon-dev/fluxon/services/transport/websocket"
)

var quiet = slog.New(slog.DiscardHandler)

// renamed is tcp under another name whose dials fail while broken is set:
// a better transport that cannot reach the peer.
type renamed struct {
	transport.Transport
	name   string
	broken atomic.Bool
	dials  atomic.Int32
}

var errBroken = errors.New("simulated: no route over this transport")

func (r *renamed) Name() string { return r.name }

func (r *renamed) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	r.dials.Add(1)
	if r.broken.Load() {
		return nil, errBroken
	}
	return r.Transport.Dial(ctx, addr, local, verify)
}

func newTCP(t *testing.T) *tcp.Transport {
	tr, err := tcp.New(tcp.Options{Options: transport.Options{Log: quiet}})
	require.NoError(t, err)
	return tr
}

var (
	server = transport.Identity{ClusterName: "c", InstanceKey: "server", StartTime: time.Unix(1, 0), Role: "owner"}
	client = transport.Identity{ClusterName: "c", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "owner"}
	echo   = transport.HandlerFuncs{Request: func(_ context.Context, _ transport.Identity, _ string, p []byte) ([]byte, error) {
		return p, nil
	}}
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func TestFallbackAndRetry(t *testing.T) {
	fast := &renamed{Transport: newTCP(t), name: "rdma"}
	clk := &clock{now: time.Unix(100, 0)}
	mt, err := New(Options{Transports: []transport.Transport{fast, newTCP(t)}, Log: quiet, Now: clk.Now, RetryAfter: 30 * time.Second})
	require.NoError(t, err)
	ln, err := mt.Listen(context.Background(), "127.0.0.1:0", server, echo, nil)
	require.NoError(t, err)
	defer ln.Close()
	require.ElementsMatch(t, []string{"rdma", "tcp"}, Names(ln.Addr()))

	dial := func() *Conn {
		t.Helper()
		c, err := mt.Dial(context.Background(), ln.Addr(), client, nil)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		resp, err := c.Request(context.Background(), "/x", []byte("hi"))
		require.NoError(t, err)
		require.Equal(t, "hi", string(resp))
		return c.(*Conn)
	}

	require.Equal(t, "rdma", dial().Transport(), "both sides work: the preferred transport")

	fast.broken.Store(true)
	c := dial()
	require.Equal(t, "tcp", c.Transport(), "rdma fails: falls back to tcp")
	snap := mt.Stats().Snapshot()
	require.Len(t, snap.Fallbacks, 1)
	require.Equal(t, "rdma", snap.Fallbacks[0].Wanted)
	require.Equal(t, "tcp", snap.Fallbacks[0].Used)
	require.Contains(t, snap.Fallbacks[0].Reason, errBroken.Error(), "the reason is recorded")
	require.Equal(t, int32(2), fast.dials.Load())

	fast.broken.Store(false)
	require.Equal(t, "tcp", dial().Transport(), "within the backoff rdma is not tried first")
	require.Equal(t, int32(2), fast.dials.Load())
	require.Contains(t, mt.Stats().Snapshot().Fallbacks[0].Reason, "failed less than")

	clk.Advance(31 * time.Second)
	require.Equal(t, "rdma", dial().Transport(), "after the backoff rdma is tried again")
	require.Empty(t, mt.Stats().Snapshot().Fallbacks, "the fallback is cleared once the best transport works")
}

func TestOnlyBackedOffStillTried(t *testing.T) {
	fast := &renamed{Transport: newTCP(t), name: "quic"}
	fast.broken.Store(true)
	mt, err := New(Options{Transports: []transport.Transport{fast}, Log: quiet})
	require.NoError(t, err)
	ln, err := mt.Listen(context.Background(), "127.0.0.1:0", server, echo, nil)
	require.NoError(t, err)
	defer ln.Close()
	_, err = mt.Dial(context.Background(), ln.Addr(), client, nil)
	require.ErrorIs(t, err, errBroken)
	fast.broken.Store(false)
	c, err := mt.Dial(context.Background(), ln.Addr(), client, nil)
	require.NoError(t, err, "a backed-off transport that is the only one is still tried")
	c.Close()
}

func TestRefusalDoesNotFallBack(t *testing.T) {
	fast := &renamed{Transport: newTCP(t), name: "quic"}
	mt, err := New(Options{Transports: []transport.Transport{fast, newTCP(t)}, Log: quiet})
	require.NoError(t, err)
	ln, err := mt.Listen(context.Background(), "127.0.0.1:0", server, echo, nil)
	require.NoError(t, err)
	defer ln.Close()
	other := client
	other.ClusterName = "elsewhere"
	_, err = mt.Dial(context.Background(), ln.Addr(), other, nil)
	require.ErrorIs(t, err, transport.ErrWrongCluster)
	require.Empty(t, mt.Stats().Snapshot().Fallbacks)
}

func TestNoCommonTransport(t *testing.T) {
	mt, err := New(Options{Transports: []transport.Transport{newTCP(t)}, Log: quiet})
	require.NoError(t, err)
	_, err = mt.Dial(context.Background(), "quic=127.0.0.1:1", client, nil)
	require.ErrorIs(t, err, transport.ErrUnreachable)
	require.Contains(t, err.Error(), "network.transports")
}

func TestBareAddressIsTCP(t *testing.T) {
	plain := newTCP(t)
	ln, err := plain.Listen(context.Background(), "127.0.0.1:0", server, echo, nil)
	require.NoError(t, err)
	defer ln.Close()
	mt, err := New(Options{Transports: []transport.Transport{newTCP(t)}, Log: quiet})
	require.NoError(t, err)
	c, err := mt.Dial(context.Background(), ln.Addr(), client, nil)
	require.NoError(t, err, "an old member's bare host:port is dialed over tcp")
	c.Close()
}

func TestMetrics(t *testing.T) {
	ws, err := websocket.New(websocket.Options{Options: transport.Options{Log: quiet}})
	require.NoError(t, err)
	st := NewStats()
	reg := prometheus.NewRegistry()
	reg.MustRegister(st)
	srv, err := New(Options{Transports: []transport.Transport{ws, newTCP(t)}, Log: quiet, Stats: st})
	require.NoError(t, err)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0", server, echo, nil)
	require.NoError(t, err)
	defer ln.Close()
	cst := NewStats()
	cli, err := New(Options{Transports: []transport.Transport{ws, newTCP(t)}, Log: quiet, Stats: cst})
	require.NoError(t, err)
	c, err := cli.Dial(context.Background(), ln.Addr(), client, nil)
	require.NoError(t, err)
	for range 3 {
		_, err := c.Request(context.Background(), "/p", make([]byte, 1000))
		require.NoError(t, err)
	}
	// Client side: 3 * (2 path + 1000) out, 3000 in, one websocket peer.
	require.Equal(t, []TransportStats{{Name: "websocket", BytesSent: 3006, BytesReceived: 3000}}, cst.Snapshot().Transports)
	require.Equal(t, []PeerStats{{Peer: "server", Transport: "websocket", Conns: 1}}, cst.Snapshot().Peers)
	// Server side, through Prometheus.
	require.Equal(t, 3006.0, onlyOne(t, reg, "fluxon_transport_bytes_total", "direction=received", "transport=websocket"))
	c.Close()
	waitFor(t, func() bool { return len(cst.Snapshot().Peers) == 0 })

	// A dial that fails counts an error of that transport.
	_, err = cli.Dial(context.Background(), "tcp=127.0.0.1:1", client, nil)
	require.Error(t, err)
	for _, ts := range cst.Snapshot().Transports {
		if ts.Name == "tcp" {
			require.Equal(t, uint64(1), ts.Errors)
		}
	}
}

// onlyOne gathers reg and returns the one series of name whose text holds
// every label matcher, as a collector for testutil.
func onlyOne(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			ok := true
			for _, l := range labels {
				k, v, _ := strings.Cut(l, "=")
				if have[k] != v {
					ok = false
				}
			}
			if ok {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConformance runs the shared suite over a multi transport of tcp and
// websocket: its wrappers must keep every transport semantic.
func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, o transport.Options) transporttest.Setup {
		tc, err := tcp.New(tcp.Options{Options: o})
		require.NoError(t, err)
		ws, err := websocket.New(websocket.Options{Options: o})
		require.NoError(t, err)
		mt, err := New(Options{Transports: []transport.Transport{tc, ws}, Log: o.Log})
		require.NoError(t, err)
		return transporttest.Setup{
			Transport: mt,
			Addr:      "127.0.0.1:0",
			RawDial: func(ctx context.Context, addr string) (net.Conn, error) {
				e, err := Parse(addr)
				if err != nil {
					return nil, err
				}
				var d net.Dialer
				return d.DialContext(ctx, "tcp", e["tcp"])
			},
			RawListen: func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) },
		}
	})
}

// oneSided is tcp whose connections claim one-sided reads, as rdma's do.
type oneSided struct{ transport.Transport }

type oneSidedConn struct{ transport.Conn }

func (oneSidedConn) OneSided() bool { return true }

func (o oneSided) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	c, err := o.Transport.Dial(ctx, addr, local, verify)
	if err != nil {
		return nil, err
	}
	return oneSidedConn{c}, nil
}

// A multi connection says whether the connection it wraps reads one-sided
// (the cluster KV then tells the holder when a pull is done).
func TestOneSidedPassesThrough(t *testing.T) {
	ln, err := newTCP(t).Listen(context.Background(), "127.0.0.1:0", server, echo, nil)
	require.NoError(t, err)
	defer ln.Close()
	for _, tc := range []struct {
		tr   transport.Transport
		want bool
	}{{newTCP(t), false}, {oneSided{newTCP(t)}, true}} {
		mt, err := New(Options{Transports: []transport.Transport{tc.tr}, Log: quiet})
		require.NoError(t, err)
		c, err := mt.Dial(context.Background(), ln.Addr(), client, nil)
		require.NoError(t, err)
		require.Equal(t, tc.want, transport.IsOneSided(c))
		c.Close()
	}
}
