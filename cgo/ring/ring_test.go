//go:build linux && cgo

package ring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/core"
)

// childEnv, when set, makes the test binary act as the peer process of a cross-process
// test instead of running tests: "<role> <region path>".
const childEnv = "FLUXON_RING_TEST_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(runChild(v))
	}
	code := m.Run()
	if n := liveRegions.Load(); n != 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "ring: %d Region(s) mapped and never closed\n", n)
		code = 1
	}
	os.Exit(code)
}

// shmPath returns a fresh path for a region file: under /dev/shm where it exists (the
// production placement), otherwise in the test's temp dir.
func shmPath(t testing.TB) string {
	name := fmt.Sprintf("fluxon-ring-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		p := filepath.Join("/dev/shm", name)
		t.Cleanup(func() { os.Remove(p) })
		return p
	}
	return filepath.Join(t.TempDir(), name)
}

func mapRegion(t testing.TB, size int) *Region {
	t.Helper()
	reg, err := Map(shmPath(t), size, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := reg.Close(); err != nil {
			t.Error(err)
		}
	})
	return reg
}

// newPair lays out two rings, submit then complete, in one region.
func newPair(t testing.TB, slotSize, slots int) (reg *Region, sub, comp *Ring) {
	t.Helper()
	rb := Size(slotSize, slots)
	reg = mapRegion(t, 2*rb)
	var err error
	if sub, err = Init(reg.Bytes()[:rb], slotSize, slots); err != nil {
		t.Fatal(err)
	}
	if comp, err = Init(reg.Bytes()[rb:], slotSize, slots); err != nil {
		t.Fatal(err)
	}
	return reg, sub, comp
}

func putSeq(slot []byte, seq uint64) {
	binary.LittleEndian.PutUint64(slot, seq)
	binary.LittleEndian.PutUint64(slot[len(slot)-8:], ^seq)
}

func seqOf(slot []byte) (uint64, bool) {
	s := binary.LittleEndian.Uint64(slot)
	return s, binary.LittleEndian.Uint64(slot[len(slot)-8:]) == ^s
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestParsePollMode(t *testing.T) {
	for _, m := range []PollMode{BusyPoll, EventDriven} {
		got, err := ParsePollMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParsePollMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParsePollMode("spin"); err == nil {
		t.Error("ParsePollMode(spin) succeeded")
	}
	if PollMode(0) != EventDriven {
		t.Error("the zero PollMode must be EventDriven")
	}
}

func TestGeometryAndValidation(t *testing.T) {
	if got, want := Size(64, 1024), HeaderBytes+64*1024; got != want {
		t.Errorf("Size(64, 1024) = %d, want %d", got, want)
	}
	for _, g := range [][2]int{{0, 8}, {12, 8}, {264, 8}, {64, 3}, {64, 1}, {64, 0}, {-8, 8}, {64, MaxSlots * 2}} {
		if Size(g[0], g[1]) != 0 {
			t.Errorf("Size(%d, %d) accepted an invalid geometry", g[0], g[1])
		}
	}
	reg := mapRegion(t, 1<<16)
	mem := reg.Bytes()
	if _, err := Init(mem, 60, 16); !errors.Is(err, ErrInvalid) {
		t.Errorf("Init with 60-byte slots: %v, want ErrInvalid", err)
	}
	if _, err := Init(mem[:100], 64, 16); !errors.Is(err, ErrInvalid) {
		t.Errorf("Init into a short region: %v, want ErrInvalid", err)
	}
	if _, err := Init(mem[8:], 64, 16); !errors.Is(err, ErrInvalid) {
		t.Errorf("Init at a misaligned offset: %v, want ErrInvalid", err)
	}
	if _, err := Open(mem); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open of zeroes: %v, want ErrCorrupt", err)
	}
	r, err := Init(mem, 64, 16)
	if err != nil {
		t.Fatal(err)
	}
	if r.SlotSize() != 64 || r.Slots() != 16 {
		t.Errorf("geometry %d x %d", r.SlotSize(), r.Slots())
	}
	o, err := Open(mem)
	if err != nil || o.SlotSize() != 64 || o.Slots() != 16 {
		t.Fatalf("Open: %v", err)
	}
	if _, err := Open(mem[:Size(64, 16)-1]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open of a truncated region: %v, want ErrCorrupt", err)
	}
	binary.LittleEndian.PutUint32(mem[8:], LayoutVersion+1) // layout v1: version at offset 8
	_, err = Open(mem)
	if !errors.Is(err, ErrVersion) {
		t.Errorf("Open of another layout version: %v, want ErrVersion", err)
	}
	var ce *core.Error
	if !errors.As(err, &ce) || ce.Code != core.EVERSION || ce.Op != "flx_ring_open" {
		t.Errorf("error %v does not carry the native code", err)
	}
}

func TestGoHeapRegionRefused(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), "cgocheck=0") {
		t.Skip("cgocheck=0: cgo does not check pointers, so Go memory cannot be detected")
	}
	heap := make([]byte, 1<<16) // large allocations are page-aligned, so only the heap check refuses it
	if _, err := Init(heap, 64, 16); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "Go heap") {
		t.Errorf("Init over Go heap memory: %v, want ErrInvalid naming the Go heap", err)
	}
	if _, err := Open(heap); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open over Go heap memory: %v, want ErrInvalid", err)
	}
}

func TestPushPopSemantics(t *testing.T) {
	reg := mapRegion(t, Size(64, 8))
	r, err := Init(reg.Bytes(), 64, 8)
	if err != nil {
		t.Fatal(err)
	}
	slot := make([]byte, 64)
	if err := r.Pop(slot); !errors.Is(err, ErrAgain) {
		t.Fatalf("Pop on empty: %v, want ErrAgain", err)
	}
	if n, err := r.PopBatch(make([]byte, 64*4), 4); n != 0 || err != nil {
		t.Fatalf("PopBatch on empty: %d, %v", n, err)
	}
	for i := range 8 {
		putSeq(slot, uint64(i))
		if err := r.Push(slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Push(slot); !errors.Is(err, ErrAgain) {
		t.Fatalf("Push on full: %v, want ErrAgain", err)
	}
	if n, err := r.PushBatch(make([]byte, 64*3)); n != 0 || err != nil {
		t.Fatalf("PushBatch on full: %d, %v", n, err)
	}
	if got := r.Stat(); got.Len() != 8 || got.Tail != 8 {
		t.Fatalf("Stat %+v", got)
	}
	for i := range 8 {
		if err := r.Pop(slot); err != nil {
			t.Fatal(err)
		}
		if s, ok := seqOf(slot); !ok || s != uint64(i) {
			t.Fatalf("slot %d holds %d (intact %v)", i, s, ok)
		}
	}

	// Batches of odd sizes across the wrap point, against a model.
	var pushed, popped uint64
	batch := make([]byte, 64*11)
	out := make([]byte, 64*11)
	for iter := range 3000 {
		n := iter % 11
		for i := range n {
			putSeq(batch[i*64:(i+1)*64], pushed+uint64(i))
		}
		k, err := r.PushBatch(batch[:n*64])
		if err != nil || k != min(n, 8-int(pushed-popped)) {
			t.Fatalf("PushBatch(%d) = %d, %v with %d queued", n, k, err, pushed-popped)
		}
		pushed += uint64(k)
		m := (iter * 7) % 11
		got, err := r.PopBatch(out, m)
		if err != nil || got != min(m, int(pushed-popped)) {
			t.Fatalf("PopBatch(%d) = %d, %v with %d queued", m, got, err, pushed-popped)
		}
		for i := range got {
			if s, ok := seqOf(out[i*64 : (i+1)*64]); !ok || s != popped+uint64(i) {
				t.Fatalf("popped %d, want %d (intact %v)", s, popped+uint64(i), ok)
			}
		}
		popped += uint64(got)
	}

	// Short slots are padded with zeros; long ones are refused; batches are whole slots.
	for r.Stat().Len() > 0 {
		if err := r.Pop(slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Push([]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := r.Pop(slot); err != nil || slot[0] != 1 || slot[2] != 3 || slot[3] != 0 || slot[63] != 0 {
		t.Fatalf("short slot came back as %v, %v", slot[:8], err)
	}
	if err := r.Push(make([]byte, 65)); !errors.Is(err, ErrTooBig) {
		t.Errorf("Push of 65 bytes: %v, want ErrTooBig", err)
	}
	if _, err := r.PushBatch(make([]byte, 100)); !errors.Is(err, ErrInvalid) {
		t.Errorf("PushBatch of 100 bytes: %v, want ErrInvalid", err)
	}
	if err := r.Pop(make([]byte, 10)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Pop into 10 bytes: %v, want ErrInvalid", err)
	}
}

func TestCloseDrainsThenReportsClosed(t *testing.T) {
	reg := mapRegion(t, Size(64, 8))
	r, err := Init(reg.Bytes(), 64, 8)
	if err != nil {
		t.Fatal(err)
	}
	slot := make([]byte, 64)
	for i := range 3 {
		putSeq(slot, uint64(i))
		if err := r.Push(slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.ClosePeer(); err != nil {
		t.Fatal(err)
	}
	if !r.Closed() {
		t.Fatal("Closed() false after ClosePeer")
	}
	if err := r.Push(slot); !errors.Is(err, ErrClosed) {
		t.Errorf("Push after close: %v, want ErrClosed", err)
	}
	if err := r.WaitNonFull(context.Background(), EventDriven); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitNonFull after close: %v, want ErrClosed", err)
	}
	if err := r.WaitNonEmpty(context.Background(), EventDriven); err != nil {
		t.Errorf("WaitNonEmpty with slots left: %v", err)
	}
	buf := make([]byte, 64*8)
	if n, err := r.PopBatch(buf, 8); n != 3 || err != nil {
		t.Fatalf("PopBatch drained %d, %v; want 3", n, err)
	}
	if _, err := r.PopBatch(buf, 8); !errors.Is(err, ErrClosed) {
		t.Errorf("PopBatch on a drained closed ring: %v, want ErrClosed", err)
	}
	if err := r.WaitNonEmpty(context.Background(), BusyPoll); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitNonEmpty on a drained closed ring: %v, want ErrClosed", err)
	}
}

func TestCloseWakesWaiters(t *testing.T) {
	_, empty, full := newPair(t, 64, 4)
	if n, _ := full.PushBatch(make([]byte, 64*4)); n != 4 {
		t.Fatalf("filled %d", n)
	}
	errs := make(chan error, 2)
	// context.Background: one native wait with no timeout, so only the close can end it.
	go func() { errs <- empty.WaitNonEmpty(context.Background(), EventDriven) }()
	go func() { errs <- full.WaitNonFull(context.Background(), EventDriven) }()
	waitFor(t, "both waiters asleep", func() bool {
		return empty.Stat().ConsWaiters == 1 && full.Stat().ProdWaiters == 1
	})
	if err := empty.ClosePeer(); err != nil {
		t.Fatal(err)
	}
	if err := full.ClosePeer(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("waiter returned %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("close did not wake a waiter")
		}
	}
}

func TestWaitHonoursContext(t *testing.T) {
	reg := mapRegion(t, Size(64, 4))
	r, err := Init(reg.Bytes(), 64, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []PollMode{EventDriven, BusyPoll} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		deadline, _ := ctx.Deadline()
		err := r.WaitNonEmpty(ctx, mode)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v: WaitNonEmpty past the deadline: %v", mode, err)
		}
		if early := time.Until(deadline); early > 0 {
			t.Errorf("%v: returned %v before the deadline", mode, early)
		}

		ctx, cancel = context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- r.WaitNonEmpty(ctx, mode) }()
		time.Sleep(10 * time.Millisecond)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%v: cancelled WaitNonEmpty: %v", mode, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: cancellation not noticed", mode)
		}
	}
	// Data that arrives during a cancellable wait ends it with nil.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.WaitNonEmpty(ctx, EventDriven) }()
	waitFor(t, "waiter asleep", func() bool { return r.Stat().ConsWaiters == 1 })
	if err := r.Push([]byte{9}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("WaitNonEmpty woken by a push: %v", err)
	}
}

func TestPopBatchWait(t *testing.T) {
	reg := mapRegion(t, Size(64, 8))
	r, err := Init(reg.Bytes(), 64, 8)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64*8)
	if _, err := r.PopBatchWait(context.Background(), EventDriven, buf, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("max 0: %v, want ErrInvalid", err)
	}
	if _, err := r.PopBatchWait(context.Background(), EventDriven, buf[:10], 4); !errors.Is(err, ErrInvalid) {
		t.Errorf("10-byte buffer: %v, want ErrInvalid", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Millisecond)
	defer cancel()
	if n, err := r.PopBatchWait(ctx, EventDriven, buf, 8); n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("on an empty ring: %d, %v; want DeadlineExceeded", n, err)
	}
	got := make(chan int, 1)
	go func() {
		n, err := r.PopBatchWait(context.Background(), EventDriven, buf, 8)
		if err != nil {
			t.Error(err)
		}
		got <- n
	}()
	waitFor(t, "waiter asleep", func() bool { return r.Stat().ConsWaiters == 1 })
	src := make([]byte, 3*64)
	for i := range 3 {
		putSeq(src[i*64:(i+1)*64], uint64(i))
	}
	if n, err := r.PushBatch(src); n != 3 || err != nil {
		t.Fatalf("PushBatch: %d, %v", n, err)
	}
	if n := <-got; n < 1 || n > 3 {
		t.Fatalf("woken waiter popped %d slots", n)
	} else if n < 3 {
		if m, err := r.PopBatch(buf[n*64:], 8); err != nil || n+m != 3 {
			t.Fatalf("rest: %d, %v", m, err)
		}
	}
	for i := range 3 {
		if s, ok := seqOf(buf[i*64 : (i+1)*64]); !ok || s != uint64(i) {
			t.Fatalf("slot %d holds %d", i, s)
		}
	}
	if err := r.ClosePeer(); err != nil {
		t.Fatal(err)
	}
	if n, err := r.PopBatchWait(context.Background(), BusyPoll, buf, 8); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("closed and drained: %d, %v; want ErrClosed", n, err)
	}
}

// stream sends n sequenced slots from a producer goroutine to a consumer goroutine and
// checks order and completeness.
func stream(t *testing.T, r *Ring, mode PollMode, n uint64) {
	ctx := context.Background()
	ss := r.SlotSize()
	var wg sync.WaitGroup
	wg.Add(1)
	var prodErr error
	go func() {
		defer wg.Done()
		buf := make([]byte, 32*ss)
		var seq uint64
		for seq < n {
			b := int(min(uint64(1+seq%32), n-seq))
			for i := range b {
				putSeq(buf[i*ss:(i+1)*ss], seq+uint64(i))
			}
			for off := 0; off < b; {
				k, err := r.PushBatch(buf[off*ss : b*ss])
				if err != nil {
					prodErr = err
					return
				}
				off += k
				if off < b {
					if err := r.WaitNonFull(ctx, mode); err != nil {
						prodErr = err
						return
					}
				}
			}
			seq += uint64(b)
		}
		prodErr = r.ClosePeer()
	}()
	buf := make([]byte, 64*ss)
	var next uint64
	for {
		if err := r.WaitNonEmpty(ctx, mode); err != nil {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("WaitNonEmpty: %v", err)
			}
			break
		}
		got, err := r.PopBatch(buf, 1+int(next%64))
		if err != nil {
			t.Fatalf("PopBatch: %v", err)
		}
		for i := range got {
			if s, ok := seqOf(buf[i*ss : (i+1)*ss]); !ok || s != next {
				t.Fatalf("slot %d holds %d (intact %v)", next, s, ok)
			}
			next++
		}
	}
	wg.Wait()
	if prodErr != nil {
		t.Fatalf("producer: %v", prodErr)
	}
	if next != n {
		t.Fatalf("received %d of %d slots", next, n)
	}
}

func TestOrderAcrossGoroutines(t *testing.T) {
	n := uint64(2_000_000)
	if testing.Short() {
		n = 200_000
	}
	for _, mode := range []PollMode{BusyPoll, EventDriven} {
		t.Run(mode.String(), func(t *testing.T) {
			reg := mapRegion(t, Size(64, 256))
			r, err := Init(reg.Bytes(), 64, 256)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			stream(t, r, mode, n)
			st := r.Stat()
			t.Logf("%d slots in %v; consumer slept %d times, producer %d", n, time.Since(start).Round(time.Millisecond), st.ConsSleeps, st.ProdSleeps)
		})
	}
}

// runChild is the peer process of TestCrossProcess and the process ping-pong benchmark,
// spec "echo <region path> [poll mode]": it echoes every slot from the submit ring to
// the complete ring until submit is closed, then closes complete.
func runChild(spec string) int {
	f := strings.Fields(spec)
	if len(f) < 2 || len(f) > 3 || f[0] != "echo" {
		fmt.Fprintf(os.Stderr, "child: bad %s=%q\n", childEnv, spec)
		return 2
	}
	path, mode := f[1], EventDriven
	if len(f) == 3 {
		var err error
		if mode, err = ParsePollMode(f[2]); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 2
		}
	}
	reg, err := Map(path, 0, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	defer reg.Close()
	half := len(reg.Bytes()) / 2
	sub, err := Open(reg.Bytes()[:half])
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 4
	}
	comp, err := Open(reg.Bytes()[half:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 5
	}
	ctx := context.Background()
	buf := make([]byte, sub.Slots()*sub.SlotSize())
	for {
		n, err := sub.PopBatchWait(ctx, mode, buf, sub.Slots())
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: pop:", err)
			return 7
		}
		for off := 0; off < n; {
			k, err := comp.PushBatch(buf[off*comp.SlotSize() : n*comp.SlotSize()])
			if err != nil {
				fmt.Fprintln(os.Stderr, "child: push:", err)
				return 8
			}
			off += k
			if off < n {
				if err := comp.WaitNonFull(ctx, mode); err != nil {
					fmt.Fprintln(os.Stderr, "child: wait nonfull:", err)
					return 9
				}
			}
		}
	}
	if err := comp.ClosePeer(); err != nil {
		return 10
	}
	return 0
}

func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return '?'
	}
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2]
		}
	}
	return '?'
}

func TestCrossProcess(t *testing.T) {
	const slotSize, slots = 64, 128
	reg, sub, comp := newPair(t, slotSize, slots)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=echo "+reg.Path())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			<-exited
		}
	}()

	// The child, event-driven, goes to sleep on the empty submit ring. A Go process has
	// other threads, so "asleep" is read from the ring, not from /proc.
	waitFor(t, "child asleep on the submit ring", func() bool {
		st := sub.Stat()
		return st.ConsWaiters == 1 && st.ConsSleeps >= 1
	})
	before := sub.Stat()
	slot := make([]byte, slotSize)
	putSeq(slot, 0)
	if err := sub.Push(slot); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := comp.WaitNonEmpty(ctx, EventDriven); err != nil {
		t.Fatalf("no echo: %v", err)
	}
	if err := comp.Pop(slot); err != nil {
		t.Fatal(err)
	}
	if s, ok := seqOf(slot); !ok || s != 0 {
		t.Fatalf("echo holds %d (intact %v)", s, ok)
	}
	if after := sub.Stat(); after.ConsWakes <= before.ConsWakes || before.ConsSleeps == 0 {
		t.Errorf("the child was not woken from a futex sleep: before %+v after %+v", before, after)
	}

	// A pipelined stream in both directions, checked for order and completeness.
	n := uint64(500_000)
	if testing.Short() {
		n = 50_000
	}
	batch := make([]byte, 32*slotSize)
	in := make([]byte, slots*slotSize)
	sent, recv := uint64(1), uint64(1)
	for recv < n {
		if sent < n {
			b := int(min(uint64(1+sent%32), n-sent))
			for i := range b {
				putSeq(batch[i*slotSize:(i+1)*slotSize], sent+uint64(i))
			}
			k, err := sub.PushBatch(batch[:b*slotSize])
			if err != nil {
				t.Fatal(err)
			}
			sent += uint64(k)
			if k == 0 { // full: the child is behind, so echoes are pending
				if err := comp.WaitNonEmpty(ctx, EventDriven); err != nil {
					t.Fatal(err)
				}
			}
		} else if err := comp.WaitNonEmpty(ctx, EventDriven); err != nil {
			t.Fatal(err)
		}
		got, err := comp.PopBatch(in, slots)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if s, ok := seqOf(in[i*slotSize : (i+1)*slotSize]); !ok || s != recv {
				t.Fatalf("echo %d holds %d (intact %v)", recv, s, ok)
			}
			recv++
		}
	}

	// Closing submit ends the child, which closes complete: the "peer gone" signal.
	if err := sub.ClosePeer(); err != nil {
		t.Fatal(err)
	}
	if err := comp.WaitNonEmpty(ctx, EventDriven); !errors.Is(err, ErrClosed) {
		t.Fatalf("after the child finished: %v, want ErrClosed", err)
	}
	select {
	case err := <-exited:
		reaped = true
		if err != nil {
			t.Fatalf("child: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child did not exit")
	}
	st := sub.Stat()
	t.Logf("%d slots echoed across processes; child slept %d times, woken %d times", n, st.ConsSleeps, st.ConsWakes)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleCPU returns the share of one core the whole process used while one goroutine
// waited on an empty ring for d in the given mode.
func idleCPU(t *testing.T, r *Ring, mode PollMode, d time.Duration) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c0, w0 := cpuTime(), time.Now()
	if err := r.WaitNonEmpty(ctx, mode); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v: idle wait returned %v", mode, err)
	}
	return float64(cpuTime()-c0) / float64(time.Since(w0))
}

// spinCPU returns the share of one core a plain Go busy loop gets for d: the baseline
// that tells the idle measurement below is not vacuous.
func spinCPU(d time.Duration) float64 {
	c0, w0 := cpuTime(), time.Now()
	for time.Since(w0) < d {
	}
	return float64(cpuTime()-c0) / float64(time.Since(w0))
}

// An idle event-driven waiter sleeps in the kernel instead of spinning. This is a
// behavioural property (futex sleep vs. spin), not a performance target: the bound is
// a fifth of a core, where a busy loop uses all of one.
func TestEventDrivenIdleUsesLittleCPU(t *testing.T) {
	reg := mapRegion(t, Size(64, 4))
	r, err := Init(reg.Bytes(), 64, 4)
	if err != nil {
		t.Fatal(err)
	}
	const idle = 300 * time.Millisecond
	event := idleCPU(t, r, EventDriven, idle)
	busy := idleCPU(t, r, BusyPoll, idle)
	loop := spinCPU(idle)
	t.Logf("CPU over %v idle: event_driven waiter %.1f%% of a core, busy_poll waiter %.1f%% (spins %d polls, then sleeps), Go busy loop %.1f%%",
		idle, 100*event, 100*busy, BusyPollSpins, 100*loop)
	if event > 0.20 {
		t.Errorf("event_driven idle waiter used %.1f%% of a core, want < 20%%", 100*event)
	}
	if loop < 2*event {
		t.Errorf("a busy loop measured %.1f%% of a core, not clearly above the idle waiter's %.1f%%: CPU accounting looks broken", 100*loop, 100*event)
	}
	if st := r.Stat(); st.ConsSleeps == 0 {
		t.Error("the idle waiter never slept on the futex")
	}
}
