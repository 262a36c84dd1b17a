package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// threeNodes starts owners a and b and external c on one static resolver.
func threeNodes(t *testing.T) (*rpc.StaticResolver, map[string]*rpc.Node) {
	t.Helper()
	res := rpc.NewStaticResolver(nil)
	nodes := map[string]*rpc.Node{}
	for _, k := range []string{"a", "b", "c"} {
		nodes[k] = startNode(t, res, k, nodeOpts{})
	}
	return res, nodes
}

func TestCallsBetweenThreeNodes(t *testing.T) {
	_, nodes := threeNodes(t)
	ctx := ctxLimit(t)
	for from, n := range nodes {
		for to := range nodes {
			got, err := n.Call(ctx, to, pathWhoAmI, nil)
			if err != nil {
				t.Fatalf("%s → %s: %v", from, to, err)
			}
			want := to + " " + n.Local().Incarnation()
			if string(got) != want {
				t.Fatalf("%s → %s: got %q, want %q", from, to, got, want)
			}
			payload := []byte(fmt.Sprintf("from %s to %s", from, to))
			got, err = n.Call(ctx, to, pathEcho, payload)
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("%s → %s echo: %q, %v", from, to, got, err)
			}
		}
	}
}

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	reg := prometheus.NewRegistry()
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a", nodeOpts{registerer: reg})
	startNode(t, res, "b", nodeOpts{})
	ctx := ctxLimit(t)
	const calls = 100
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(i)}, 1+i*97)
			got, err := a.Call(ctx, "b", pathEcho, p)
			switch {
			case err != nil:
				errs <- err
			case !bytes.Equal(got, p):
				errs <- fmt.Errorf("call %d: reply of %d bytes differs from its %d-byte payload", i, len(got), len(p))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := metricValue(t, reg, "fluxon_rpc_peer_connections", nil); n != 1 {
		t.Errorf("a holds %v connections after %d concurrent calls to b, want 1", n, calls)
	}
	if n := metricValue(t, reg, "fluxon_rpc_calls_total", map[string]string{"outcome": "ok"}); n != calls {
		t.Errorf("calls_total{outcome=ok} = %v, want %d", n, calls)
	}
}

func TestDictPayloads(t *testing.T) {
	_, nodes := threeNodes(t)
	ctx := ctxLimit(t)
	req := kv.Dict{
		kv.Int("layer", -7), kv.Float("scale", 0.125), kv.Bool("causal", true),
		kv.String("name", "kv-cache ✓"), kv.Bytes("data", []byte{0, 1, 2, 255}),
	}
	got, err := nodes["c"].CallDict(ctx, "a", pathDict, req)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(kv.Dict{}, req...), kv.String("served_by", "a"))
	want.Sort()
	got.Sort()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// An empty dict and an empty payload are the same thing.
	got, err = nodes["c"].CallDict(ctx, "a", pathDict, nil)
	if err != nil || len(got) != 1 {
		t.Fatalf("empty dict: %v, %v", got, err)
	}
	// A dict handler given bytes that are not a dict fails as a handler error.
	_, err = nodes["c"].Call(ctx, "a", pathDict, []byte("not a dict"))
	wantErr(t, err, rpc.ErrHandler)
	// A reply that is not a dict.
	_, err = nodes["c"].CallDict(ctx, "a", pathWhoAmI, req)
	wantErr(t, err, kv.ErrBadValue)
}

func TestLargePayload(t *testing.T) {
	_, nodes := threeNodes(t)
	ctx := ctxLimit(t)
	p := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(p)
	want := bytes.Clone(p)
	got, err := nodes["a"].Call(ctx, "b", pathEcho, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the 8 MiB reply differs from the payload")
	}
}

func TestErrors(t *testing.T) {
	_, nodes := threeNodes(t)
	a := nodes["a"]
	ctx := ctxLimit(t)

	_, err := a.Call(ctx, "nobody", pathEcho, nil)
	wantErr(t, err, rpc.ErrUnknownNode)

	_, err = a.Call(ctx, "b", "/test/missing", nil)
	wantErr(t, err, rpc.ErrUnknownPath)
	if !strings.Contains(err.Error(), rpc.PathInfo) {
		t.Errorf("unknown path error %q does not say where to look", err)
	}

	_, err = a.Call(ctx, "b", pathFail, nil)
	wantErr(t, err, rpc.ErrHandler)
	var e *rpc.Error
	if !errors.As(err, &e) || e.Code != 42 || e.Message != `no such tensor "t1"; put it first` || rpc.Code(err) != 42 {
		t.Fatalf("handler error %q: got %+v", err, e)
	}
	if errors.Is(err, rpc.ErrHandlerPanic) || errors.Is(err, rpc.ErrUnknownPath) {
		t.Fatalf("handler error %q matches another sentinel", err)
	}

	_, err = a.Call(ctx, "b", pathPlain, nil)
	wantErr(t, err, rpc.ErrHandler)
	if rpc.Code(err) != 0 || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("plain handler error %q (code %d)", err, rpc.Code(err))
	}

	_, err = a.Call(ctx, "b", pathPanic, nil)
	wantErr(t, err, rpc.ErrHandlerPanic)
	if errors.Is(err, rpc.ErrHandler) || !strings.Contains(err.Error(), "boom from b") {
		t.Fatalf("panic error %q", err)
	}
	// b keeps serving, on the same connection.
	if got, err := a.Call(ctx, "b", pathEcho, []byte("still here")); err != nil || string(got) != "still here" {
		t.Fatalf("after the panic: %q, %v", got, err)
	}

	for _, p := range []string{"", "no-slash"} {
		_, err = a.Call(ctx, "b", p, nil)
		wantErr(t, err, rpc.ErrInvalidPath)
	}
}

func TestTimeout(t *testing.T) {
	_, nodes := threeNodes(t)
	b := blockedOn(nodes["b"])
	ctx, cancel := context.WithTimeout(ctxLimit(t), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := nodes["a"].Call(ctx, "b", pathBlock, nil)
	took := time.Since(start)
	wantErr(t, err, rpc.ErrTimeout, context.DeadlineExceeded)
	// The reference implementation cannot time out below 10 s; anything
	// far below that shows the call's own 50 ms deadline ended it.
	if took > 5*time.Second {
		t.Errorf("a 50 ms call took %v to time out", took)
	}
	recv(t, b.started, "the slow handler to start")
	if !recv(t, b.hadDeadline, "the handler's deadline") {
		t.Error("the handler's context had no deadline")
	}
	if got := recv(t, b.ended, "the handler's context to end"); got == nil {
		t.Error("the handler's context ended without an error")
	}
	if _, err := nodes["a"].Call(ctxLimit(t), "b", pathEcho, []byte("x")); err != nil {
		t.Fatalf("after a timeout: %v", err)
	}
}

func TestCancel(t *testing.T) {
	_, nodes := threeNodes(t)
	b := blockedOn(nodes["b"])
	ctx, cancel := context.WithCancel(ctxLimit(t))
	errc := make(chan error, 1)
	go func() {
		_, err := nodes["c"].Call(ctx, "b", pathBlock, nil)
		errc <- err
	}()
	recv(t, b.started, "the handler to start")
	cancel()
	err := recv(t, errc, "the cancelled call")
	wantErr(t, err, context.Canceled)
	if errors.Is(err, rpc.ErrTimeout) {
		t.Fatalf("a cancelled call says %q", err)
	}
	if got := recv(t, b.ended, "the handler's context to end"); !errors.Is(got, context.Canceled) {
		t.Errorf("the handler's context ended with %v, want context.Canceled", got)
	}
}

// TestPeerKilledMidCall kills (SIGKILL) a node in another process while a
// call to it runs. The caller's keepalive timeout is far longer than the
// wait, so the call can only end because the connection did.
func TestPeerKilledMidCall(t *testing.T) {
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a", nodeOpts{keepalive: time.Minute})
	ch := startChild(t)
	res.Set("child", ch.addr, ident("child", ch.start))
	ctx := ctxLimit(t)
	if got, err := a.Call(ctx, "child", pathEcho, []byte("hi")); err != nil || string(got) != "hi" {
		t.Fatalf("call to the child: %q, %v", got, err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, "child", pathBlock, nil)
		errc <- err
	}()
	if line := recv(t, ch.lines, "the child's handler to start"); line != "BLOCKED" {
		t.Fatalf("child said %q", line)
	}
	killed := time.Now()
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := recv(t, errc, "the call to the killed node")
	wantErr(t, err, rpc.ErrPeerGone)
	t.Logf("peer gone %v after the kill: %v", time.Since(killed), err)

	// Nothing listens there now (once the process is reaped, its listening
	// socket is closed too); then the node leaves the resolver.
	_ = ch.cmd.Wait()
	_, err = a.Call(ctx, "child", pathEcho, nil)
	wantErr(t, err, rpc.ErrUnreachable)
	res.Remove("child")
	_, err = a.Call(ctx, "child", pathEcho, nil)
	wantErr(t, err, rpc.ErrPeerGone)
}

// TestNodeLeft: a node that leaves the resolver fails the calls in flight
// to it at once, and later calls say it left.
func TestNodeLeft(t *testing.T) {
	res, nodes := threeNodes(t)
	b := blockedOn(nodes["b"])
	errc := make(chan error, 1)
	go func() {
		_, err := nodes["a"].Call(ctxLimit(t), "b", pathBlock, nil)
		errc <- err
	}()
	recv(t, b.started, "the handler to start")
	res.Remove("b")
	err := recv(t, errc, "the call in flight to the departed node")
	wantErr(t, err, rpc.ErrPeerGone)
	if !strings.Contains(err.Error(), "left") {
		t.Errorf("error %q does not say the node left", err)
	}
	_, err = nodes["a"].Call(ctxLimit(t), "b", pathEcho, nil)
	wantErr(t, err, rpc.ErrPeerGone)
	recv(t, b.ended, "the handler's context to end")
}

// TestRestartedNodeIsStale restarts b on the same address with a new start
// time: while the resolver still knows the old incarnation, calls are
// refused with ErrStaleNode; once it learns the new one, b is reachable.
// The old incarnation, still running, is refused by the others too.
func TestRestartedNodeIsStale(t *testing.T) {
	res, nodes := threeNodes(t)
	ctx := ctxLimit(t)
	if _, err := nodes["a"].Call(ctx, "b", pathEcho, nil); err != nil {
		t.Fatal(err)
	}
	addr, oldID, err := res.Resolve("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes["b"].Close(); err != nil {
		t.Fatal(err)
	}
	newStart := oldID.StartTime.Add(time.Second)
	waitFor(t, "b's address to be free again", func() bool {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		_ = ln.Close()
		return true
	})
	// The new b has a resolver of its own, so res keeps the old entry.
	startNode(t, rpc.NewStaticResolver(nil), "b", nodeOpts{start: newStart, addr: addr})
	// A call racing with the old connection's end may fail with
	// ErrPeerGone (it cannot know whether the old b saw it); the next one
	// dials and is refused.
	waitFor(t, "a's old connection to b to end", func() bool {
		_, err = nodes["a"].Call(ctx, "b", pathEcho, nil)
		return !errors.Is(err, rpc.ErrPeerGone)
	})
	wantErr(t, err, rpc.ErrStaleNode)
	t.Logf("stale: %v", err)

	res.Set("b", addr, ident("b", newStart))
	if got, err := nodes["a"].Call(ctx, "b", pathWhoAmI, nil); err != nil || !strings.HasPrefix(string(got), "b ") {
		t.Fatalf("after the resolver learned the new b: %q, %v", got, err)
	}

	// The old incarnation of b, still running somewhere, calls a; a knows
	// b's newer incarnation and refuses it.
	aAddr, aID, err := res.Resolve("a")
	if err != nil {
		t.Fatal(err)
	}
	old, err := rpc.New(rpc.Options{
		Local: oldID, Transport: newTransport(t, 0), Log: quiet,
		Resolver: rpc.NewStaticResolver(map[string]rpc.StaticEntry{"a": {Addr: aAddr, Identity: aID}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	_, err = old.Call(ctx, "a", pathEcho, nil)
	wantErr(t, err, rpc.ErrStaleNode)
	t.Logf("old incarnation refused: %v", err)
}

func TestWrongClusterIsRefused(t *testing.T) {
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a", nodeOpts{})
	startNode(t, res, "x", nodeOpts{cluster: "other"})
	_, err := a.Call(ctxLimit(t), "x", pathEcho, nil)
	wantErr(t, err, rpc.ErrRefused)
}

func TestBuiltins(t *testing.T) {
	_, nodes := threeNodes(t)
	ctx := ctxLimit(t)
	got, err := nodes["a"].Call(ctx, "c", rpc.PathPing, []byte("ping!"))
	if err != nil || string(got) != "ping!" {
		t.Fatalf("ping: %q, %v", got, err)
	}
	raw, err := nodes["a"].Call(ctx, "c", rpc.PathInfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	var info rpc.Info
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("info %s: %v", raw, err)
	}
	c := nodes["c"].Local()
	if info.InstanceKey != "c" || info.Role != c.Role || !info.StartTime.Equal(c.StartTime) || info.Incarnation != c.Incarnation() ||
		info.Transport != "tcp" || info.Addr != nodes["c"].Addr() || info.ClusterName != testCluster {
		t.Fatalf("info: %+v", info)
	}
	for _, p := range []string{rpc.PathPing, rpc.PathInfo, pathEcho, pathBlock} {
		if !strings.Contains(strings.Join(info.Paths, " "), p) {
			t.Errorf("info's paths %v lack %s", info.Paths, p)
		}
	}
}

func TestRegister(t *testing.T) {
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a", nodeOpts{})
	h := func(context.Context, transport.Identity, []byte) ([]byte, error) { return []byte("late"), nil }
	wantErr(t, a.Register(pathEcho, h), rpc.ErrDuplicatePath)
	for _, p := range []string{"", "x", "/", "/fluxon/mine", rpc.PathPing, "/a b", "/a\x00"} {
		wantErr(t, a.Register(p, h), rpc.ErrInvalidPath)
	}
	wantErr(t, a.Unregister(rpc.PathPing), rpc.ErrInvalidPath)
	wantErr(t, a.Unregister("/test/never"), rpc.ErrUnknownPath)

	ctx := ctxLimit(t)
	if err := a.Register("/test/late", h); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Call(ctx, "a", "/test/late", nil); err != nil || string(got) != "late" {
		t.Fatalf("handler registered after Start: %q, %v", got, err)
	}
	if err := a.Unregister("/test/late"); err != nil {
		t.Fatal(err)
	}
	_, err := a.Call(ctx, "a", "/test/late", nil)
	wantErr(t, err, rpc.ErrUnknownPath)
	if err := a.Register("/test/late", h); err != nil {
		t.Fatalf("register again after Unregister: %v", err)
	}
}

func TestClose(t *testing.T) {
	_, nodes := threeNodes(t)
	b := blockedOn(nodes["b"])
	// The caller closes while its call is in flight.
	errc := make(chan error, 1)
	go func() {
		_, err := nodes["a"].Call(ctxLimit(t), "b", pathBlock, nil)
		errc <- err
	}()
	recv(t, b.started, "the handler to start")
	if err := nodes["a"].Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, recv(t, errc, "the call of the closed node"), rpc.ErrClosed)
	_, err := nodes["a"].Call(ctxLimit(t), "b", pathEcho, nil)
	wantErr(t, err, rpc.ErrClosed)
	recv(t, b.ended, "the handler's context to end")

	// The callee closes while a call to it is in flight.
	go func() {
		_, err := nodes["c"].Call(ctxLimit(t), "b", pathBlock, nil)
		errc <- err
	}()
	recv(t, b.started, "the handler to start")
	if err := nodes["b"].Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, recv(t, errc, "the call to the closed node"), rpc.ErrPeerGone)
}

func TestMetrics(t *testing.T) {
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a", nodeOpts{registerer: regA})
	startNode(t, res, "b", nodeOpts{registerer: regB})
	ctx := ctxLimit(t)
	for range 3 {
		if _, err := a.Call(ctx, "b", pathEcho, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = a.Call(ctx, "b", pathFail, nil)
	_, _ = a.Call(ctx, "b", pathPanic, nil)
	_, _ = a.Call(ctx, "b", "/test/missing", nil)
	_, _ = a.Call(ctx, "nobody", pathEcho, nil)
	for _, c := range []struct {
		reg    *prometheus.Registry
		name   string
		labels map[string]string
		want   float64
	}{
		{regA, "fluxon_rpc_calls_total", map[string]string{"outcome": "ok"}, 3},
		{regA, "fluxon_rpc_calls_total", map[string]string{"outcome": "handler_error"}, 1},
		{regA, "fluxon_rpc_calls_total", map[string]string{"outcome": "handler_panic"}, 1},
		{regA, "fluxon_rpc_calls_total", map[string]string{"outcome": "unknown_path"}, 1},
		{regA, "fluxon_rpc_calls_total", map[string]string{"outcome": "unknown_node"}, 1},
		{regA, "fluxon_rpc_call_duration_seconds", nil, 7},
		{regB, "fluxon_rpc_handler_calls_total", map[string]string{"path": pathEcho, "outcome": "ok"}, 3},
		{regB, "fluxon_rpc_handler_calls_total", map[string]string{"path": pathFail, "outcome": "error"}, 1},
		{regB, "fluxon_rpc_handler_calls_total", map[string]string{"path": pathPanic, "outcome": "panic"}, 1},
		{regB, "fluxon_rpc_handler_calls_total", map[string]string{"path": "", "outcome": "unknown_path"}, 1},
		{regB, "fluxon_rpc_handlers_running", nil, 0},
	} {
		if got := metricValue(t, c.reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Close unregisters, so a new node can use the same registerer.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	startNode(t, res, "a2", nodeOpts{registerer: regA})
}

func TestTooLarge(t *testing.T) {
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a", nodeOpts{maxMessage: 1 << 20})
	startNode(t, res, "b", nodeOpts{maxMessage: 1 << 20})
	ctx := ctxLimit(t)
	_, err := a.Call(ctx, "b", pathEcho, make([]byte, 2<<20))
	wantErr(t, err, rpc.ErrTooLarge)
	if _, err := a.Call(ctx, "b", pathEcho, make([]byte, 512<<10)); err != nil {
		t.Fatalf("a payload under the limit: %v", err)
	}
}

// TestRedialAfterConnectionLoss: once the cached connection is known dead,
// the next call dials again instead of failing.
func TestRedialAfterConnectionLoss(t *testing.T) {
	reg := prometheus.NewRegistry()
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a", nodeOpts{registerer: reg})
	b := startNode(t, res, "b", nodeOpts{})
	ctx := ctxLimit(t)
	if _, err := a.Call(ctx, "b", pathEcho, nil); err != nil {
		t.Fatal(err)
	}
	addr, id, _ := res.Resolve("b")
	// b's process restarts its listener: same incarnation, same address
	// (as after a network blip), so the resolver stays right.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see its connection to b end", func() bool {
		return metricValue(t, reg, "fluxon_rpc_peer_connections", nil) == 0
	})
	startNode(t, rpc.NewStaticResolver(nil), "b", nodeOpts{start: id.StartTime, addr: addr})
	if got, err := a.Call(ctx, "b", pathEcho, []byte("again")); err != nil || string(got) != "again" {
		t.Fatalf("call after the connection died: %q, %v", got, err)
	}
	// The gauge follows the connections' watchers, which run beside the
	// call: wait for it (a CI run under load once read it mid-update).
	waitFor(t, "a to count its one new connection to b", func() bool {
		return metricValue(t, reg, "fluxon_rpc_peer_connections", nil) == 1
	})
}
