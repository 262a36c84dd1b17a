package relay_test

import (
	"bytes"
	"context"
	"errors"
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
	relays := map[string]string{}
	for _, name := range names {
		nets[name] = &neighbours{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := relay.Serve(ln, relay.ServerOptions{ID: name, Dial: nets[name].dial})
		t.Cleanup(func() { _ = s.Close() })
		relays[name] = s.Addr()
	}

	// D serves a request path and bulk reads of a 1 MiB region.
	region := make([]byte, 1<<20)
	for i := range region {
		region[i] = byte(i * 13)
	}
	var peers sync.Map
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, peer transport.Identity, path string, p []byte) ([]byte, error) {
			peers.Store(peer.InstanceKey, true)
			return append([]byte(path+":"), p...), nil
		},
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return region[ref.Offset : ref.Offset+ref.Length], nil, nil
		},
	}
	dln, err := tr.Listen(ctx, "127.0.0.1:0", identity("d"), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dln.Close()
	target := dln.Addr()

	// The chain: each member reaches its neighbours' relays; C (and D)
	// reach D's endpoint.
	for i, name := range names {
		if i > 0 {
			nets[name].allow(relays[names[i-1]])
		}
		if i+1 < len(names) {
			nets[name].allow(relays[names[i+1]])
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

	verifyD := func(peer transport.Identity) error {
		if peer.InstanceKey != "d" {
			return errors.New("not d")
		}
		return nil
	}
	c, err := rt.Dial(ctx, target, identity("a"), verifyD)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Peer().InstanceKey; got != "d" {
		t.Fatalf("peer %q, want d", got)
	}
	if router.routes.Load() != 1 {
		t.Fatalf("%d routes asked, want 1 (the direct dial is blocked)", router.routes.Load())
	}
	resp, err := c.Request(ctx, "echo", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp) != "echo:hello" {
		t.Fatalf("response %q", resp)
	}
	if _, ok := peers.Load("a"); !ok {
		t.Fatal("D did not see A's identity")
	}
	ref := transport.RemoteRef{Offset: 4096, Length: 512 << 10}
	dst := make([]byte, ref.Length)
	if err := c.ReadRemote(ctx, ref, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, region[ref.Offset:ref.Offset+ref.Length]) {
		t.Fatal("ReadRemote through relays returned other bytes")
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
