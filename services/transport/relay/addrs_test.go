package relay

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

func TestAddrsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		addrs []string
		enc   string
	}{
		{[]string{"10.0.0.1:7300"}, "10.0.0.1:7300"}, // what a member with one address always advertised
		{[]string{"10.0.1.5:7300", "10.0.2.5:7301"}, "10.0.1.5:7300,10.0.2.5:7301"},
		{[]string{"[fd00::5]:7300", "relay-b.example:7301", "10.0.2.5:0"}, "[fd00::5]:7300,relay-b.example:7301,10.0.2.5:0"},
	} {
		enc, err := EncodeAddrs(tc.addrs)
		if err != nil || enc != tc.enc {
			t.Errorf("EncodeAddrs(%q) = %q, %v; want %q", tc.addrs, enc, err, tc.enc)
			continue
		}
		got, err := ParseAddrs(enc)
		if err != nil || !slices.Equal(got, tc.addrs) {
			t.Errorf("ParseAddrs(%q) = %q, %v; want %q", enc, got, err, tc.addrs)
		}
	}
}

func TestAddrsRejects(t *testing.T) {
	for _, s := range []string{"", ",", "10.0.0.1", "10.0.0.1:1,", "10.0.0.1:1,10.0.0.1:1", "10.0.0.1:1, 10.0.0.2:1", "fd00::1:7300", "a b:1"} {
		if got, err := ParseAddrs(s); !errors.Is(err, ErrBadAddrs) {
			t.Errorf("ParseAddrs(%q) = %q, %v; want ErrBadAddrs", s, got, err)
		}
	}
	for _, addrs := range [][]string{nil, {""}, {"10.0.0.1:1", "10.0.0.1:1"}, {"10.0.0.1:1,10.0.0.2:1"}} {
		if got, err := EncodeAddrs(addrs); !errors.Is(err, ErrBadAddrs) {
			t.Errorf("EncodeAddrs(%q) = %q, %v; want ErrBadAddrs", addrs, got, err)
		}
	}
}

func TestCandidates(t *testing.T) {
	got := candidates([]string{"", "b:1", "a:1"}, []string{"a:1", "c:1", "b:1"})
	if want := []string{"b:1", "a:1", "c:1"}; !slices.Equal(got, want) {
		t.Fatalf("candidates = %q, want %q", got, want)
	}
}

// A relay whose header names an address of the next relay that refuses
// connections (and which has no probe result for it) dials the next
// relay's other advertised addresses in order.
func TestServerFallsBackToAdvertised(t *testing.T) {
	target := echoServer(t)
	refused := listen(t)
	refusedAddr := refused.Addr().String()
	_ = refused.Close()
	c := Serve(listen(t), ServerOptions{ID: "c"})
	t.Cleanup(func() { _ = c.Close() })
	dir := &StaticDirectory{Relays: map[string][]string{"c": {refusedAddr, c.Addr()}}}
	b := Serve(listen(t), ServerOptions{ID: "b", Dir: dir})
	t.Cleanup(func() { _ = b.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	route := Route{Relays: []Hop{{ID: "b", Addr: b.Addr()}, {ID: "c", Addr: refusedAddr}}, Target: Hop{ID: "d", Addr: target}}
	conn, err := DialRoute(ctx, NetDial, "a", route, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}

	// Without the directory, the refused address is all b knows.
	bare := Serve(listen(t), ServerOptions{ID: "b"})
	t.Cleanup(func() { _ = bare.Close() })
	route.Relays[0].Addr = bare.Addr()
	if _, err := DialRoute(ctx, NetDial, "a", route, 0); !errors.Is(err, ErrNextHop) {
		t.Fatalf("without a directory: %v, want ErrNextHop", err)
	}
}
