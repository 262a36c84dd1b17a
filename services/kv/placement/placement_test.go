package placement

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func nodes(n int) []Node {
	out := make([]Node, n)
	for i := range out {
		out[i] = Node{ID: fmt.Sprintf("owner-%d", i), Host: fmt.Sprintf("host-%d", i)}
	}
	return out
}

func TestHomeIsDeterministicAndBalanced(t *testing.T) {
	ns := nodes(5)
	counts := make([]int, len(ns))
	const keys = 50000
	for k := 0; k < keys; k++ {
		h := KeyHash(fmt.Sprint("key-", k))
		i := Home(h, ns)
		require.Equal(t, i, Home(h, ns))
		counts[i]++
	}
	for i, c := range counts {
		// Within 5 % of the fair share: a binomial with these numbers stays
		// well inside that.
		require.InDelta(t, keys/len(ns), c, 0.05*keys/float64(len(ns)), "node %d", i)
	}
	require.Equal(t, -1, Home(1, nil))
}

func TestHomeOrderIndependent(t *testing.T) {
	ns := nodes(4)
	rev := []Node{ns[3], ns[2], ns[1], ns[0]}
	for k := 0; k < 1000; k++ {
		h := KeyHash(fmt.Sprint(k))
		require.Equal(t, ns[Home(h, ns)].ID, rev[Home(h, rev)].ID)
	}
}

func TestMinimalMovementOnJoinAndLeave(t *testing.T) {
	before := nodes(4)
	after := nodes(5) // owner-4 joins
	moved, movedElsewhere := 0, 0
	const keys = 40000
	for k := 0; k < keys; k++ {
		h := KeyHash(fmt.Sprint("k", k))
		a, b := before[Home(h, before)].ID, after[Home(h, after)].ID
		if a != b {
			moved++
			if b != "owner-4" {
				movedElsewhere++
			}
		}
	}
	require.Zero(t, movedElsewhere, "a join only takes keys to the new node")
	require.InDelta(t, keys/5, moved, 0.05*keys/5, "about 1/n of the keys move")

	// Leave: only the leaver's keys move.
	left := []Node{before[0], before[1], before[3]}
	for k := 0; k < keys; k++ {
		h := KeyHash(fmt.Sprint("k", k))
		a := before[Home(h, before)].ID
		if a != "owner-2" {
			require.Equal(t, a, left[Home(h, left)].ID)
		}
	}
}

func TestReplicasDistinctHostsWriterFirst(t *testing.T) {
	ns := []Node{{ID: "a1", Host: "A"}, {ID: "a2", Host: "A"}, {ID: "b1", Host: "B"}, {ID: "c1", Host: "C"}}
	for k := 0; k < 500; k++ {
		h := KeyHash(fmt.Sprint(k))
		r := Replicas(h, ns, 3, 1)
		require.Len(t, r, 3)
		require.Equal(t, 1, r[0], "the writer's own node first")
		hosts := map[string]bool{}
		for _, i := range r {
			require.False(t, hosts[ns[i].Host], "one replica per host")
			hosts[ns[i].Host] = true
		}
		require.Len(t, Replicas(h, ns, 9, -1), 3, "no more replicas than hosts")
	}
	require.Nil(t, Replicas(1, ns, 0, 0))
	// Without a preference the first replica is the home.
	for k := 0; k < 200; k++ {
		h := KeyHash(fmt.Sprint(k))
		require.Equal(t, Home(h, ns), Replicas(h, ns, 2, -1)[0])
	}
}

func TestRankStartsWithTheHome(t *testing.T) {
	nodes := []Node{{ID: "a", Host: "h1"}, {ID: "b", Host: "h1"}, {ID: "c", Host: "h2"}, {ID: "d", Host: "h3"}}
	for k := 0; k < 200; k++ {
		h := KeyHash(fmt.Sprint("key", k))
		r := Rank(h, nodes)
		require.Len(t, r, len(nodes))
		require.Equal(t, Home(h, nodes), r[0])
		require.ElementsMatch(t, []int{0, 1, 2, 3}, r)
	}
}
