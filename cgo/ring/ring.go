//go:build linux && cgo

package ring

/*
#cgo CFLAGS: -I${SRCDIR}/../../native/include -D_GNU_SOURCE -std=gnu11 -Wall -Wextra -Werror
#include "fluxon/ring.h"
*/
import "C"

import (
	"context"
	"fmt"
	"syscall"
	"time"
	"unsafe"

	"github.com/fluxon-dev/fluxon/cgo/core"
)

// Sentinel errors, matched with errors.Is. They carry the native code, so any
// *core.Error with the same code matches.
var (
	// ErrAgain: the ring is full (push) or empty (pop).
	ErrAgain error = &core.Error{Code: core.EAGAIN}
	// ErrClosed: the ring was closed with ClosePeer (the peer is gone or will push no
	// more). Natively FLX_RING_ECLOSED, which is FLX_ENOTFOUND.
	ErrClosed error = &core.Error{Code: core.ENOTFOUND}
	// ErrCorrupt: the region is not a ring, or its header or indices fail validation.
	ErrCorrupt error = &core.Error{Code: core.ECORRUPT}
	// ErrVersion: the region holds a ring of another layout version.
	ErrVersion error = &core.Error{Code: core.EVERSION}
	// ErrInvalid: a bad geometry, region or buffer.
	ErrInvalid error = &core.Error{Code: core.EINVAL}
	// ErrTooBig: a slot longer than the ring's slot size.
	ErrTooBig error = &core.Error{Code: core.ETOOBIG}
)

// Geometry limits, mirrored from fluxon/ring.h.
const (
	MinSlotSize = C.FLX_RING_MIN_SLOT
	MaxSlotSize = C.FLX_RING_MAX_SLOT
	MinSlots    = C.FLX_RING_MIN_SLOTS
	MaxSlots    = C.FLX_RING_MAX_SLOTS
	// Align is the alignment a region must have (mmap gives page alignment).
	Align = C.FLX_RING_ALIGN
	// HeaderBytes precede the slots in the region.
	HeaderBytes = C.FLX_RING_HDR_BYTES
	// LayoutVersion is the version of the shared layout this build reads and writes.
	LayoutVersion = C.FLX_RING_LAYOUT_VERSION
)

// Polls a waiter makes before it sleeps on the futex, per mode (FLX_RING_SPIN_BUSY and
// FLX_RING_SPIN_EVENT). One poll is a load and a CPU pause, 10-50 ns.
const (
	BusyPollSpins    = C.FLX_RING_SPIN_BUSY
	EventDrivenSpins = C.FLX_RING_SPIN_EVENT
)

func (m PollMode) spin() C.uint32_t {
	if m == BusyPoll {
		return BusyPollSpins
	}
	return EventDrivenSpins
}

// Ring is a process-local view of a ring in a shared region. It holds no native
// resource: dropping it is enough. The region must stay mapped while the Ring is used.
type Ring struct {
	h        *C.flx_ring // Go memory; points into the region, never into Go memory
	mem      []byte
	slotSize int
	slots    int
	pad      []byte // producer's buffer for slots shorter than slotSize
}

// Size returns the bytes a ring with this geometry needs in its region, or 0 if the
// geometry is invalid: slotSize a multiple of 8 in [MinSlotSize, MaxSlotSize], slots a
// power of two in [MinSlots, MaxSlots].
func Size(slotSize, slots int) int {
	if slotSize < 0 || slots < 0 || slotSize > MaxSlotSize || slots > MaxSlots {
		return 0
	}
	return int(C.flx_ring_bytes(C.uint32_t(slotSize), C.uint32_t(slots)))
}

func checkRegion(op string, mem []byte) error {
	if len(mem) == 0 {
		return fmt.Errorf("ring: %s: empty region: %w", op, ErrInvalid)
	}
	if uintptr(unsafe.Pointer(&mem[0]))%Align != 0 {
		return fmt.Errorf("ring: %s: region not %d-byte aligned (offset a ring within a region by multiples of %d): %w", op, Align, Align, ErrInvalid)
	}
	return refuseGoMemory(op, mem)
}

// refuseGoMemory turns cgo's pointer check into an error up front. The handle lives in
// Go memory and points into the region; if the region is Go memory too, cgo (with its
// default cgocheck=1) panics at the first call that passes the handle. Probing with a
// harmless call here reports that as ErrInvalid instead of a crash later. With
// GODEBUG=cgocheck=0 nothing is checked: the caller must keep to the rule unaided.
func refuseGoMemory(op string, mem []byte) (err error) {
	probe := &C.flx_ring{base: (*C.uchar)(unsafe.Pointer(&mem[0]))}
	defer func() {
		if recover() != nil {
			err = fmt.Errorf("ring: %s: region is Go heap memory; a ring needs mmap'd memory (use ring.Map): %w", op, ErrInvalid)
		}
	}()
	C.flx_ring_slot_size(probe)
	return nil
}

// Init writes a new, empty ring at the start of mem (Size(slotSize, slots) bytes are
// used) and returns a view of it. mem must be mmap'd memory aligned to Align (see Map),
// not Go heap memory. Call Init once, before any other process opens the ring.
func Init(mem []byte, slotSize, slots int) (*Ring, error) {
	if err := checkRegion("init", mem); err != nil {
		return nil, err
	}
	need := Size(slotSize, slots)
	if need == 0 {
		return nil, fmt.Errorf("ring: init: geometry %d-byte slots x %d: slot size must be a multiple of 8 in [%d, %d], slot count a power of two in [%d, %d]: %w",
			slotSize, slots, MinSlotSize, MaxSlotSize, MinSlots, MaxSlots, ErrInvalid)
	}
	if len(mem) < need {
		return nil, fmt.Errorf("ring: init: region has %d bytes, %d-byte slots x %d need %d: %w", len(mem), slotSize, slots, need, ErrInvalid)
	}
	r := &Ring{h: new(C.flx_ring), mem: mem}
	rc := C.flx_ring_init(r.h, unsafe.Pointer(&mem[0]), C.size_t(len(mem)), C.uint32_t(slotSize), C.uint32_t(slots))
	if err := core.Check("flx_ring_init", int(rc), 0); err != nil {
		return nil, fmt.Errorf("ring: init: %w", err)
	}
	r.fill()
	return r, nil
}

// Open attaches to a ring that Init wrote at the start of mem, possibly in another
// process. ErrCorrupt: mem holds no valid ring (not initialised, wrong region or
// offset, damaged); ErrVersion: a ring written by a build with another layout version.
func Open(mem []byte) (*Ring, error) {
	if err := checkRegion("open", mem); err != nil {
		return nil, err
	}
	r := &Ring{h: new(C.flx_ring), mem: mem}
	rc := C.flx_ring_open(r.h, unsafe.Pointer(&mem[0]), C.size_t(len(mem)))
	if err := core.Check("flx_ring_open", int(rc), 0); err != nil {
		return nil, fmt.Errorf("ring: open %d-byte region: %w (was it written by ring.Init of a compatible build?)", len(mem), err)
	}
	r.fill()
	return r, nil
}

func (r *Ring) fill() {
	r.slotSize = int(C.flx_ring_slot_size(r.h))
	r.slots = int(C.flx_ring_slots(r.h))
	r.pad = make([]byte, r.slotSize)
}

// SlotSize returns the size of one slot in bytes.
func (r *Ring) SlotSize() int { return r.slotSize }

// Slots returns the number of slots.
func (r *Ring) Slots() int { return r.slots }

// Push copies one slot into the ring; a slot shorter than SlotSize is padded with
// zeros. ErrAgain when the ring is full, ErrClosed once it is closed. Producer only.
func (r *Ring) Push(slot []byte) error {
	if len(slot) != r.slotSize {
		if len(slot) > r.slotSize {
			return fmt.Errorf("ring: push: %d-byte slot, the ring's slots hold %d: %w", len(slot), r.slotSize, ErrTooBig)
		}
		n := copy(r.pad, slot)
		clear(r.pad[n:])
		slot = r.pad
	}
	rc := C.flx_ring_push(r.h, unsafe.Pointer(&slot[0]))
	if rc == 0 {
		return nil
	}
	return core.Check("flx_ring_push", int(rc), 0)
}

// PushBatch copies as many whole slots from src (len(src)/SlotSize of them, back to
// back) as fit, in one native call, and returns how many it pushed: fewer than offered
// when the ring fills, 0 when it is full. ErrClosed once the ring is closed. len(src)
// must be a multiple of SlotSize. Producer only.
func (r *Ring) PushBatch(src []byte) (int, error) {
	if len(src)%r.slotSize != 0 {
		return 0, fmt.Errorf("ring: push batch: %d bytes is not a whole number of %d-byte slots: %w", len(src), r.slotSize, ErrInvalid)
	}
	n := len(src) / r.slotSize
	if n == 0 {
		return 0, nil
	}
	if n > r.slots {
		n = r.slots // more can never fit; also keeps the count within C's uint32
	}
	rc := C.flx_ring_push_n(r.h, unsafe.Pointer(&src[0]), C.uint32_t(n))
	if rc < 0 {
		return 0, core.Check("flx_ring_push_n", int(rc), 0)
	}
	return int(rc), nil
}

// Pop copies the oldest slot into dst, which must hold SlotSize bytes. ErrAgain when
// the ring is empty, ErrClosed when it is empty and closed (slots pushed before the
// close are still delivered first). Consumer only.
func (r *Ring) Pop(dst []byte) error {
	if len(dst) < r.slotSize {
		return fmt.Errorf("ring: pop: %d-byte buffer, a slot has %d: %w", len(dst), r.slotSize, ErrInvalid)
	}
	rc := C.flx_ring_pop(r.h, unsafe.Pointer(&dst[0]))
	if rc == 0 {
		return nil
	}
	return core.Check("flx_ring_pop", int(rc), 0)
}

// PopBatch copies up to max slots (and no more than fit in dst) into dst, back to back,
// in one native call, and returns how many: 0 when the ring is empty. ErrClosed when
// the ring is empty and closed. Consumer only.
func (r *Ring) PopBatch(dst []byte, max int) (int, error) {
	n := len(dst) / r.slotSize
	if max < n {
		n = max
	}
	if n <= 0 {
		return 0, nil
	}
	if n > r.slots {
		n = r.slots
	}
	rc := C.flx_ring_pop_n(r.h, unsafe.Pointer(&dst[0]), C.uint32_t(n))
	if rc < 0 {
		return 0, core.Check("flx_ring_pop_n", int(rc), 0)
	}
	return int(rc), nil
}

// PopBatchWait waits like WaitNonEmpty, then pops like PopBatch, in one native call
// when the ring already holds slots or fills within the wait: the consumer loop that
// crosses cgo once per received batch. It returns n >= 1 with a nil error, or 0 with
// ErrClosed (closed and drained) or ctx.Err(). max and dst must allow at least one slot.
func (r *Ring) PopBatchWait(ctx context.Context, mode PollMode, dst []byte, max int) (int, error) {
	n := min(len(dst)/r.slotSize, max, r.slots)
	if n <= 0 {
		return 0, fmt.Errorf("ring: pop batch wait: room for %d slots (max %d, %d-byte buffer, %d-byte slots): %w", n, max, len(dst), r.slotSize, ErrInvalid)
	}
	done := ctx.Done()
	spin := mode.spin()
	for ; ; spin = 0 {
		timeout, err := waitSlice(ctx, done)
		if err != nil {
			return 0, err
		}
		rc, cerr := C.flx_ring_pop_wait(r.h, unsafe.Pointer(&dst[0]), C.uint32_t(n), spin, C.int64_t(timeout))
		if rc > 0 {
			return int(rc), nil
		}
		if rc == C.FLX_EAGAIN {
			continue
		}
		errno, _ := cerr.(syscall.Errno)
		return 0, core.Check("flx_ring_pop_wait", int(rc), errno)
	}
}

// waitSlice returns the timeout of the next native wait: -1 (none) when ctx can never be
// done, else at most MaxWaitSlice and no later than ctx's deadline; ctx.Err() once done.
func waitSlice(ctx context.Context, done <-chan struct{}) (int64, error) {
	if done == nil {
		return -1, nil
	}
	select {
	case <-done:
		return 0, ctx.Err()
	default:
	}
	timeout := int64(MaxWaitSlice)
	if dl, ok := ctx.Deadline(); ok {
		if left := int64(time.Until(dl)); left < timeout {
			timeout = max(left, 1)
		}
	}
	return timeout, nil
}

// WaitNonEmpty blocks until at least one slot can be popped: nil then, ErrClosed when
// the ring is closed and drained, ctx.Err() when ctx ends first. How it waits follows
// mode (see PollMode). Consumer only.
//
// The native wait cannot watch ctx, so a cancellable ctx is polled between native
// waits of at most MaxWaitSlice; a ctx that is never done waits in one native call.
func (r *Ring) WaitNonEmpty(ctx context.Context, mode PollMode) error {
	return r.wait(ctx, mode, false)
}

// WaitNonFull blocks until at least one slot is free: nil then, ErrClosed once the ring
// is closed, ctx.Err() when ctx ends first. Producer only. See WaitNonEmpty.
func (r *Ring) WaitNonFull(ctx context.Context, mode PollMode) error {
	return r.wait(ctx, mode, true)
}

func (r *Ring) wait(ctx context.Context, mode PollMode, nonfull bool) error {
	done := ctx.Done()
	// Only the first native call spins: later ones follow a timed-out sleep, so the ring
	// has been idle for a whole slice and spinning again would only burn the core.
	spin := mode.spin()
	for ; ; spin = 0 {
		timeout, err := waitSlice(ctx, done)
		if err != nil {
			return err
		}
		var rc C.int
		if nonfull {
			rc, err = C.flx_ring_wait_nonfull(r.h, spin, C.int64_t(timeout))
		} else {
			rc, err = C.flx_ring_wait_nonempty(r.h, spin, C.int64_t(timeout))
		}
		switch rc {
		case 0:
			return nil
		case C.FLX_EAGAIN: // one slice timed out: look at ctx again
			continue
		}
		errno, _ := err.(syscall.Errno)
		op := "flx_ring_wait_nonempty"
		if nonfull {
			op = "flx_ring_wait_nonfull"
		}
		return core.Check(op, int(rc), errno)
	}
}

// ClosePeer marks the ring closed and wakes every waiter on both sides, in every
// process: pushes then fail with ErrClosed, pops drain what is left and then fail with
// it, waits return it. The producer calls it when it will push no more; the owner calls
// it on both rings of an external whose control connection dropped. Idempotent.
func (r *Ring) ClosePeer() error {
	rc, err := C.flx_ring_close(r.h)
	errno, _ := err.(syscall.Errno)
	return core.Check("flx_ring_close", int(rc), errno)
}

// Closed reports whether ClosePeer has run, in any process.
func (r *Ring) Closed() bool { return C.flx_ring_is_closed(r.h) != 0 }

// Info is a snapshot of a ring's shared state. Fields are read one by one without a
// lock, so on a busy ring they may be mutually inconsistent.
type Info struct {
	SlotSize, Slots int
	Head, Tail      uint64 // slots popped / pushed so far
	Closed          bool
	ConsWaiters     uint32 // consumers announced asleep now
	ProdWaiters     uint32 // producers announced asleep now
	ConsSleeps      uint64 // futex sleeps entered by consumers so far
	ProdSleeps      uint64
	ConsWakes       uint64 // futex wakes issued for a sleeping consumer so far
	ProdWakes       uint64
}

// Len returns the number of slots in the ring when the snapshot was taken.
func (i Info) Len() int { return int(i.Tail - i.Head) }

// Stat returns a snapshot of the ring's shared state, for diagnostics and metrics.
func (r *Ring) Stat() Info {
	var ci C.flx_ring_info
	C.flx_ring_stat(r.h, &ci)
	return Info{
		SlotSize: int(ci.slot_size), Slots: int(ci.slots),
		Head: uint64(ci.head), Tail: uint64(ci.tail), Closed: ci.closed != 0,
		ConsWaiters: uint32(ci.cons_waiters), ProdWaiters: uint32(ci.prod_waiters),
		ConsSleeps: uint64(ci.cons_sleeps), ProdSleeps: uint64(ci.prod_sleeps),
		ConsWakes: uint64(ci.cons_wakes), ProdWakes: uint64(ci.prod_wakes),
	}
}
