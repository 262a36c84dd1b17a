package relay

import (
	"errors"
	"slices"
	"testing"
)

func TestShortestPath(t *testing.T) {
	chain := Graph{"a": {"b"}, "b": {"a", "c"}, "c": {"b", "d"}, "d": {"c"}}
	cases := []struct {
		name     string
		g        Graph
		from, to string
		max      int
		want     []string
		err      error
	}{
		{"chain", chain, "a", "d", 8, []string{"a", "b", "c", "d"}, nil},
		{"chain backwards", chain, "d", "a", 8, []string{"d", "c", "b", "a"}, nil},
		{"self", chain, "a", "a", 8, []string{"a"}, nil},
		{"hop limit", chain, "a", "d", 2, nil, ErrHopLimit},
		{"unknown target", chain, "a", "z", 8, nil, ErrNoRoute},
		{"one-way edge", Graph{"a": {"b"}, "b": {}}, "b", "a", 8, nil, ErrNoRoute},
		{"cycle", Graph{"a": {"b"}, "b": {"c", "a"}, "c": {"a", "b"}}, "a", "x", 8, nil, ErrNoRoute},
		{"shortcut wins", Graph{"a": {"b", "x"}, "b": {"c"}, "c": {"d"}, "x": {"d"}}, "a", "d", 8, []string{"a", "x", "d"}, nil},
		{"ties break by id", Graph{"a": {"y", "x"}, "x": {"d"}, "y": {"d"}}, "a", "d", 8, []string{"a", "x", "d"}, nil},
	}
	for _, c := range cases {
		got, err := ShortestPath(c.g, c.from, c.to, c.max)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v (%v), want %v", c.name, got, err, c.want)
		}
	}
}
