package rpc_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// memberTTL is the member lease of the test members; Close revokes it at
// once, so no test waits for it.
const memberTTL = 10 * time.Second

// metaNode is a node registered as a cluster member.
type metaNode struct {
	node *rpc.Node
	reg  *meta.Registration
}

// startMetaNode starts a node resolving through its own MetaResolver on
// store and registers it as a member with its rpc endpoint.
func startMetaNode(t *testing.T, store *meta.Store, key string, role meta.Role, start time.Time) *metaNode {
	t.Helper()
	ctx := ctxLimit(t)
	res, err := rpc.NewMetaResolver(ctx, store, rpc.MetaResolverOptions{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Close() })
	id := transport.Identity{ClusterName: testCluster, InstanceKey: key, StartTime: start, Role: string(role)}
	n, err := rpc.New(rpc.Options{Local: id, Transport: newTransport(t, 0), ListenAddr: "127.0.0.1:0", Resolver: res, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	registerTestHandlers(t, n)
	addr, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	reg, err := store.Register(ctx, meta.Member{
		InstanceKey: key, NodeID: "node-" + key, Role: role, ClusterName: testCluster, Host: host,
		PID: os.Getpid(), StartTime: start, Endpoints: map[string]string{rpc.EndpointKey: addr},
	}, memberTTL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return &metaNode{node: n, reg: reg}
}

func TestMetaResolver(t *testing.T) {
	url := metatest.Embedded(t)
	ctx := ctxLimit(t)
	store, err := meta.Connect(ctx, []string{url}, testCluster, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() }) // after the members' and resolvers' cleanups
	now := time.Now()
	a := startMetaNode(t, store, "a", meta.RoleOwner, now)
	b := startMetaNode(t, store, "b", meta.RoleOwner, now.Add(time.Millisecond))
	c := startMetaNode(t, store, "c", meta.RoleExternal, now.Add(2*time.Millisecond))
	all := map[string]*metaNode{"a": a, "b": b, "c": c}

	// Every node learns every other through the watch, and calls it.
	for from, n := range all {
		for to := range all {
			waitFor(t, from+" to reach "+to, func() bool {
				got, err := n.node.Call(ctx, "node-"+to, pathWhoAmI, nil)
				return err == nil && string(got) == to+" "+n.node.Local().Incarnation()
			})
		}
	}

	_, err = a.node.Call(ctx, "node-nobody", pathEcho, nil)
	wantErr(t, err, rpc.ErrUnknownNode)

	// A member without an rpc endpoint is an unknown node, saying why.
	host, _ := os.Hostname()
	plain, err := store.Register(ctx, meta.Member{InstanceKey: "plain", NodeID: "node-plain", Role: meta.RoleExternal,
		ClusterName: testCluster, Host: host, PID: os.Getpid(), StartTime: now}, memberTTL)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	waitFor(t, "the endpoint-less member to be known", func() bool {
		_, err := a.node.Call(ctx, "node-plain", pathEcho, nil)
		return errors.Is(err, rpc.ErrUnknownNode) && strings.Contains(err.Error(), "endpoint")
	})

	// b leaves while a call to it runs: the call fails at once, later
	// calls say b left.
	blk := blockedOn(b.node)
	errc := make(chan error, 1)
	go func() {
		_, err := a.node.Call(ctx, "node-b", pathBlock, nil)
		errc <- err
	}()
	recv(t, blk.started, "b's handler to start")
	if err := b.reg.Close(); err != nil {
		t.Fatal(err)
	}
	err = recv(t, errc, "the call in flight to the departed b")
	wantErr(t, err, rpc.ErrPeerGone)
	t.Logf("in flight when b left: %v", err)
	_, err = a.node.Call(ctx, "node-b", pathEcho, nil)
	wantErr(t, err, rpc.ErrPeerGone)
	_ = b.node.Close()

	// b comes back as a new incarnation and is reachable once registered.
	b2 := startMetaNode(t, store, "b", meta.RoleOwner, now.Add(time.Hour))
	waitFor(t, "a to reach the new b", func() bool {
		got, err := a.node.Call(ctx, "node-b", pathWhoAmI, nil)
		return err == nil && string(got) == "b "+a.node.Local().Incarnation()
	})
	if got, err := b2.node.Call(ctx, "node-c", pathEcho, []byte("back")); err != nil || string(got) != "back" {
		t.Fatalf("new b → c: %q, %v", got, err)
	}
}

// fakeSource is a MemberSource whose listing and watch the test drives.
type fakeSource struct {
	mu      sync.Mutex
	members []meta.Member
	rev     int64
	lists   int
	events  chan []meta.MemberEvent
	errc    chan error
}

func (f *fakeSource) Members(context.Context) ([]meta.Member, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	return append([]meta.Member(nil), f.members...), f.rev, nil
}

func (f *fakeSource) WatchMembers(ctx context.Context, _ int64) (<-chan []meta.MemberEvent, <-chan error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events, f.errc = make(chan []meta.MemberEvent), make(chan error, 1)
	events, errc := f.events, f.errc
	out := make(chan []meta.MemberEvent)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case b, ok := <-events:
				if !ok {
					return
				}
				out <- b
			}
		}
	}()
	return out, errc
}

// breakWatch ends the current watch with an error, as a compaction does.
func (f *fakeSource) breakWatch(members []meta.Member) {
	f.mu.Lock()
	f.members = members
	f.rev++
	f.errc <- errors.New("compacted")
	close(f.events)
	f.mu.Unlock()
}

func (f *fakeSource) send(b []meta.MemberEvent) {
	f.mu.Lock()
	ch := f.events
	f.mu.Unlock()
	ch <- b
}

func member(key string, start time.Time, addr string) meta.Member {
	return meta.Member{InstanceKey: key, NodeID: "n-" + key, Role: meta.RoleOwner, ClusterName: testCluster,
		StartTime: start, Endpoints: map[string]string{rpc.EndpointKey: addr}}
}

// TestMetaResolverEvents drives the resolver with events and a broken
// watch, without etcd.
func TestMetaResolverEvents(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	src := &fakeSource{members: []meta.Member{member("a", t0, "h:1"), member("b", t0, "h:2")}}
	r, err := rpc.NewMetaResolver(ctxLimit(t), src, rpc.MetaResolverOptions{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var mu sync.Mutex
	var changed []string
	stop := r.Watch(func(id string) {
		mu.Lock()
		changed = append(changed, id)
		mu.Unlock()
	})
	defer stop()
	seen := func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range changed {
			if c == id {
				return true
			}
		}
		return false
	}

	addr, id, err := r.Resolve("n-a")
	if err != nil || addr != "h:1" || id.InstanceKey != "a" || !id.StartTime.Equal(t0) || id.Role != "owner" || id.ClusterName != testCluster {
		t.Fatalf("Resolve(n-a) = %q, %+v, %v", addr, id, err)
	}
	_, _, err = r.Resolve("n-zz")
	wantErr(t, err, rpc.ErrUnknownNode)

	waitFor(t, "the watch to start", func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return src.events != nil
	})
	// b restarts: a new incarnation under the same key.
	src.send([]meta.MemberEvent{{InstanceKey: "b", Member: member("b", t0.Add(time.Second), "h:3")}})
	waitFor(t, "b's restart to be seen", func() bool { return seen("n-b") })
	addr, id, err = r.Resolve("n-b")
	if err != nil || addr != "h:3" || !id.StartTime.Equal(t0.Add(time.Second)) {
		t.Fatalf("Resolve(n-b) after its restart = %q, %+v, %v", addr, id, err)
	}
	if got, ok := r.LookupInstance("b"); !ok || !got.StartTime.Equal(t0.Add(time.Second)) {
		t.Fatalf("LookupInstance(b) = %+v, %v", got, ok)
	}

	// a leaves.
	src.send([]meta.MemberEvent{{InstanceKey: "a", Deleted: true}})
	waitFor(t, "a's departure to be seen", func() bool { return seen("n-a") })
	_, _, err = r.Resolve("n-a")
	wantErr(t, err, rpc.ErrPeerGone)

	// The watch breaks; meanwhile c joined and b left. The relisting
	// brings the resolver up to date and notifies both.
	mu.Lock()
	changed = nil
	mu.Unlock()
	src.breakWatch([]meta.Member{member("c", t0, "h:4")})
	waitFor(t, "the relisting", func() bool { return seen("n-b") && seen("n-c") })
	if addr, _, err := r.Resolve("n-c"); err != nil || addr != "h:4" {
		t.Fatalf("Resolve(n-c) after the relisting = %q, %v", addr, err)
	}
	_, _, err = r.Resolve("n-b")
	wantErr(t, err, rpc.ErrPeerGone)
	src.mu.Lock()
	lists := src.lists
	src.mu.Unlock()
	if lists != 2 {
		t.Errorf("listed %d times, want 2", lists)
	}
}
