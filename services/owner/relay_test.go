package owner

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/transport/relay"
)

func TestBuildDirectory(t *testing.T) {
	members := []meta.Member{
		{InstanceKey: "a", Endpoints: map[string]string{"rpc": "10.0.0.1:1", "kv": "10.0.0.1:2", RelayEndpointKey: "10.0.0.1:3", "socket": "/run/x"}},
		{InstanceKey: "b", Endpoints: map[string]string{"rpc": "10.0.1.2:1", RelayEndpointKey: "10.0.1.2:3,10.0.2.2:4"}},
		{InstanceKey: "d", Endpoints: map[string]string{"rpc": "10.0.0.4:1", "kv": "10.0.0.4:2"}},
		{InstanceKey: "e", Endpoints: map[string]string{RelayEndpointKey: "10.0.0.5:3, 10.0.0.6:3"}}, // unreadable: no relay
	}
	reach := map[string]meta.ReachRecord{
		"a": {Reaches: []string{"b", "d"}, At: map[string]string{"b": "10.0.1.2:3"}},
		"d": {Reaches: []string{"b"}, At: map[string]string{"b": "10.0.2.2:4"}},
	}
	d := buildDirectory(members, reach)
	if id, ok := d.MemberAt("10.0.0.4:2"); !ok || id != "d" {
		t.Fatalf("MemberAt(d's kv) = %q %v", id, ok)
	}
	if id, ok := d.MemberAt("10.0.2.2:4"); !ok || id != "b" {
		t.Fatalf("MemberAt(b's second relay address) = %q %v", id, ok)
	}
	if _, ok := d.MemberAt("/run/x"); ok {
		t.Fatal("a socket path is no network endpoint")
	}
	if !slices.Equal(d.RelayAddrs("a"), []string{"10.0.0.1:3"}) || !slices.Equal(d.RelayAddrs("b"), []string{"10.0.1.2:3", "10.0.2.2:4"}) ||
		d.RelayAddrs("d") != nil || d.RelayAddrs("e") != nil {
		t.Fatalf("relays %v", d.Relays)
	}
	if d.ReachedAt("a", "b") != "10.0.1.2:3" || d.ReachedAt("d", "b") != "10.0.2.2:4" || d.ReachedAt("a", "d") != "" || d.ReachedAt("b", "a") != "" {
		t.Fatalf("reached addresses %v", d.ReachedAddr)
	}
	if !slices.Equal(d.Graph()["a"], []string{"b", "d"}) || !slices.Equal(d.Graph()["d"], []string{"b"}) {
		t.Fatalf("graph %v", d.Graph())
	}
}

// acceptor accepts and closes connections on a fresh listener at host.
func acceptor(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// refusing is an address where nothing listens.
func refusing(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestProbe(t *testing.T) {
	up, up2, second := acceptor(t, "127.0.0.1"), acceptor(t, "127.0.0.2"), acceptor(t, "127.0.0.3")
	got := probe(context.Background(), relay.NetDial, map[string][]string{
		"up":     {up},
		"both":   {up2, up}, // both answer: the first in the member's order
		"second": {refusing(t, "127.0.0.2"), second},
		"down":   {refusing(t, "127.0.0.1"), refusing(t, "127.0.0.3")},
	})
	want := map[string]string{"up": up, "both": up2, "second": second}
	if len(got) != len(want) {
		t.Fatalf("probe reached %v, want %v", got, want)
	}
	for id, a := range want {
		if got[id] != a {
			t.Fatalf("probe reached %v, want %v", got, want)
		}
	}
}

func TestRelayListeners(t *testing.T) {
	lns, addrs, err := relayListeners("127.0.0.1:0", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	_ = lns[0].Close()
	if len(addrs) != 1 || !strings.HasPrefix(addrs[0], "127.0.0.1:") || addrs[0] == "127.0.0.1:0" {
		t.Fatalf("default: %v, want one free port on the host of listen.transport", addrs)
	}

	fixed := refusing(t, "127.0.0.3")
	lns, addrs, err = relayListeners("127.0.0.1:0", []string{"127.0.0.2", fixed}, "ignored.example")
	if err != nil {
		t.Fatal(err)
	}
	for i, ln := range lns {
		if ln.Addr().String() != addrs[i] {
			t.Errorf("listener %d on %s, advertised %s", i, ln.Addr(), addrs[i])
		}
	}
	if len(addrs) != 2 || !strings.HasPrefix(addrs[0], "127.0.0.2:") || addrs[1] != fixed {
		t.Fatalf("listening on %v, want 127.0.0.2:<free> and %s", addrs, fixed)
	}

	// The second address taken: an error naming it, and the listener
	// opened for the first is closed again (its port is free).
	first := refusing(t, "127.0.0.4")
	_, _, err = relayListeners("127.0.0.1:0", []string{first, fixed}, "")
	if err == nil || !strings.Contains(err.Error(), "network.relay_addresses[1]") {
		t.Fatalf("busy address: %v, want an error naming network.relay_addresses[1]", err)
	}
	ln, err := net.Listen("tcp", first)
	if err != nil {
		t.Fatalf("the first listener was left open: %v", err)
	}
	_ = ln.Close()
	for _, ln := range lns {
		_ = ln.Close()
	}
}
