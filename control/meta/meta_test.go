package meta_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
)

// memberTTL is the shortest lease etcd grants with its default timings.
const memberTTL = 2 * time.Second

// backends runs a test against an embedded etcd and against Debian's etcd
// server as a separate process: the same suite for both.
func backends(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("embedded", func(t *testing.T) { t.Parallel(); f(t, metatest.Embedded(t)) })
	t.Run("process", func(t *testing.T) { t.Parallel(); f(t, metatest.StartProcess(t).URL) })
}

func connect(t *testing.T, url, cluster string) *meta.Store {
	t.Helper()
	s, err := meta.Connect(context.Background(), []string{url}, cluster, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func member(key string, role meta.Role, host string) meta.Member {
	return meta.Member{InstanceKey: key, NodeID: key, Role: role, ClusterName: "c", Host: host, PID: os.Getpid(),
		StartTime: time.Now().UTC(), Endpoints: map[string]string{"http": "127.0.0.1:1"}, PoolDRAM: 64 << 20}
}

func memberKeys(t *testing.T, s *meta.Store) []string {
	t.Helper()
	ms, _, err := s.Members(context.Background())
	require.NoError(t, err)
	var out []string
	for _, m := range ms {
		out = append(out, m.InstanceKey)
	}
	return out
}

func TestConnectUnreachable(t *testing.T) {
	_, err := meta.Connect(context.Background(), []string{"http://" + metatest.FreeAddr(t)}, "c", nil)
	require.ErrorIs(t, err, meta.ErrEtcdUnreachable)
	require.Contains(t, err.Error(), "etcd_endpoints")
}

func TestRegistrationLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := connect(t, url, "c")
		r, err := s.Register(ctx, member("o1", meta.RoleOwner, "h1"), memberTTL)
		require.NoError(t, err)
		require.Equal(t, []string{"o1"}, memberKeys(t, s))

		// Clean close: the record goes at once, not after the TTL.
		require.NoError(t, r.Close())
		require.Empty(t, memberKeys(t, s))

		// Crash: the process stops talking to etcd without revoking; the
		// record disappears when the lease ends.
		crashing := connect(t, url, "c")
		_, err = crashing.Register(ctx, member("o2", meta.RoleOwner, "h1"), memberTTL)
		require.NoError(t, err)
		require.Equal(t, []string{"o2"}, memberKeys(t, s))
		require.NoError(t, crashing.Close())
		metatest.WaitFor(t, 4*memberTTL, "crashed member's record to expire", func() bool { return len(memberKeys(t, s)) == 0 })
	})
}

func TestDuplicateInstanceKeyRefused(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s1, s2 := connect(t, url, "c"), connect(t, url, "c")
		r1, err := s1.Register(ctx, member("same", meta.RoleOwner, "host-a"), memberTTL)
		require.NoError(t, err)
		defer r1.Close()
		_, err = s2.Register(ctx, member("same", meta.RoleOwner, "host-b"), memberTTL)
		require.ErrorIs(t, err, meta.ErrDuplicateInstance)
		require.Contains(t, err.Error(), "host-a", "the error names who holds the key")
		require.Contains(t, err.Error(), "choose another instance_key")

		// The refused attempt left the holder's record alone.
		ms, _, err := s1.Members(ctx)
		require.NoError(t, err)
		require.Len(t, ms, 1)
		require.Equal(t, "host-a", ms[0].Host)
	})
}

func TestDeadProcessRecordTakenOver(t *testing.T) {
	url := metatest.Embedded(t)
	ctx := context.Background()
	s := connect(t, url, "c")
	host, _ := os.Hostname()
	dead := member("o", meta.RoleOwner, host)
	dead.PID = 1 << 22 // above pid_max's default: no such process
	dead.StartTime = dead.StartTime.Add(-time.Hour)
	crashed := connect(t, url, "c")
	_, err := crashed.Register(ctx, dead, time.Minute)
	require.NoError(t, err)
	require.NoError(t, crashed.Close()) // its lease would keep the record for a minute

	r, err := s.Register(ctx, member("o", meta.RoleOwner, host), memberTTL)
	require.NoError(t, err, "a record of a dead process on this host is taken over, not waited out")
	defer r.Close()
	ms, _, err := s.Members(ctx)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, os.Getpid(), ms[0].PID)
}

func TestClustersIsolated(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		ctx := context.Background()
		a, b := connect(t, url, "alpha"), connect(t, url, "beta")
		ra, err := a.Register(ctx, member("x", meta.RoleOwner, "h"), memberTTL)
		require.NoError(t, err)
		defer ra.Close()
		// The same instance_key in another cluster is a different member.
		rb, err := b.Register(ctx, member("x", meta.RoleOwner, "h2"), memberTTL)
		require.NoError(t, err)
		defer rb.Close()
		rb2, err := b.Register(ctx, member("y", meta.RoleOwner, "h2"), memberTTL)
		require.NoError(t, err)
		defer rb2.Close()
		require.Equal(t, []string{"x"}, memberKeys(t, a))
		require.ElementsMatch(t, []string{"x", "y"}, memberKeys(t, b))

		la, err := a.Campaign(ctx, "ma", memberTTL)
		require.NoError(t, err)
		defer la.Resign(ctx)
		lb, err := b.Campaign(ctx, "mb", memberTTL)
		require.NoError(t, err, "each cluster elects its own master")
		defer lb.Resign(ctx)
		require.NoError(t, la.PublishRouting(ctx, meta.RoutingTable{Epoch: 7}))
		_, _, err = b.Routing(ctx)
		require.ErrorIs(t, err, meta.ErrNoRoutingTable, "beta sees nothing alpha published")
	})
}

func TestElectionFailover(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s1, s2 := connect(t, url, "c"), connect(t, url, "c")
		l1, err := s1.Campaign(ctx, "m1", memberTTL)
		require.NoError(t, err)
		leader, err := s2.Leader(ctx)
		require.NoError(t, err)
		require.Equal(t, "m1", leader)

		won := make(chan *meta.Leadership, 1)
		go func() {
			l2, err := s2.Campaign(ctx, "m2", memberTTL)
			if err == nil {
				won <- l2
			}
		}()
		select {
		case <-won:
			t.Fatal("a standby must not lead while the leader lives")
		case <-time.After(500 * time.Millisecond):
		}
		// The leader's process dies: its session lease ends, the standby leads.
		start := time.Now()
		require.NoError(t, s1.Close())
		var l2 *meta.Leadership
		select {
		case l2 = <-won:
		case <-time.After(5 * time.Second):
			t.Fatal("standby did not lead within 5s of the leader's death")
		}
		t.Logf("standby led %s after the leader died", time.Since(start).Round(time.Millisecond))
		defer l2.Resign(ctx)
		leader, err = s2.Leader(ctx)
		require.NoError(t, err)
		require.Equal(t, "m2", leader)

		// The deposed leader can no longer publish.
		require.ErrorIs(t, l1.PublishRouting(context.Background(), meta.RoutingTable{Epoch: 99}), meta.ErrEtcdUnreachable,
			"its connection is closed")
		require.NoError(t, l2.PublishRouting(ctx, meta.RoutingTable{Epoch: 3, Master: "m2"}))
		tb, _, err := s2.Routing(ctx)
		require.NoError(t, err)
		require.Equal(t, uint64(3), tb.Epoch)
	})
}

func TestPublishGuardedByLeadership(t *testing.T) {
	url := metatest.Embedded(t)
	ctx := context.Background()
	s := connect(t, url, "c")
	l1, err := s.Campaign(ctx, "m1", memberTTL)
	require.NoError(t, err)
	require.NoError(t, l1.PublishRouting(ctx, meta.RoutingTable{Epoch: 1}))
	require.NoError(t, l1.Resign(ctx))
	l2, err := s.Campaign(ctx, "m2", memberTTL)
	require.NoError(t, err)
	defer l2.Resign(ctx)
	err = l1.PublishRouting(ctx, meta.RoutingTable{Epoch: 100})
	require.True(t, errors.Is(err, meta.ErrNotLeader), "got %v", err)
	tb, _, err := s.Routing(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), tb.Epoch, "a deposed master's write never lands")
}

func TestWatchRouting(t *testing.T) {
	url := metatest.Embedded(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := connect(t, url, "c")
	_, rev, err := s.Routing(ctx)
	require.ErrorIs(t, err, meta.ErrNoRoutingTable)
	ch := s.WatchRouting(ctx, rev)
	l, err := s.Campaign(ctx, "m", memberTTL)
	require.NoError(t, err)
	defer l.Resign(context.Background())
	for e := uint64(1); e <= 3; e++ {
		require.NoError(t, l.PublishRouting(ctx, meta.RoutingTable{Epoch: e}))
	}
	for e := uint64(1); e <= 3; e++ {
		select {
		case tb := <-ch:
			require.Equal(t, e, tb.Epoch)
		case <-time.After(5 * time.Second):
			t.Fatalf("routing epoch %d not delivered", e)
		}
	}
}

func TestRegistrationSurvivesEtcdRestart(t *testing.T) {
	p := metatest.StartProcess(t)
	ctx := context.Background()
	s := connect(t, p.URL, "c")
	r, err := s.Register(ctx, member("o", meta.RoleOwner, "h"), memberTTL)
	require.NoError(t, err)
	defer r.Close()
	// etcd is gone for longer than the lease; the member must come back by itself.
	p.Kill()
	time.Sleep(3 * memberTTL)
	p.Restart(t)
	metatest.WaitFor(t, 20*time.Second, "member to be registered again after the outage", func() bool {
		ms, _, err := s.Members(ctx)
		return err == nil && len(ms) == 1 && ms[0].InstanceKey == "o"
	})
	// And its lease is live again: it survives beyond a TTL.
	time.Sleep(2 * memberTTL)
	require.Equal(t, []string{"o"}, memberKeys(t, s))
}

func TestReachGraph(t *testing.T) {
	backends(t, func(t *testing.T, url string) {
		s := connect(t, url, "reach")
		ctx := context.Background()
		require.NoError(t, s.PublishReach(ctx, "a", map[string]string{"c": "", "b": ""}, memberTTL))
		require.NoError(t, s.PublishReach(ctx, "b", map[string]string{"a": "", "c": "10.0.2.5:7301"}, memberTTL))
		require.NoError(t, s.PublishReach(ctx, "a", map[string]string{"b": ""}, memberTTL)) // a newer probe replaces the old
		g, err := s.ReachGraph(ctx)
		require.NoError(t, err)
		require.Len(t, g, 2)
		require.Equal(t, []string{"b"}, g["a"].Reaches)
		require.Nil(t, g["a"].At)
		require.Equal(t, []string{"a", "c"}, g["b"].Reaches)
		require.Equal(t, map[string]string{"c": "10.0.2.5:7301"}, g["b"].At)

		// The stored form: addresses only for members with a choice, and
		// none at all where no member has one (records as before "at").
		raw := func(key string) string {
			kv, ok, err := s.MQ().Get(ctx, s.Keys().ReachOf(key))
			require.NoError(t, err)
			require.True(t, ok)
			return string(kv.Value)
		}
		require.Regexp(t, `^\{"reaches":\["a","c"\],"at":\{"c":"10.0.2.5:7301"\},"probed_at":"[^"]+"\}$`, raw("b"))
		require.Regexp(t, `^\{"reaches":\["b"\],"probed_at":"[^"]+"\}$`, raw("a"))
		// A record of an older member, without "at", reads as reaching by default address.
		require.NoError(t, s.MQ().Put(ctx, s.Keys().ReachOf("old"), []byte(`{"reaches":["a"],"probed_at":"2026-01-01T00:00:00Z"}`), 0))
		g, err = s.ReachGraph(ctx)
		require.NoError(t, err)
		require.Equal(t, meta.ReachRecord{Reaches: []string{"a"}, ProbedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, g["old"])
		require.NoError(t, s.MQ().Delete(ctx, s.Keys().ReachOf("old"), nil))

		// Probes reuse one lease; one that ended is replaced; a member
		// that stops probing drops out after the TTL.
		lease := func() int64 {
			kv, ok, err := s.MQ().Get(ctx, s.Keys().ReachOf("a"))
			require.NoError(t, err)
			require.True(t, ok)
			return kv.Lease
		}
		first := lease()
		require.NoError(t, s.PublishReach(ctx, "a", map[string]string{"b": ""}, memberTTL))
		require.Equal(t, first, lease(), "a second probe took a new lease")
		require.NoError(t, s.MQ().Revoke(ctx, first))
		require.NoError(t, s.PublishReach(ctx, "a", map[string]string{"b": ""}, memberTTL))
		require.NotEqual(t, first, lease())
		metatest.WaitFor(t, 4*memberTTL, "b's record to expire", func() bool {
			g, err := s.ReachGraph(ctx)
			_, ok := g["b"]
			return err == nil && !ok
		})
	})
}
