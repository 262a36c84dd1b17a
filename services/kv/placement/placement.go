// Package placement decides where keys live across hosts: each key's home
// owner (which keeps its directory entry) by rendezvous hashing over the
// routing table's owners, and the owners that hold replicas when a put asks
// for several, on distinct hosts. It is pure: the same table gives the same
// answer on every member, with no coordination.
package placement

import (
	"sort"

	"github.com/cespare/xxhash/v2"
)

// Node is one owner as placement sees it.
type Node struct {
	ID   string // instance_key
	Host string // hosts are kept distinct for replicas; "" means its own host
}

// score is the rendezvous weight of (key, node): the node with the highest
// score is the key's home. xxhash of the key is mixed with a per-node seed so
// a node's scores for all keys are independent of other nodes'.
func score(keyHash uint64, node string) uint64 {
	h := xxhash.Sum64String(node) ^ keyHash
	// splitmix64 finaliser: a good avalanche for the combined value.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// KeyHash is the hash placement uses for a key (the same as the store's).
func KeyHash(key string) uint64 { return xxhash.Sum64String(key) }

// Home returns the index in nodes of key's home, or -1 when there are no
// nodes. Adding or removing a node moves only the keys whose home it is or
// becomes: about 1/n of them.
func Home(keyHash uint64, nodes []Node) int {
	best, bestScore := -1, uint64(0)
	for i, n := range nodes {
		s := score(keyHash, n.ID)
		if best < 0 || s > bestScore || (s == bestScore && n.ID < nodes[best].ID) {
			best, bestScore = i, s
		}
	}
	return best
}

// Rank returns every node index in key's rendezvous order, highest score
// (the home) first.
func Rank(keyHash uint64, nodes []Node) []int {
	order := make([]int, len(nodes))
	for i := range order {
		order[i] = i
	}
	scores := make([]uint64, len(nodes))
	for i, nd := range nodes {
		scores[i] = score(keyHash, nd.ID)
	}
	sort.Slice(order, func(a, b int) bool {
		if scores[order[a]] != scores[order[b]] {
			return scores[order[a]] > scores[order[b]]
		}
		return nodes[order[a]].ID < nodes[order[b]].ID
	})
	return order
}

// Replicas returns up to n node indexes for key in rendezvous order, at most
// one per host, starting with prefer (the writer's own node, -1 for none):
// the writer keeps a copy, the others go to the next-highest-scoring hosts.
// Fewer than n come back when there are fewer distinct hosts.
func Replicas(keyHash uint64, nodes []Node, n, prefer int) []int {
	if n <= 0 || len(nodes) == 0 {
		return nil
	}
	order := Rank(keyHash, nodes)
	out := make([]int, 0, n)
	hosts := map[string]bool{}
	take := func(i int) {
		h := nodes[i].Host
		if h == "" {
			h = "\x00" + nodes[i].ID
		}
		if hosts[h] || len(out) == n {
			return
		}
		hosts[h] = true
		out = append(out, i)
	}
	if prefer >= 0 && prefer < len(nodes) {
		take(prefer)
	}
	for _, i := range order {
		take(i)
	}
	return out
}
