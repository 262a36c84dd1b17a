package relay

import (
	"fmt"
	"slices"
)

// Graph is who reaches whom: Graph[a] lists the members whose relay
// endpoint a connected to in its last probe. Edges are directed (a
// firewall may let a reach b but not b reach a).
type Graph map[string][]string

// ShortestPath returns the members a connection from `from` passes to
// reach `to`, both ends included, with the fewest hops (breadth-first
// search; among paths of equal length the one through the smallest member
// ids, so every member computes the same path from the same graph). A
// path longer than maxHops edges is ErrHopLimit, none at all ErrNoRoute.
func ShortestPath(g Graph, from, to string, maxHops int) ([]string, error) {
	if from == to {
		return []string{from}, nil
	}
	prev := map[string]string{from: ""}
	frontier := []string{from}
	for depth := 1; len(frontier) > 0; depth++ {
		var next []string
		for _, u := range frontier {
			nbrs := slices.Clone(g[u])
			slices.Sort(nbrs)
			for _, v := range nbrs {
				if _, seen := prev[v]; seen {
					continue
				}
				prev[v] = u
				if v == to {
					if depth > maxHops {
						return nil, fmt.Errorf("%w: %s reaches %s in %d hops, limit %d", ErrHopLimit, from, to, depth, maxHops)
					}
					path := []string{to}
					for p := u; p != ""; p = prev[p] {
						path = append(path, p)
					}
					slices.Reverse(path)
					return path, nil
				}
				next = append(next, v)
			}
		}
		frontier = next
	}
	return nil, fmt.Errorf("%w: no member path from %s to %s in the reachability graph", ErrNoRoute, from, to)
}
