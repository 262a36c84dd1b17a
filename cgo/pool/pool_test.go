//go:build linux && cgo

package pool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/fluxon-dev/fluxon/cgo/core"
)

const mib = 1 << 20

func TestMain(m *testing.M) {
	code := m.Run()
	if n := openHandles.Load(); code == 0 && n != 0 {
		fmt.Fprintf(os.Stderr, "pool: %d handle(s) leaked by the tests\n", n)
		code = 1
	}
	os.Exit(code)
}

var pathSeq atomic.Int64

// shmPath returns a fresh path on /dev/shm, removed when the test ends.
func shmPath(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm on this host")
	}
	p := fmt.Sprintf("/dev/shm/flx-go-test-%d-%d", os.Getpid(), pathSeq.Add(1))
	t.Cleanup(func() { os.Remove(p) })
	return p
}

func newPool(t testing.TB, size, seg uint64) *Pool {
	t.Helper()
	p, err := CreateWith(shmPath(t), size, seg, Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Destroy(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("destroy: %v", err)
		}
	})
	return p
}

func wantCode(t *testing.T, err error, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

// pattern fills b with 8-byte words derived from seed, the tail byte by byte. Pool data
// is 64-byte aligned, so b is viewed as []uint64: one instrumented access per word under
// -race instead of eight.
func pattern(b []byte, seed uint64) {
	w := words(b)
	for i := range w {
		w[i] = seed ^ uint64(i)*0x9E3779B97F4A7C15
	}
	for i := len(w) * 8; i < len(b); i++ {
		b[i] = byte(seed + uint64(i))
	}
}

func hasPattern(b []byte, seed uint64) bool {
	w := words(b)
	for i := range w {
		if w[i] != seed^uint64(i)*0x9E3779B97F4A7C15 {
			return false
		}
	}
	for i := len(w) * 8; i < len(b); i++ {
		if b[i] != byte(seed+uint64(i)) {
			return false
		}
	}
	return true
}

func words(b []byte) []uint64 {
	if len(b) < 8 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
}

func TestCreateAttachRoundTrip(t *testing.T) {
	path := shmPath(t)
	p, err := Create(path, 8*mib+123, 2*mib)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Destroy()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != 8*mib || info.SegmentSize != 2*mib || info.SegmentCount != 4 || !info.Owner ||
		info.FS != FSTmpfs || info.OwnerPID != os.Getpid() || info.DataOffset != PageSize {
		t.Fatalf("info %+v", info)
	}

	off, err := p.Alloc(5000, 0xfeed, 3)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(off)%ObjectAlign != 0 {
		t.Fatalf("offset %d not %d-aligned", off, ObjectAlign)
	}
	b := p.Bytes(off)
	if len(b) != 5000 || cap(b) != 5000 {
		t.Fatalf("Bytes: len %d cap %d", len(b), cap(b))
	}
	pattern(b, 9)
	if err := p.Seal(off); err != nil {
		t.Fatal(err)
	}

	a, err := Attach(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ainfo, _ := a.Info()
	if ainfo.Owner || ainfo.Generation != info.Generation || !ainfo.Created.Equal(info.Created) || ainfo.Size != info.Size {
		t.Fatalf("attached info %+v vs %+v", ainfo, info)
	}
	if err := a.Ref(off); err != nil {
		t.Fatal(err)
	}
	h, err := a.Header(off)
	if err != nil {
		t.Fatal(err)
	}
	if h.KeyHash != 0xfeed || h.Version != 3 || h.Length != 5000 || h.State != StateReady || h.RefCount != 2 || h.SizeClass == 0 {
		t.Fatalf("header %+v", h)
	}
	ab := a.Bytes(off)
	if &ab[0] == &b[0] || !hasPattern(ab, 9) {
		t.Fatal("the second mapping does not show the same bytes at another address")
	}
	// Externals cannot allocate, free, destroy or read the allocator's stats.
	if _, err := a.Alloc(10, 1, 1); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("attached Alloc: %v", err)
	}
	if err := a.Free(off); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("attached Free: %v", err)
	}
	if _, err := a.Stats(); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("attached Stats: %v", err)
	}
	if err := a.Destroy(); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("attached Destroy: %v", err)
	}

	// The writer is done; the owner removes; the external's reference keeps the bytes.
	if rel, err := p.Unref(off); err != nil || rel {
		t.Fatalf("writer unref: %v %v", rel, err)
	}
	if rel, err := p.Remove(off); err != nil || rel {
		t.Fatalf("remove: %v %v", rel, err)
	}
	wantCode(t, a.Ref(off), ErrNotFound)
	wantCode(t, p.Free(off), ErrBusy)
	if !hasPattern(ab, 9) {
		t.Fatal("bytes changed under a reference")
	}
	// The external's unref is the last: it must hand the object to the owner.
	if rel, err := a.Unref(off); err != nil || !rel {
		t.Fatalf("external last unref: released=%v err=%v", rel, err)
	}
	if err := p.Free(off); err != nil {
		t.Fatal(err)
	}
	wantCode(t, p.Free(off), ErrInvalid) // double free
	// errors.Is also matches a bare core.Error with the code.
	if err := p.Free(off); !errors.Is(err, &core.Error{Code: core.EINVAL}) {
		t.Fatalf("core code match: %v", err)
	}
	st, err := p.Stats()
	if err != nil || st.Objects != 0 || st.Used != 0 || len(st.Classes) != NumClasses {
		t.Fatalf("stats %+v %v", st, err)
	}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	p := newPool(t, 4*mib, mib)
	if _, err := p.Alloc(0, 1, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero length: %v", err)
	}
	if _, err := p.Alloc(4*mib, 1, 1); !errors.Is(err, ErrTooBig) {
		t.Fatalf("too big: %v", err)
	}
	big, err := p.Alloc(4*mib-2*PageSize, 1, 1)
	if err != nil {
		t.Fatalf("largest object: %v", err)
	}
	if uint64(big)%PageSize != 0 {
		t.Fatalf("big object at %d not page-aligned", big)
	}
	if _, err := p.Alloc(100, 1, 1); !errors.Is(err, ErrNoMem) {
		t.Fatalf("full pool: %v", err)
	}
	wantCode(t, p.Ref(big), ErrBusy) // still WRITING
	if err := p.Free(big); err != nil {
		t.Fatal(err)
	}
	wantCode(t, p.Ref(Offset(3)), ErrInvalid)
	if p.Bytes(Offset(3)) != nil || p.Bytes(Offset(1<<40)) != nil {
		t.Fatal("Bytes of a bad offset is not nil")
	}

	// Create: existing file, bad geometry, disk-backed directory.
	if _, err := Create(p.Path(), 4*mib, mib); !errors.Is(err, ErrExist) {
		t.Fatalf("existing: %v", err)
	}
	if _, err := Create(shmPath(t), 4*mib, 3*mib); !errors.Is(err, ErrInvalid) {
		t.Fatalf("segment not a power of two: %v", err)
	}
	if _, err := Create(shmPath(t), mib/2, mib); !errors.Is(err, ErrInvalid) {
		t.Fatalf("less than a segment: %v", err)
	}
	disk := filepath.Join(t.TempDir(), "pool")
	if d, err := Create(disk, 4*mib, mib); err == nil {
		d.Destroy() // the temp dir happened to be on tmpfs
	} else if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("disk-backed path: %v", err)
	}
	if _, err := Attach(shmPath(t)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("attach missing: %v", err)
	}
}

func TestAttachValidation(t *testing.T) {
	path := shmPath(t)
	p, err := Create(path, 2*mib, mib)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil { // close keeps the file
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mutate := func(f func(b []byte) []byte) error {
		b := append([]byte(nil), good...)
		write(f(b))
		a, err := Attach(path)
		if err == nil {
			a.Close()
		}
		return err
	}
	if err := mutate(func(b []byte) []byte { return b }); err != nil {
		t.Fatalf("unchanged file: %v", err)
	}
	wantCode(t, mutate(func(b []byte) []byte { b[0] ^= 1; return b }), ErrCorrupt)
	wantCode(t, mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], LayoutVersion+1); return b }), ErrVersion)
	wantCode(t, mutate(func(b []byte) []byte { b[48] ^= 1; return b }), ErrCorrupt) // checksum
	wantCode(t, mutate(func(b []byte) []byte { return b[:mib] }), ErrCorrupt)       // truncated
	wantCode(t, mutate(func(b []byte) []byte { return b[:10] }), ErrCorrupt)
	os.Remove(path)
}

func TestUseAfterClose(t *testing.T) {
	p := newPool(t, 4*mib, mib)
	off, err := p.Alloc(100, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	path := p.Path()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	wantCode(t, p.Close(), ErrClosed)
	wantCode(t, p.Destroy(), ErrClosed)
	if _, err := p.Alloc(10, 1, 1); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	wantCode(t, p.Seal(off), ErrClosed)
	wantCode(t, p.Ref(off), ErrClosed)
	wantCode(t, p.Free(off), ErrClosed)
	wantCode(t, p.Check(), ErrClosed)
	if _, err := p.Unref(off); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := p.Remove(off); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := p.Header(off); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := p.Stats(); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := p.Info(); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if p.Bytes(off) != nil {
		t.Fatal("Bytes after Close is not nil")
	}
}

// Close while other goroutines are allocating: they see ErrClosed, nothing crashes.
func TestCloseWhileBusy(t *testing.T) {
	p := newPool(t, 16*mib, mib)
	var wg sync.WaitGroup
	var closedSeen atomic.Int64
	start := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				off, err := p.Alloc(256, 1, 1)
				if errors.Is(err, ErrClosed) {
					closedSeen.Add(1)
					return
				}
				if err != nil {
					t.Errorf("alloc: %v", err)
					return
				}
				// No use of Bytes here: a slice must not outlive Close, and Close races.
				if err := p.Free(off); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("free: %v", err)
					return
				}
			}
		}()
	}
	close(start)
	for i := 0; i < 1000; i++ { // let them run a little
		if _, err := p.Stats(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Destroy(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if closedSeen.Load() != 8 {
		t.Fatalf("%d goroutines saw ErrClosed, want 8", closedSeen.Load())
	}
}

// Many goroutines allocate and free random sizes; every object's bytes are verified
// before it is freed, some objects are freed by another goroutine than their writer.
func TestConcurrentAllocFree(t *testing.T) {
	p := newPool(t, 256*mib, 4*mib)
	const goroutines = 32
	ops := 2000
	if testing.Short() {
		ops = 300
	}
	type obj struct {
		off  Offset
		seed uint64
		n    int
	}
	handoff := make(chan obj, 256)
	verifyAndFree := func(o obj) error {
		b := p.Bytes(o.off)
		if len(b) != o.n || !hasPattern(b, o.seed) {
			return fmt.Errorf("object at %d (%d bytes) lost its pattern", o.off, o.n)
		}
		if rel, err := p.Remove(o.off); err != nil || rel {
			return fmt.Errorf("remove: released=%v %v", rel, err)
		}
		if rel, err := p.Unref(o.off); err != nil || !rel {
			return fmt.Errorf("unref: released=%v %v", rel, err)
		}
		return nil
	}
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 42))
			var live []obj
			for i := 0; i < ops; i++ {
				switch {
				case len(live) < 64 && r.IntN(100) < 55:
					n := 1 + r.IntN(4096)
					if r.IntN(100) < 3 { // extents and multi-segment runs
						n = 4096 + r.IntN(5*mib)
					}
					seed := r.Uint64()
					off, err := p.Alloc(uint64(n), seed, 1)
					if errors.Is(err, ErrNoMem) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					pattern(p.Bytes(off), seed)
					if err := p.Seal(off); err != nil {
						t.Error(err)
						return
					}
					live = append(live, obj{off, seed, n})
				case len(live) > 0 && r.IntN(10) == 0:
					i := r.IntN(len(live))
					select {
					case handoff <- live[i]:
						live[i] = live[len(live)-1]
						live = live[:len(live)-1]
					default:
					}
				case len(live) > 0:
					i := r.IntN(len(live))
					if err := verifyAndFree(live[i]); err != nil {
						t.Error(err)
						return
					}
					live[i] = live[len(live)-1]
					live = live[:len(live)-1]
				default:
					select {
					case o := <-handoff:
						if err := verifyAndFree(o); err != nil {
							t.Error(err)
							return
						}
					default:
					}
				}
			}
			for _, o := range live {
				if err := verifyAndFree(o); err != nil {
					t.Error(err)
				}
			}
		}(g)
	}
	wg.Wait()
	close(handoff)
	for o := range handoff {
		if err := verifyAndFree(o); err != nil {
			t.Error(err)
		}
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Objects != 0 || st.Used != 0 || st.Reserved != 0 {
		t.Fatalf("pool not empty after all frees: %+v", st)
	}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{StateWriting: "WRITING", StateReady: "READY", StateRemoved: "REMOVED", StateFree: "FREE", 9: "State(9)"} {
		if s.String() != want {
			t.Errorf("%d: %q", s, s.String())
		}
	}
}

var sink []byte

// parallelSinks keep make's result alive per goroutine without sharing a cache line.
var parallelSinks [256]struct {
	b []byte
	_ [40]byte
}

// BenchmarkAllocFree: one small object allocated and freed per op, against make([]byte, n)
// for the same size. Pool numbers include two cgo calls (Alloc, Free) per op.
func BenchmarkAllocFree(b *testing.B) {
	for _, n := range []int{64, 1024, 16384} {
		b.Run(fmt.Sprintf("pool/%dB", n), func(b *testing.B) {
			p := newPool(b, 64*mib, 0)
			b.ReportAllocs()
			for b.Loop() {
				off, err := p.Alloc(uint64(n), 1, 1)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Free(off); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("make/%dB", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = make([]byte, n)
			}
		})
		b.Run(fmt.Sprintf("pool-parallel/%dB", n), func(b *testing.B) {
			p := newPool(b, 256*mib, 0)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					off, err := p.Alloc(uint64(n), 1, 1)
					if err != nil {
						b.Error(err)
						return
					}
					if err := p.Free(off); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run(fmt.Sprintf("make-parallel/%dB", n), func(b *testing.B) {
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				slot := &parallelSinks[next.Add(1)%int64(len(parallelSinks))]
				for pb.Next() {
					slot.b = make([]byte, n) // escapes: the slot is a global
				}
			})
		})
	}
}

// BenchmarkLifecycle: the whole life of a small object as the owner sees it: alloc,
// seal, a reader's ref and unref, remove, the writer's unref (which frees it).
func BenchmarkLifecycle(b *testing.B) {
	p := newPool(b, 64*mib, 0)
	for b.Loop() {
		off, err := p.Alloc(256, 1, 1)
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Seal(off)
		_ = p.Ref(off)
		_, _ = p.Unref(off)
		_, _ = p.Remove(off)
		if rel, err := p.Unref(off); err != nil || !rel {
			b.Fatal(rel, err)
		}
	}
}

// Segments tile the mapping: one per segment, contiguous, each
// SegmentSize long, and an object at offset off lies in segment
// off/SegmentSize at off%SegmentSize, the RemoteRef an rdma peer reads.
func TestSegmentsTileThePool(t *testing.T) {
	const seg = 1 << 20
	p := newPool(t, 4*seg, seg)
	segs, err := p.Segments()
	if err != nil {
		t.Fatal(err)
	}
	info, _ := p.Info()
	if uint64(len(segs)) != info.SegmentCount || len(segs) != 4 {
		t.Fatalf("%d segments, info says %d, want 4", len(segs), info.SegmentCount)
	}
	for i, s := range segs {
		if s.Index != uint32(i) || s.Len != seg || uintptr(s.Data) != uintptr(segs[0].Data)+uintptr(i)*seg {
			t.Fatalf("segment %d = %+v, base %p", i, s, segs[0].Data)
		}
	}
	off, err := p.Alloc(3*seg/2, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	data := p.Bytes(off)
	s := segs[uint64(off)/seg]
	if got, want := uintptr(unsafe.Pointer(&data[0])), uintptr(s.Data)+uintptr(uint64(off)%seg); got != want {
		t.Fatalf("object at %d is at %#x, segment %d says %#x", off, got, s.Index, want)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Segments(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Segments after Close = %v, want ErrClosed", err)
	}
}
