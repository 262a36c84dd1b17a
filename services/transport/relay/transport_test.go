package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/relay"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// neighbours is a DialFunc per member that reaches only the addresses
// allowed to it, the in-process stand-in for hosts A-B-C-D of a chain.
type neighbours struct {
	mu      sync.Mutex
	allowed map[string]bool
	dials   atomic.Int64
}

func (n *neighbours) allow(addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.allowed == nil {
		n.allowed = make(map[string]bool)
	}
	for _, a := range addrs {
		n.allowed[a] = true
	}
}

func (n *neighbours) dial(ctx context.Context, addr string) (net.Conn, error) {
	n.dials.Add(1)
	n.mu.Lock()
	ok := n.allowed[addr]
	n.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}
	}
	return relay.NetDial(ctx, addr)
}

type countingRouter struct {
	relay.Router
	routes atomic.Int64
}

func (r *countingRouter) Route(ctx context.Context, addr string) (relay.Route, error) {
	r.routes.Add(1)
	return r.Router.Route(ctx, addr)
}

func identity(name string) transport.Identity {
	return transport.Identity{ClusterName: "lab", InstanceKey: name, StartTime: time.Unix(1, 0), Role: "owner"}
}

// TestRequestAndReadRemoteThroughThreeHops: A reaches only B, B only C, C
// only D; a request and a bulk read from A to D's transport endpoint pass
// relays B and C (A-B, B-C, C-D: three hops) and the handshake verifies
// D's identity end to end.
func TestRequestAndReadRemoteThroughThreeHops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := tcp.New(tcp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c", "d"}
	nets := map[string]*neighbours{}
	relays := map[string][]string{}
	for _, name := range names {
		nets[name] = &neighbours{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := relay.Serve(ln, relay.ServerOptions{ID: name, Dial: nets[name].dial})
		t.Cleanup(func() { _ = s.Close() })
		relays[name] = s.Addrs()
	}

	target, region, peers := serveRegion(ctx, t, tr, "d")

	// The chain: each member reaches its neighbours' relays; C (and D)
	// reach D's endpoint.
	for i, name := range names {
		if i > 0 {
			nets[name].allow(relays[names[i-1]]...)
		}
		if i+1 < len(names) {
			nets[name].allow(relays[names[i+1]]...)
		}
	}
	nets["c"].allow(target)
	nets["d"].allow(target)
	dir := &relay.StaticDirectory{
		Endpoints: map[string]string{target: "d"},
		Relays:    relays,
		Reach:     relay.Graph{"a": {"b"}, "b": {"a", "c"}, "c": {"b", "d"}, "d": {"c"}},
	}
	router := &countingRouter{Router: &relay.GraphRouter{Self: "a", Dir: dir}}
	rt := relay.NewTransport(relay.TransportOptions{
		Inner: tr, Router: router, Self: "a", Dial: nets["a"].dial, DirectTimeout: 200 * time.Millisecond,
	})

	verifyD := verifyPeer("d")
	c := dialAndCheck(ctx, t, rt, target, "d", region, peers)
	defer c.Close()
	if router.routes.Load() != 1 {
		t.Fatalf("%d routes asked, want 1 (the direct dial is blocked)", router.routes.Load())
	}

	// A second dial goes to the relays at once (no direct attempt).
	before := nets["a"].dials.Load()
	c2, err := rt.Dial(ctx, target, identity("a"), verifyD)
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.Close()
	if n := nets["a"].dials.Load() - before; n != 1 {
		t.Fatalf("second dial made %d connects, want 1 (to relay b)", n)
	}

	// A hop limit below the path's length is refused with ErrHopLimit.
	short := relay.NewTransport(relay.TransportOptions{Inner: tr, Router: &relay.GraphRouter{Self: "a", Dir: dir, MaxHops: 2}, Self: "a", Dial: nets["a"].dial, DirectTimeout: 100 * time.Millisecond})
	if _, err := short.Dial(ctx, target, identity("a"), nil); !errors.Is(err, relay.ErrHopLimit) || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("hop limit 2: %v, want ErrHopLimit and ErrUnreachable", err)
	}

	// A member D refuses in the handshake is refused through relays too.
	_, err = rt.Dial(ctx, target, transport.Identity{ClusterName: "other", InstanceKey: "a", Role: "owner"}, nil)
	if !errors.Is(err, transport.ErrWrongCluster) {
		t.Fatalf("other cluster: %v, want ErrWrongCluster", err)
	}
}

// serveRegion listens as member name with tr: requests echo "path:body",
// bulk reads return a 1 MiB region, and peers records who called.
func serveRegion(ctx context.Context, t *testing.T, tr transport.Transport, name string) (string, []byte, *sync.Map) {
	t.Helper()
	region := make([]byte, 1<<20)
	for i := range region {
		region[i] = byte(i * 13)
	}
	peers := &sync.Map{}
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, peer transport.Identity, path string, p []byte) ([]byte, error) {
			peers.Store(peer.InstanceKey, true)
			return append([]byte(path+":"), p...), nil
		},
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return region[ref.Offset : ref.Offset+ref.Length], nil, nil
		},
	}
	ln, err := tr.Listen(ctx, "127.0.0.1:0", identity(name), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr(), region, peers
}

func verifyPeer(want string) transport.Verify {
	return func(peer transport.Identity) error {
		if peer.InstanceKey != want {
			return fmt.Errorf("peer %q, not %q", peer.InstanceKey, want)
		}
		return nil
	}
}

// dialAndCheck dials target (a serveRegion of member want) as "a" through
// rt, then checks a request and a 512 KiB bulk read and that the target
// saw a's identity.
func dialAndCheck(ctx context.Context, t *testing.T, rt *relay.Transport, target, want string, region []byte, peers *sync.Map) transport.Conn {
	t.Helper()
	c, err := rt.Dial(ctx, target, identity("a"), verifyPeer(want))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Peer().InstanceKey; got != want {
		t.Fatalf("peer %q, want %s", got, want)
	}
	resp, err := c.Request(ctx, "echo", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp) != "echo:hello" {
		t.Fatalf("response %q", resp)
	}
	if _, ok := peers.Load("a"); !ok {
		t.Fatalf("%s did not see a's identity", want)
	}
	ref := transport.RemoteRef{Offset: 4096, Length: 512 << 10}
	dst := make([]byte, ref.Length)
	if err := c.ReadRemote(ctx, ref, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, region[ref.Offset:ref.Offset+ref.Length]) {
		t.Fatal("ReadRemote through relays returned other bytes")
	}
	return c
}

// TestRelayOnSecondAddress: relays b and c each listen on two loopback
// addresses (two networks), and each neighbour reaches only one of them:
// a reaches b only at b's second address, b reaches c only at c's second,
// c reaches d's endpoint. a carries a request and a bulk read to d, first
// knowing nothing of which address answered whom (a falls back to b's
// second address; b uses its own probe's address for c although the
// header names c's first), then with the probe results (one connect to
// b, at the address that works).
func TestRelayOnSecondAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := tcp.New(tcp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	target, region, peers := serveRegion(ctx, t, tr, "d")
	nets := map[string]*neighbours{"a": {}, "b": {}, "c": {}}
	relays := map[string][]string{}
	reached := map[string]map[string]string{}
	bDir := &relay.StaticDirectory{Relays: relays, ReachedAddr: reached}
	for i, name := range []string{"b", "c"} {
		var lns []net.Listener
		for _, host := range []string{fmt.Sprintf("127.0.0.%d", 2*i+2), fmt.Sprintf("127.0.0.%d", 2*i+3)} {
			ln, err := net.Listen("tcp", host+":0")
			if err != nil {
				t.Fatal(err)
			}
			lns = append(lns, ln)
		}
		s := relay.ServeAll(lns, relay.ServerOptions{ID: name, Dial: nets[name].dial, Dir: bDir})
		t.Cleanup(func() { _ = s.Close() })
		relays[name] = s.Addrs()
		if len(relays[name]) != 2 || relays[name][0] == relays[name][1] {
			t.Fatalf("%s listens on %v, want two addresses", name, relays[name])
		}
	}
	nets["a"].allow(relays["b"][1])
	nets["b"].allow(relays["c"][1])
	nets["c"].allow(target)
	reached["a"] = map[string]string{"b": relays["b"][1]}
	reached["b"] = map[string]string{"c": relays["c"][1]}
	graph := relay.Graph{"a": {"b"}, "b": {"a", "c"}, "c": {"b", "d"}, "d": {"c"}}
	endpoints := map[string]string{target: "d"}

	blind := &relay.StaticDirectory{Endpoints: endpoints, Relays: relays, Reach: graph}
	rt := relay.NewTransport(relay.TransportOptions{
		Inner: tr, Router: &relay.GraphRouter{Self: "a", Dir: blind}, Self: "a", Dial: nets["a"].dial, DirectTimeout: 200 * time.Millisecond,
	})
	c := dialAndCheck(ctx, t, rt, target, "d", region, peers)
	_ = c.Close()
	if n := nets["a"].dials.Load(); n != 3 {
		t.Fatalf("a made %d connects, want 3 (d directly, b's first address, b's second)", n)
	}
	if n := nets["b"].dials.Load(); n != 1 {
		t.Fatalf("b made %d connects, want 1 (c's second address, which b's probe reached)", n)
	}

	informed := &relay.StaticDirectory{Endpoints: endpoints, Relays: relays, ReachedAddr: reached, Reach: graph}
	rt2 := relay.NewTransport(relay.TransportOptions{
		Inner: tr, Router: &relay.GraphRouter{Self: "a", Dir: informed}, Self: "a", Dial: nets["a"].dial, DirectTimeout: 200 * time.Millisecond,
	})
	c = dialAndCheck(ctx, t, rt2, target, "d", region, peers)
	_ = c.Close()
	if n := nets["a"].dials.Load(); n != 3+2 {
		t.Fatalf("a made %d more connects, want 2 (d directly, b's second address)", n-3)
	}
}

// With the direct path open, no relay is asked.
func TestDirectFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := tcp.New(tcp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tr.Listen(ctx, "127.0.0.1:0", identity("d"), transport.HandlerFuncs{
		Request: func(context.Context, transport.Identity, string, []byte) ([]byte, error) { return []byte("ok"), nil },
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	router := &countingRouter{Router: &relay.GraphRouter{Self: "a", Dir: &relay.StaticDirectory{}}}
	rt := relay.NewTransport(relay.TransportOptions{Inner: tr, Router: router, Self: "a"})
	c, err := rt.Dial(ctx, ln.Addr(), identity("a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Request(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	if router.routes.Load() != 0 {
		t.Fatal("a direct dial asked the router")
	}
}
