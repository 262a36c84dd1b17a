package kvbench

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func compile(t *testing.T, s Spec) *Workload {
	t.Helper()
	w, err := Compile(s, 7)
	require.NoError(t, err)
	return w
}

// within5Sigma says whether a binomial count is within five standard
// deviations of its expectation over n draws with probability p.
func within5Sigma(count, n int, p float64) bool {
	exp := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	return math.Abs(float64(count)-exp) <= 5*sd+1
}

func TestZipfMatchesItsLawOverManyDraws(t *testing.T) {
	w := compile(t, ReadZipf())
	g := w.Generator(1, 0, 0)
	const draws = 400_000
	counts := make([]int, w.Keys)
	for range draws {
		counts[g.Next().Key]++
	}
	h := 0.0
	for r := range w.Keys {
		h += math.Pow(float64(r+1), -0.99)
	}
	chi2 := 0.0
	for r, c := range counts {
		p := math.Pow(float64(r+1), -0.99) / h
		require.True(t, within5Sigma(c, draws, p), "rank %d: %d draws, expected %.0f", r, c, p*draws)
		exp := p * draws
		chi2 += (float64(c) - exp) * (float64(c) - exp) / exp
	}
	// 511 degrees of freedom: mean 511, standard deviation 32.
	require.Less(t, chi2, 511+6*32.0, "chi-square against Zipf(0.99)")
	// The hottest key is drawn about 2^0.99 times as often as the second.
	require.InDelta(t, math.Pow(2, 0.99), float64(counts[0])/float64(counts[1]), 0.05)
	require.InDelta(t, 1/h, float64(counts[0])/draws, 0.003, "the hottest key's share")
}

func TestUniformKeysAreUniform(t *testing.T) {
	s := PutOnly()
	s.Keys = 100
	w := compile(t, s)
	g := w.Generator(1, 0, 0)
	const draws = 200_000
	counts := make([]int, s.Keys)
	for range draws {
		op := g.Next()
		require.False(t, op.Get, "PUT_ONLY has no gets")
		counts[op.Key]++
	}
	for k, c := range counts {
		require.True(t, within5Sigma(c, draws, 1.0/float64(s.Keys)), "key %d drawn %d times", k, c)
	}
}

func TestGetFraction(t *testing.T) {
	w := compile(t, ReadZipf())
	g := w.Generator(3, 0, 0)
	const draws = 200_000
	gets := 0
	for range draws {
		if g.Next().Get {
			gets++
		}
	}
	require.True(t, within5Sigma(gets, draws, 0.9), "%d gets of %d", gets, draws)
}

func TestAffinityKeepsEachGroupOnItsSlice(t *testing.T) {
	w := compile(t, ReadAffinity())
	require.Equal(t, 3, w.Groups)
	const draws = 150_000
	for group := range w.Groups {
		lo, hi := w.Slice(group)
		require.Greater(t, hi, lo)
		g := w.Generator(5, group, group)
		own := 0
		perGroup := make([]int, w.Groups)
		ownCounts := make([]int, hi-lo)
		for range draws {
			k := g.Next().Key
			require.True(t, k >= 0 && k < w.Keys)
			for h := range w.Groups {
				if l, u := w.Slice(h); k >= l && k < u {
					perGroup[h]++
				}
			}
			if k >= lo && k < hi {
				own++
				ownCounts[k-lo]++
			}
		}
		require.True(t, within5Sigma(own, draws, 0.85), "group %d: %d of %d ops on its own slice", group, own, draws)
		for h, c := range perGroup {
			if h != group {
				share := (1 - 0.85) / float64(w.Groups-1)
				require.True(t, within5Sigma(c, draws, share), "group %d: %d ops on group %d's keys, expected %.0f", group, c, h, share*draws)
			}
		}
		// Within the slice, popularity is still Zipf: the slice's first key
		// is its hottest.
		for i := 1; i < len(ownCounts); i++ {
			require.GreaterOrEqual(t, ownCounts[0], ownCounts[i], "group %d: slice key 0 is the hottest", group)
		}
	}
	// The slices partition the keys.
	seen := 0
	for g := range w.Groups {
		lo, hi := w.Slice(g)
		require.Equal(t, seen, lo)
		seen = hi
	}
	require.Equal(t, w.Keys, seen)
}

func TestValueSizeShares(t *testing.T) {
	for _, s := range []Spec{ReadZipf(), PutOnly()} {
		t.Run(s.Name, func(t *testing.T) {
			w := compile(t, s)
			// Preload: an equal share of the keys for every size.
			byKey := map[int]int{}
			for k := range w.Keys {
				byKey[w.PreloadSize(k)]++
			}
			require.Len(t, byKey, len(s.Sizes))
			for _, n := range s.Sizes {
				require.Equal(t, w.Keys/len(s.Sizes), byKey[n], "keys preloaded with %d bytes", n)
			}
			// Puts: an equal share of the puts for every size.
			g := w.Generator(9, 0, 0)
			const draws = 200_000
			byPut := map[int]int{}
			puts := 0
			for range draws {
				if op := g.Next(); !op.Get {
					require.True(t, w.ValidSize(op.Size))
					require.Len(t, w.Value(op.Size), op.Size)
					byPut[op.Size]++
					puts++
				}
			}
			for _, n := range s.Sizes {
				require.True(t, within5Sigma(byPut[n], puts, 1/float64(len(s.Sizes))), "%d of %d puts of %d bytes", byPut[n], puts, n)
			}
		})
	}
}

func TestGeneratorIsDeterministic(t *testing.T) {
	seq := func(w *Workload, seed uint64, group, thread int) []Op {
		g := w.Generator(seed, group, thread)
		ops := make([]Op, 5000)
		for i := range ops {
			ops[i] = g.Next()
		}
		return ops
	}
	w1, w2 := compile(t, ReadAffinity()), compile(t, ReadAffinity())
	require.Equal(t, seq(w1, 42, 1, 4), seq(w2, 42, 1, 4), "same workload, seed, group and thread: same operations")
	require.NotEqual(t, seq(w1, 42, 1, 4), seq(w1, 43, 1, 4), "another seed")
	require.NotEqual(t, seq(w1, 42, 1, 4), seq(w1, 42, 1, 5), "another thread")
	require.NotEqual(t, seq(w1, 42, 1, 4), seq(w1, 42, 2, 4), "another group")

	z := compile(t, ReadZipf())
	require.NotEqual(t, seq(z, 42, 0, 0), seq(w1, 42, 0, 0), "workloads do not share streams")

	a, err := Compile(PutOnly(), 11)
	require.NoError(t, err)
	b, err := Compile(PutOnly(), 11)
	require.NoError(t, err)
	require.Equal(t, a.Value(a.MaxSize()), b.Value(b.MaxSize()), "value bytes depend on the seed only")
}

func TestSpecValidate(t *testing.T) {
	for _, s := range Specs() {
		require.NoError(t, s.Validate(), s.Name)
	}
	bad := map[string]func(*Spec){
		"no name":          func(s *Spec) { s.Name = "" },
		"no keys":          func(s *Spec) { s.Keys = 0 },
		"get fraction":     func(s *Spec) { s.GetFraction = 1.5 },
		"negative zipf":    func(s *Spec) { s.Zipf = -1 },
		"no sizes":         func(s *Spec) { s.Sizes = nil },
		"zero size":        func(s *Spec) { s.Sizes = []int{0} },
		"affinity range":   func(s *Spec) { s.Affinity = 2 },
		"one group":        func(s *Spec) { s.Affinity, s.Groups = 0.85, 1 },
		"fewer keys":       func(s *Spec) { s.Affinity, s.Groups, s.Keys = 0.85, 3, 2 },
		"NaN get fraction": func(s *Spec) { s.GetFraction = math.NaN() },
	}
	for name, f := range bad {
		s := ReadZipf()
		f(&s)
		require.ErrorIs(t, s.Validate(), ErrSpec, name)
		_, err := Compile(s, 1)
		require.ErrorIs(t, err, ErrSpec, name)
	}
}

func TestIssueSizes(t *testing.T) {
	z := ReadZipf()
	require.Equal(t, 512, z.Keys)
	require.Equal(t, []int{10 << 20, 16 << 20, 24 << 20, 30 << 20}, z.Sizes)
	require.InDelta(t, 0.99, z.Zipf, 1e-9)
	require.InDelta(t, 0.9, z.GetFraction, 1e-9)
	a := ReadAffinity()
	require.InDelta(t, 0.85, a.Affinity, 1e-9)
	p := PutOnly()
	require.Equal(t, 10_000, p.Keys)
	require.Equal(t, []int{10_000, 100_000, 1_000_000, 10_000_000, 50_000_000}, p.Sizes)
	require.Zero(t, p.GetFraction)
	require.Zero(t, p.Zipf)
	require.Equal(t, uint64(512*20<<20), z.WorkingSet())
}
