package kvbench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
)

// Workload names, as issue 4 ("Benchmarks") spells them.
const (
	ReadZipfName     = "READ_ZIPF"
	ReadAffinityName = "READ_AFFINITY"
	PutOnlyName      = "PUT_ONLY"
)

// The parameters of issue 4's workloads at full size.
const (
	readGetFraction = 0.90
	readZipf        = 0.99
	readKeys        = 512
	readAffinity    = 0.85
	// readGroups is how many client hosts the key space is sliced among for
	// READ_AFFINITY: the three namespace hosts.
	readGroups = 3
	putKeys    = 10_000

	kib = 1 << 10
	mib = 1 << 20
	kb  = 1000
	mb  = 1000 * 1000
)

var (
	readSizes = []int{10 * mib, 16 * mib, 24 * mib, 30 * mib}
	putSizes  = []int{10 * kb, 100 * kb, 1 * mb, 10 * mb, 50 * mb}
)

// ErrSpec reports a workload that cannot run as specified.
var ErrSpec = errors.New("kvbench: invalid workload")

// Spec describes a workload: which keys a client touches, how often it reads
// rather than writes, and what sizes it writes.
//
// Puts pick their size uniformly from Sizes, so every size gets an equal share
// of the puts. A read workload is preloaded before it is timed: key i holds
// Sizes[i%len(Sizes)], an equal share of the keys for every size.
type Spec struct {
	Name string
	// Keys is the size of the key space.
	Keys int
	// GetFraction is the share of operations that are gets; the rest are puts.
	GetFraction float64
	// Zipf is the exponent s of the key popularity (key rank r is chosen with
	// weight 1/(r+1)^s); 0 means uniform. Any s >= 0 works, s < 1 included.
	Zipf float64
	// Sizes are the value sizes in bytes.
	Sizes []int
	// Affinity, when above 0, is the share of each client group's operations
	// that fall on the group's own slice of the keys (the keys are cut into
	// Groups contiguous slices); the rest fall on the other groups' slices,
	// each as likely as the next. Within a slice, popularity follows Zipf,
	// so every group's hot keys are hot for every client.
	Affinity float64
	// Groups is how many client groups (hosts) share the key space. Client
	// thread t belongs to group t%Groups. Only used with Affinity.
	Groups int
}

// ReadZipf is READ_ZIPF at the size: 90 % get / 10 % put, Zipf 0.99
// over 512 keys, values of 10/16/24/30 MiB in equal shares.
func ReadZipf() Spec {
	return Spec{Name: ReadZipfName, Keys: readKeys, GetFraction: readGetFraction, Zipf: readZipf, Sizes: append([]int(nil), readSizes...)}
}

// ReadAffinity is READ_AFFINITY: as READ_ZIPF, but 85 % of each client
// group's operations fall on its own slice of the keys.
func ReadAffinity() Spec {
	s := ReadZipf()
	s.Name, s.Affinity, s.Groups = ReadAffinityName, readAffinity, readGroups
	return s
}

// PutOnly is PUT_ONLY: 100 % put, uniform over 10,000 keys, values of
// 10 KB / 100 KB / 1 MB / 10 MB / 50 MB.
func PutOnly() Spec {
	return Spec{Name: PutOnlyName, Keys: putKeys, Sizes: append([]int(nil), putSizes...)}
}

// Specs returns the named workloads at the sizes.
func Specs() []Spec { return []Spec{ReadZipf(), ReadAffinity(), PutOnly()} }

// Validate reports what is wrong with s.
func (s Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrSpec, s.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case s.Name == "":
		return bad("no name")
	case s.Keys < 1:
		return bad("keys %d; need at least 1", s.Keys)
	case s.GetFraction < 0 || s.GetFraction > 1 || math.IsNaN(s.GetFraction):
		return bad("get fraction %v; use 0..1", s.GetFraction)
	case s.Zipf < 0 || math.IsNaN(s.Zipf) || math.IsInf(s.Zipf, 0):
		return bad("zipf exponent %v; use 0 (uniform) or more", s.Zipf)
	case len(s.Sizes) == 0:
		return bad("no value sizes")
	case s.Affinity < 0 || s.Affinity > 1 || math.IsNaN(s.Affinity):
		return bad("affinity %v; use 0..1", s.Affinity)
	case s.Affinity > 0 && s.Groups < 2:
		return bad("affinity needs at least 2 client groups, have %d", s.Groups)
	case s.Affinity > 0 && s.Keys < s.Groups:
		return bad("%d keys cannot be sliced among %d client groups", s.Keys, s.Groups)
	}
	for _, n := range s.Sizes {
		if n < 1 {
			return bad("value size %d; sizes must be at least 1 byte", n)
		}
	}
	return nil
}

// Reads says whether the workload has gets (and so is preloaded).
func (s Spec) Reads() bool { return s.GetFraction > 0 }

// MaxSize returns the largest value size.
func (s Spec) MaxSize() int {
	m := 0
	for _, n := range s.Sizes {
		m = max(m, n)
	}
	return m
}

// MeanSize returns the average value size.
func (s Spec) MeanSize() float64 {
	t := 0.0
	for _, n := range s.Sizes {
		t += float64(n)
	}
	return t / float64(len(s.Sizes))
}

// WorkingSet is the expected number of value bytes once every key is written.
func (s Spec) WorkingSet() uint64 { return uint64(float64(s.Keys) * s.MeanSize()) }

// PreloadSize is the size key i holds after the preload.
func (s Spec) PreloadSize(i int) int { return s.Sizes[i%len(s.Sizes)] }

// Workload is a validated Spec with its key names and popularity tables
// computed once; it is read-only and shared by every Generator.
type Workload struct {
	Spec
	keys   []string
	sizeOK map[int]bool
	cdfs   map[int][]float64 // Zipf CDF by number of keys drawn among
	salt   uint64
	value  []byte // MaxSize pseudo-random bytes that every put writes from
}

// Compile validates s and prepares it.
func Compile(s Spec, seed uint64) (*Workload, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write([]byte(s.Name))
	w := &Workload{Spec: s, keys: make([]string, s.Keys), sizeOK: map[int]bool{}, cdfs: map[int][]float64{}, salt: h.Sum64()}
	for i := range w.keys {
		w.keys[i] = "kvb/" + s.Name + "/" + strconv.Itoa(i)
	}
	for _, n := range s.Sizes {
		w.sizeOK[n] = true
	}
	if s.Zipf > 0 {
		if s.Affinity > 0 {
			for g := range s.Groups {
				lo, hi := w.slice(g)
				w.cdf(hi - lo)
			}
		} else {
			w.cdf(s.Keys)
		}
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], w.salt)
	w.value = make([]byte, s.MaxSize())
	_, _ = rand.NewChaCha8(key).Read(w.value) // never fails
	return w, nil
}

// Key returns the name of key i.
func (w *Workload) Key(i int) string { return w.keys[i] }

// Value returns the first n bytes every put of size n writes.
func (w *Workload) Value(n int) []byte { return w.value[:n] }

// ValidSize says whether some put or preload writes values of n bytes.
func (w *Workload) ValidSize(n int) bool { return w.sizeOK[n] }

// slice returns the keys [lo, hi) of client group g.
func (w *Workload) slice(g int) (lo, hi int) {
	return g * w.Keys / w.Groups, (g + 1) * w.Keys / w.Groups
}

// cdf returns (building once, at Compile) the Zipf CDF over n ranks.
func (w *Workload) cdf(n int) []float64 {
	if c, ok := w.cdfs[n]; ok {
		return c
	}
	c := make([]float64, n)
	t := 0.0
	for r := range n {
		t += math.Pow(float64(r+1), -w.Zipf)
		c[r] = t
	}
	for r := range c {
		c[r] /= t
	}
	c[n-1] = 1
	w.cdfs[n] = c
	return c
}

// Op is one operation: a get of Key, or a put of Size bytes to Key.
type Op struct {
	Get  bool
	Key  int
	Size int
}

// Generator produces one client thread's operations. The sequence depends
// only on the workload, the seed, the group and the thread, so every system
// under test sees the same operations.
type Generator struct {
	w     *Workload
	rng   *rand.Rand
	group int
	all   []float64 // Zipf CDF over every key (no affinity)
}

// Generator returns the operation stream of client thread `thread`, a
// member of client group `group` (used by affinity workloads).
func (w *Workload) Generator(seed uint64, group, thread int) *Generator {
	mix := w.salt ^ (uint64(group)+1)*0x9e3779b97f4a7c15 ^ (uint64(thread)+1)*0xbf58476d1ce4e5b9
	g := &Generator{w: w, rng: rand.New(rand.NewPCG(seed, mix)), group: group % max(w.Groups, 1)}
	if w.Affinity == 0 && w.Zipf > 0 {
		g.all = w.cdfs[w.Keys]
	}
	return g
}

// draw returns a rank in [0, n): Zipf by cdf, or uniform when cdf is nil.
func (g *Generator) draw(cdf []float64, n int) int {
	if cdf == nil {
		return g.rng.IntN(n)
	}
	return min(sort.SearchFloat64s(cdf, g.rng.Float64()), n-1)
}

func (g *Generator) key() int {
	w := g.w
	if w.Affinity == 0 {
		return g.draw(g.all, w.Keys)
	}
	h := g.group
	if g.rng.Float64() >= w.Affinity {
		// Another group's slice, each as likely as the next.
		h = (g.group + 1 + g.rng.IntN(w.Groups-1)) % w.Groups
	}
	lo, hi := w.slice(h)
	return lo + g.draw(w.cdfs[hi-lo], hi-lo)
}

// Next returns the next operation.
func (g *Generator) Next() Op {
	op := Op{Get: g.rng.Float64() < g.w.GetFraction}
	op.Key = g.key()
	if !op.Get {
		op.Size = g.w.Sizes[g.rng.IntN(len(g.w.Sizes))]
	}
	return op
}

// Slice returns client group g's own keys [lo, hi) (affinity workloads).
func (w *Workload) Slice(g int) (lo, hi int) { return w.slice(g % max(w.Groups, 1)) }
