package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/internal/logtest"
)

// fence is a DialFunc that connects only to the addresses allowed holds
// when it is called, standing in for a host that reaches only its
// neighbours; any other address is refused as a firewall would.
type fence struct {
	mu      sync.Mutex
	allowed map[string]bool
}

func (f *fence) allow(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.allowed == nil {
		f.allowed = make(map[string]bool)
	}
	for _, a := range addrs {
		f.allowed[a] = true
	}
}

func (f *fence) dial(ctx context.Context, addr string) (net.Conn, error) {
	f.mu.Lock()
	ok := f.allowed[addr]
	f.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}
	}
	return NetDial(ctx, addr)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// chain starts relays b, c (and more) where each relay reaches only the
// next one, and the last one reaches target.
func chain(t *testing.T, ids []string, target string) ([]*Server, []Hop) {
	t.Helper()
	var servers []*Server
	var hops []Hop
	fences := make([]*fence, len(ids))
	for i, id := range ids {
		fences[i] = &fence{}
		s := Serve(listen(t), ServerOptions{ID: id, Dial: fences[i].dial, SetupTimeout: 5 * time.Second})
		t.Cleanup(func() { _ = s.Close() })
		servers = append(servers, s)
		hops = append(hops, Hop{ID: id, Addr: s.Addr()})
	}
	for i := range ids {
		if i+1 < len(ids) {
			fences[i].allow(hops[i+1].Addr)
		} else {
			fences[i].allow(target)
		}
	}
	return servers, hops
}

func echoServer(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func TestRelayThreeHops(t *testing.T) {
	target := echoServer(t)
	_, hops := chain(t, []string{"b", "c", "d"}, target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialRoute(ctx, NetDial, "a", Route{Relays: hops, Target: Hop{ID: "e", Addr: target}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go func() { _, _ = c.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != msg[i] {
			t.Fatalf("byte %d: got %d, want %d", i, got[i], msg[i])
		}
	}
}

func TestRelayRefusals(t *testing.T) {
	target := echoServer(t)
	_, hops := chain(t, []string{"b", "c", "d"}, target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	raw := func(h Header) error {
		c, err := NetDial(ctx, hops[0].Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return handshake(ctx, c, &h)
	}
	tgt := Hop{ID: "e", Addr: target}

	// A hop limit the path outgrows half way: b and c accept, d refuses,
	// and the refusal travels back to the dialer.
	err := raw(Header{HopLimit: 3, Trail: []string{"a"}, Via: hops[1:], Target: tgt})
	if err != nil {
		t.Fatalf("limit 3 over 3 relays: %v", err)
	}
	// A header that claims more relays than its limit is refused at b.
	h := Header{HopLimit: 2, Trail: []string{"a"}, Via: hops[1:], Target: tgt}
	if err := raw(h); !errors.Is(err, ErrHopLimit) {
		t.Fatalf("three relays with limit 2: %v, want ErrHopLimit", err)
	}

	// A path through b twice is refused by b before it dials anything.
	h = Header{HopLimit: 8, Trail: []string{"a"}, Via: []Hop{hops[1], hops[0]}, Target: tgt}
	if err := raw(h); !errors.Is(err, ErrLoop) {
		t.Fatalf("b twice: %v, want ErrLoop", err)
	}
	// A trail that already holds c, with c still ahead: refused too.
	h = Header{HopLimit: 8, Trail: []string{"a", "c"}, Via: hops[1:2], Target: tgt}
	if err := raw(h); !errors.Is(err, ErrLoop) {
		t.Fatalf("c in trail: %v, want ErrLoop", err)
	}

	// b reaches only c: skipping c is refused with ErrNextHop.
	h = Header{HopLimit: 8, Trail: []string{"a"}, Via: hops[2:], Target: tgt}
	if err := raw(h); !errors.Is(err, ErrNextHop) {
		t.Fatalf("b to d: %v, want ErrNextHop", err)
	}

	// Garbage at a relay port: a clear refusal, not a hang.
	sendGarbage(ctx, t, hops[0].Addr)
}

// A connection closed before its first byte is a reachability probe
// (owners probe their neighbours' relay addresses every 2 s): logged at
// debug level only, where a bad header is a warning.
func TestProbeIsNotARefusal(t *testing.T) {
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ln := listen(t)
	s := Serve(ln, ServerOptions{ID: "b", Dial: NetDial, Log: log, SetupTimeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		c, err := NetDial(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	sendGarbage(ctx, t, ln.Addr().String())
	for logs.Lines("closed before a header") < 3 {
		if ctx.Err() != nil {
			t.Fatalf("the probes were not logged:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.Lines("level=WARN"); n != 1 || logs.Lines("refused a path") != 1 {
		t.Fatalf("%d warnings, want the bad header's alone:\n%s", n, logs.String())
	}
}

// sendGarbage writes an HTTP request to the relay port at addr and checks
// that the relay refuses it with ErrBadHeader.
func sendGarbage(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	c, err := NetDial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := readReply(c); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("garbage: %v, want ErrBadHeader", err)
	}
}
