package owner

import (
	"context"
	"net"
	"slices"
	"testing"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/transport/relay"
)

func TestBuildDirectory(t *testing.T) {
	members := []meta.Member{
		{InstanceKey: "a", Endpoints: map[string]string{"rpc": "10.0.0.1:1", "kv": "10.0.0.1:2", RelayEndpointKey: "10.0.0.1:3", "socket": "/run/x"}},
		{InstanceKey: "d", Endpoints: map[string]string{"rpc": "10.0.0.4:1", "kv": "10.0.0.4:2"}},
	}
	g := relay.Graph{"a": {"d"}}
	d := buildDirectory(members, g)
	if id, ok := d.MemberAt("10.0.0.4:2"); !ok || id != "d" {
		t.Fatalf("MemberAt(d's kv) = %q %v", id, ok)
	}
	if _, ok := d.MemberAt("/run/x"); ok {
		t.Fatal("a socket path is no network endpoint")
	}
	if d.RelayAddr("a") != "10.0.0.1:3" || d.RelayAddr("d") != "" {
		t.Fatalf("relays %v", d.Relays)
	}
	if !slices.Equal(d.Graph()["a"], []string{"d"}) {
		t.Fatal("graph not kept")
	}
}

func TestProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	got := probe(context.Background(), relay.NetDial, map[string]string{"up": ln.Addr().String(), "down": deadAddr})
	if !slices.Equal(got, []string{"up"}) {
		t.Fatalf("probe reached %v, want [up]", got)
	}
}
