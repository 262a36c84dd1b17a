package rpc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

const (
	testCluster = "rpctest"
	// waitLimit bounds every wait and call of the tests: a guard against
	// hangs, never a timing assertion.
	waitLimit = 30 * time.Second
	// childEnv makes the test binary run a node (see TestMain).
	childEnv = "FLUXON_RPC_TEST_CHILD"
)

var quiet = slog.New(slog.DiscardHandler)

func ident(key string, start time.Time) transport.Identity {
	return transport.Identity{ClusterName: testCluster, InstanceKey: key, StartTime: start, Role: "owner"}
}

// newTransport is the real TCP transport. keepaliveTimeout 0 is the
// default (5 s).
func newTransport(t testing.TB, keepaliveTimeout time.Duration) transport.Transport {
	t.Helper()
	return newTransportMax(t, keepaliveTimeout, 0)
}

func newTransportMax(t testing.TB, keepaliveTimeout time.Duration, maxMessage uint64) transport.Transport {
	t.Helper()
	tr, err := tcp.New(tcp.Options{Options: transport.Options{Log: quiet, KeepaliveTimeout: keepaliveTimeout, MaxMessageSize: maxMessage}})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

type nodeOpts struct {
	start      time.Time
	addr       string
	keepalive  time.Duration
	registerer prometheus.Registerer
	cluster    string
	noListen   bool
	maxMessage uint64
}

// startNode starts a node named key on 127.0.0.1, adds it to res and
// registers the test handlers.
func startNode(t testing.TB, res *rpc.StaticResolver, key string, o nodeOpts) *rpc.Node {
	t.Helper()
	if o.start.IsZero() {
		o.start = time.Now()
	}
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	id := ident(key, o.start)
	if o.cluster != "" {
		id.ClusterName = o.cluster
	}
	n, err := rpc.New(rpc.Options{
		Local: id, Transport: newTransportMax(t, o.keepalive, o.maxMessage), ListenAddr: o.addr,
		Resolver: res, Log: quiet, Registerer: o.registerer,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	registerTestHandlers(t, n)
	if o.noListen {
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	addr, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res.Set(key, addr, id)
	return n
}

// Paths the test handlers serve.
const (
	pathEcho   = "/test/echo"   // returns the payload
	pathWhoAmI = "/test/whoami" // "<callee> <caller's incarnation>"
	pathFail   = "/test/fail"   // an *Error with code 42
	pathPlain  = "/test/plain"  // a plain error
	pathPanic  = "/test/panic"  // panics
	pathBlock  = "/test/block"  // waits for its context; reports it on blockedCalls
	pathDict   = "/test/dict"   // DictHandler: echoes the dict plus a field "served_by"
)

// blocked is what a pathBlock call reports: it started, then how its
// context ended.
type blocked struct {
	started     chan struct{}
	ended       chan error
	hadDeadline chan bool
}

var blockedCalls = struct {
	sync.Mutex
	m map[string]*blocked // node incarnation → its calls
}{m: map[string]*blocked{}}

// blockedOn returns the pathBlock calls of node n.
func blockedOn(n *rpc.Node) *blocked { return blockedOf(n.Local().Incarnation()) }

func blockedOf(incarnation string) *blocked {
	blockedCalls.Lock()
	defer blockedCalls.Unlock()
	b := blockedCalls.m[incarnation]
	if b == nil {
		b = &blocked{started: make(chan struct{}, 128), ended: make(chan error, 128), hadDeadline: make(chan bool, 128)}
		blockedCalls.m[incarnation] = b
	}
	return b
}

func registerTestHandlers(t testing.TB, n *rpc.Node) {
	t.Helper()
	self := n.Local()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(n.Register(pathEcho, func(_ context.Context, _ transport.Identity, p []byte) ([]byte, error) { return p, nil }))
	must(n.Register(pathWhoAmI, func(_ context.Context, from transport.Identity, _ []byte) ([]byte, error) {
		return []byte(self.InstanceKey + " " + from.Incarnation()), nil
	}))
	must(n.Register(pathFail, func(context.Context, transport.Identity, []byte) ([]byte, error) {
		return nil, rpc.Errorf(42, "no such tensor %q; put it first", "t1")
	}))
	must(n.Register(pathPlain, func(context.Context, transport.Identity, []byte) ([]byte, error) {
		return nil, errors.New("disk on fire")
	}))
	must(n.Register(pathPanic, func(context.Context, transport.Identity, []byte) ([]byte, error) {
		panic("boom from " + self.InstanceKey)
	}))
	b := blockedOf(self.Incarnation())
	must(n.Register(pathBlock, func(ctx context.Context, _ transport.Identity, _ []byte) ([]byte, error) {
		_, ok := ctx.Deadline()
		b.hadDeadline <- ok
		b.started <- struct{}{}
		<-ctx.Done()
		b.ended <- ctx.Err()
		return nil, ctx.Err()
	}))
	must(n.Register(pathDict, rpc.DictHandler(func(_ context.Context, _ transport.Identity, d kv.Dict) (kv.Dict, error) {
		return append(d, kv.String("served_by", self.InstanceKey)), nil
	})))
}

func ctxLimit(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv waits for a value on ch (at most waitLimit).
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
	}
	var zero T
	return zero
}

func wantErr(t testing.TB, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("error %q does not match %v", err, target)
		}
	}
}

// metricValue reads a counter or gauge (or a histogram's count) from reg.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// TestMain doubles as a node process for the peer-death test: with
// childEnv set, the binary serves the test handlers and prints
// "ADDR <addr> <start unix ns>", then "BLOCKED" whenever a pathBlock call
// starts, until it is killed.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChild()
		return
	}
	os.Exit(m.Run())
}

func runChild() {
	start := time.Now()
	tr, err := tcp.New(tcp.Options{Options: transport.Options{Log: quiet}})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	n, err := rpc.New(rpc.Options{Local: ident("child", start), Transport: tr, ListenAddr: "127.0.0.1:0", Log: quiet})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	var out sync.Mutex
	_ = n.Register(pathEcho, func(_ context.Context, _ transport.Identity, p []byte) ([]byte, error) { return p, nil })
	_ = n.Register(pathBlock, func(ctx context.Context, _ transport.Identity, _ []byte) ([]byte, error) {
		out.Lock()
		fmt.Println("BLOCKED")
		out.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	})
	addr, err := n.Start(context.Background())
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	out.Lock()
	fmt.Printf("ADDR %s %d\n", addr, start.UnixNano())
	out.Unlock()
	select {}
}

// child is a node in its own process.
type child struct {
	cmd   *exec.Cmd
	addr  string
	start time.Time
	lines chan string
}

func startChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 16)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	line := recv(t, c.lines, "the child node's address")
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ADDR" {
		t.Fatalf("child node said %q", line)
	}
	ns, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	c.addr, c.start = f[1], time.Unix(0, ns)
	return c
}
