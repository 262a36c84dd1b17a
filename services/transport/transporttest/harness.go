// Package transporttest is the conformance suite every Transport passes:
// tcp in both reactor modes, and later quic, websocket, rdma, ucx, dpdk.
//
// A transport's test calls Run with a Factory:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T, o transport.Options) transporttest.Setup {
//			tr, err := mytransport.New(mytransport.Options{Options: o})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return transporttest.Setup{Transport: tr, Addr: "127.0.0.1:0", RawDial: ..., RawListen: ...}
//		})
//	}
//
// The suite checks behaviour only, never speed; a test waits on conditions
// (waitFor) with a generous limit that catches hangs, not slowness.
package transporttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Setup is what a transport gives the suite for one test.
type Setup struct {
	// Transport is built with the Options the Factory was given.
	Transport transport.Transport
	// Addr is where to listen ("127.0.0.1:0"): each Listen gets a fresh
	// endpoint.
	Addr string
	// RawDial opens a bare byte stream to a listener's Addr, carrying
	// frames as the transport does (for TCP: net.Dial). The suite speaks
	// the protocol by hand over it to inject malformed frames. Nil skips
	// those tests (say why in the transport's test).
	RawDial func(ctx context.Context, addr string) (net.Conn, error)
	// RawListen opens a bare listener that Transport.Dial can reach at its
	// Addr, for peers that stop answering or die mid-request. Nil skips
	// those tests.
	RawListen func(addr string) (net.Listener, error)
	// OneSidedBulk, when set, says why ReadRemote's bytes never travel as
	// bulk frames over the raw byte stream (a one-sided transport: rdma,
	// ucx); the cases that inject bulk frames by hand are then not run,
	// and the test log says so with this reason.
	OneSidedBulk string
}

// Factory builds a transport with the given options. It is called once
// per test (sometimes twice, for two settings).
type Factory func(t *testing.T, o transport.Options) Setup

// Timing of the suite's connections. Tests of keepalive use short
// keepalives (fastKeepalive) so that dead peers are found quickly; the
// others use long ones, so that a loaded machine (race detector, two
// cores, 64 MiB transfers) never looks like a dead peer. The hang guard is
// far above all of them.
const (
	keepaliveInterval = 50 * time.Millisecond
	keepaliveTimeout  = 250 * time.Millisecond
	slowKeepalive     = 1 * time.Second
	slowKeepaliveDead = 20 * time.Second
	handshakeTimeout  = 5 * time.Second
	// waitLimit bounds waitFor and every call the suite makes: a safety net
	// against hangs, never a timing assertion.
	waitLimit = 30 * time.Second

	kib = 1 << 10
	mib = 1 << 20
	// poolSize is the test handler's "pool" served by ServeRead.
	poolSize = 80 * mib
)

var (
	serverID = transport.Identity{ClusterName: "suite", InstanceKey: "owner-a", StartTime: time.Unix(1_700_000_000, 123), Role: "owner"}
	clientID = transport.Identity{ClusterName: "suite", InstanceKey: "external-b", StartTime: time.Unix(1_700_000_100, 456), Role: "external"}
)

// env is one test's transport, options and log.
type env struct {
	t     *testing.T
	setup Setup
	opts  transport.Options
	log   *logRecorder
}

func newEnv(t *testing.T, f Factory, mod func(*transport.Options)) *env {
	t.Helper()
	rec := newLogRecorder()
	o := transport.Options{
		Log:               slog.New(rec),
		HandshakeTimeout:  handshakeTimeout,
		KeepaliveInterval: slowKeepalive,
		KeepaliveTimeout:  slowKeepaliveDead,
	}
	if mod != nil {
		mod(&o)
	}
	t.Cleanup(func() {
		if t.Failed() {
			rec.dump(t)
		}
	})
	s := f(t, o)
	if s.Transport == nil || s.Addr == "" {
		t.Fatal("transporttest: the Factory returned no Transport or Addr")
	}
	return &env{t: t, setup: s, opts: o, log: rec}
}

// fastKeepalive is an option modifier for tests of keepalive.
func fastKeepalive(o *transport.Options) {
	o.KeepaliveInterval = keepaliveInterval
	o.KeepaliveTimeout = keepaliveTimeout
}

func (e *env) listen(h transport.Handler, verify transport.Verify) transport.Listener {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	l, err := e.setup.Transport.Listen(ctx, e.setup.Addr, serverID, h, verify)
	if err != nil {
		e.t.Fatalf("Listen(%s): %v", e.setup.Addr, err)
	}
	e.t.Cleanup(func() { _ = l.Close() })
	return l
}

func (e *env) dialAs(addr string, id transport.Identity, verify transport.Verify) (transport.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := e.setup.Transport.Dial(ctx, addr, id, verify)
	if err == nil {
		e.t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

func (e *env) dial(addr string) transport.Conn {
	e.t.Helper()
	c, err := e.dialAs(addr, clientID, nil)
	if err != nil {
		e.t.Fatalf("Dial(%s): %v", addr, err)
	}
	return c
}

// pair starts a listener with the suite's handler and dials it.
func (e *env) pair() (*handler, transport.Listener, transport.Conn) {
	e.t.Helper()
	h := newHandler()
	l := e.listen(h, nil)
	return h, l, e.dial(l.Addr())
}

func (e *env) needRaw() {
	e.t.Helper()
	if e.setup.RawDial == nil {
		e.t.Skip("this transport offers no raw byte stream (Setup.RawDial)")
	}
}

func (e *env) needRawListen() {
	e.t.Helper()
	if e.setup.RawListen == nil {
		e.t.Skip("this transport offers no raw listener (Setup.RawListen)")
	}
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// within runs f and fails the test if it has not returned after waitLimit
// (a hang, not slowness).
func within[T any](t testing.TB, what string, f func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("%s did not return within %v: a hang", what, waitLimit)
	}
	panic("unreachable")
}

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// randomBytes returns n bytes of a seeded stream, so that a misplaced
// chunk shows up (a repeating pattern could hide it).
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0], s[1], s[2] = byte(seed), byte(seed>>8), byte(seed>>16)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// firstDiff is the first index where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func wantErr(t testing.TB, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("got error %q, want one matching %q", err, target)
		}
	}
}

// logRecorder is a slog.Handler that keeps every record, so a test can
// check what a connection's end was logged as. Handlers derived with
// WithAttrs share the store.
type logRecorder struct {
	store *logStore
	attrs []slog.Attr
}

type logStore struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
}

func newLogRecorder() *logRecorder { return &logRecorder{store: &logStore{}} }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	lr := logRecord{level: rec.Level, msg: rec.Message, attrs: append([]slog.Attr(nil), r.attrs...)}
	rec.Attrs(func(a slog.Attr) bool {
		lr.attrs = append(lr.attrs, a)
		return true
	})
	r.store.mu.Lock()
	r.store.recs = append(r.store.recs, lr)
	r.store.mu.Unlock()
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{store: r.store, attrs: append(append([]slog.Attr(nil), r.attrs...), as...)}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// loggedErr reports whether a record carries an "err" matching target.
func (r *logRecorder) loggedErr(target error) bool {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	for _, rec := range r.store.recs {
		for _, a := range rec.attrs {
			if e, ok := a.Value.Any().(error); ok && a.Key == "err" && errors.Is(e, target) {
				return true
			}
		}
	}
	return false
}

// dump logs every record, for a failed test.
func (r *logRecorder) dump(t testing.TB) {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	for _, rec := range r.store.recs {
		var b strings.Builder
		for _, a := range rec.attrs {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		}
		t.Logf("log: %s %s%s", rec.level, rec.msg, b.String())
	}
}
