//go:build linux && cgo

package pool

/*
#cgo CFLAGS: -I${SRCDIR}/../../native/include -D_GNU_SOURCE -std=gnu11 -Wall -Wextra -Werror
#include <stdlib.h>
#include "fluxon/pool.h"

// Small wrappers that return results by value, so the hot calls pass no Go pointers to C
// (nothing escapes to the heap and cgo has no pointers to check).
typedef struct { int rc; uint64_t off; } flx_go_alloc_res;
static inline flx_go_alloc_res flx_go_alloc(flx_pool *p, uint64_t len, uint64_t key, uint64_t version) {
	flx_go_alloc_res r = {0, 0};
	r.rc = flx_pool_alloc(p, len, key, version, &r.off);
	return r;
}
typedef struct { void *ptr; uint64_t len; } flx_go_data_res;
static inline flx_go_data_res flx_go_data(flx_pool *p, uint64_t off) {
	flx_go_data_res r = {NULL, 0};
	r.ptr = flx_obj_data(p, off, &r.len);
	return r;
}
typedef struct { int rc; flx_obj_info info; } flx_go_info_res;
static inline flx_go_info_res flx_go_info(flx_pool *p, uint64_t off) {
	flx_go_info_res r;
	r.rc = flx_obj_info_get(p, off, &r.info);
	return r;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/fluxon-dev/fluxon/cgo/core"
)

// Layout constants, mirrored from fluxon/pool.h.
const (
	DefaultSegmentSize = uint64(C.FLX_POOL_DEFAULT_SEGMENT)
	MinSegmentSize     = uint64(C.FLX_POOL_MIN_SEGMENT)
	MaxSegmentSize     = uint64(C.FLX_POOL_MAX_SEGMENT)
	ObjectHeaderSize   = uint64(C.FLX_OBJ_HEADER_SIZE)
	ObjectAlign        = uint64(C.FLX_OBJ_ALIGN)
	BigObject          = uint64(C.FLX_POOL_BIG_OBJECT) // objects this long or longer are 4 KiB aligned
	PageSize           = uint64(C.FLX_POOL_PAGE)
	NumClasses         = int(C.FLX_POOL_NCLASSES)
	LayoutVersion      = uint32(C.FLX_POOL_LAYOUT_VERSION)
)

// Sentinel errors, matched with errors.Is. Except ErrClosed they carry the native code,
// so any *core.Error with the same code matches.
var (
	// ErrClosed: the Pool handle was closed.
	ErrClosed = errors.New("pool: use of a closed pool handle")
	// ErrNotSupported: this build or this handle cannot do that (an attached handle
	// cannot allocate or free; a path not on tmpfs/hugetlbfs).
	ErrNotSupported error = &core.Error{Code: core.ENOTSUP}
	// ErrNoMem: no room now; retry after frees or evictions.
	ErrNoMem error = &core.Error{Code: core.ENOMEM}
	// ErrTooBig: the object could never fit in this pool.
	ErrTooBig error = &core.Error{Code: core.ETOOBIG}
	// ErrBusy: still being written (Ref), or still referenced (Free).
	ErrBusy error = &core.Error{Code: core.EBUSY}
	// ErrNotFound: removed or freed (Ref, Seal), or no pool file at the path (Attach).
	ErrNotFound error = &core.Error{Code: core.ENOTFOUND}
	// ErrExist: Create found a file at the path.
	ErrExist error = &core.Error{Code: core.EEXIST}
	// ErrInvalid: a bad argument, a double free or an offset that is not an object.
	ErrInvalid error = &core.Error{Code: core.EINVAL}
	// ErrCorrupt: a pool or object header failed validation.
	ErrCorrupt error = &core.Error{Code: core.ECORRUPT}
	// ErrVersion: the pool file has another layout version.
	ErrVersion error = &core.Error{Code: core.EVERSION}
)

// openHandles counts Pools not yet closed (tests check it returns to zero).
var openHandles atomic.Int64

// Pool is a handle on a shared-memory pool: the owner's (Create) or an external's (Attach).
type Pool struct {
	calls inflight
	h     *C.flx_pool // freed by Close once no call is in flight; never touched after
	path  string
	owner bool
}

// inflight lets Close wait for calls in progress and turns later calls away. Unlike a
// RWMutex, calls on different goroutines do not share a cache line: each call counts
// itself in one of inflightSlots padded counters, picked at random. A call increments its
// counter and then checks closed; Close sets closed and then waits for every counter to be
// zero. Go atomics are sequentially consistent, so either the call sees closed or Close
// sees the call.
type inflight struct {
	closed atomic.Bool
	mu     sync.Mutex // serialises Close/Destroy
	slots  [inflightSlots]struct {
		n atomic.Int64
		_ [56]byte
	}
}

const inflightSlots = 16

func (g *inflight) enter() (slot uint32, ok bool) {
	slot = rand.Uint32() % inflightSlots
	g.slots[slot].n.Add(1)
	if g.closed.Load() {
		g.slots[slot].n.Add(-1)
		return 0, false
	}
	return slot, true
}

func (g *inflight) exit(slot uint32) { g.slots[slot].n.Add(-1) }

// shut marks the handle closed and waits until no call is in flight. It returns false if
// the handle was already closed.
func (g *inflight) shut() bool {
	if g.closed.Swap(true) {
		return false
	}
	for {
		var n int64
		for i := range g.slots {
			n += g.slots[i].n.Load()
		}
		if n == 0 {
			return true
		}
		runtime.Gosched()
	}
}

func check(op string, rc C.int, err error) error {
	var errno syscall.Errno
	if e, ok := err.(syscall.Errno); ok {
		errno = e
	}
	return core.Check(op, int(rc), errno)
}

// Create makes a pool file of size bytes (rounded down to whole segments) at path, which
// must be on tmpfs or hugetlbfs. segmentSize is a power of two in [MinSegmentSize,
// MaxSegmentSize], or 0 for DefaultSegmentSize. The memory is reserved up front.
func Create(path string, size, segmentSize uint64) (*Pool, error) {
	return CreateWith(path, size, segmentSize, Options{})
}

// CreateWith is Create with Options.
func CreateWith(path string, size, segmentSize uint64, o Options) (*Pool, error) {
	var flags C.uint32_t
	if o.Replace {
		flags |= C.FLX_POOL_REPLACE
	}
	if o.Sparse {
		flags |= C.FLX_POOL_SPARSE
	}
	if o.AnyFS {
		flags |= C.FLX_POOL_ANY_FS
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var h *C.flx_pool
	rc, errno := C.flx_pool_create(cpath, C.uint64_t(size), C.uint64_t(segmentSize), flags, &h)
	if err := check("pool.Create "+path, rc, errno); err != nil {
		return nil, explain(err, path, size, segmentSize)
	}
	openHandles.Add(1)
	return &Pool{h: h, path: path, owner: true}, nil
}

// explain adds what to do to the errors a user is likely to hit when creating a pool.
func explain(err error, path string, size, seg uint64) error {
	var ce *core.Error
	if errors.As(err, &ce) && ce.Errno == syscall.ENOSPC {
		return fmt.Errorf("%w: not enough free memory on the filesystem of %s for %d bytes; contribute less or enlarge it (e.g. mount -o remount,size=... /dev/shm)", err, path, size)
	}
	switch {
	case errors.Is(err, ErrNotSupported):
		return fmt.Errorf("%w: %s is not on tmpfs or hugetlbfs; put shared_memory_path under /dev/shm or a hugetlbfs mount", err, path)
	case errors.Is(err, ErrExist):
		return fmt.Errorf("%w: a pool file already exists at %s; another owner may be running, or remove the stale file", err, path)
	case errors.Is(err, ErrInvalid):
		return fmt.Errorf("%w: size %d and segment size %d must give at least one segment; the segment size must be a power of two between %d and %d", err, size, seg, MinSegmentSize, MaxSegmentSize)
	}
	return err
}

// Attach maps an existing pool as an external. It fails with ErrCorrupt when the file is
// not a valid pool (wrong magic, checksum or size) and ErrVersion when it was made by a
// build with another layout version.
func Attach(path string) (*Pool, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var h *C.flx_pool
	rc, errno := C.flx_pool_attach(cpath, &h)
	if err := check("pool.Attach "+path, rc, errno); err != nil {
		switch {
		case errors.Is(err, ErrVersion):
			return nil, fmt.Errorf("%w: the pool at %s has another layout version than this build (%d); run the same fluxon version as the owner", err, path, LayoutVersion)
		case errors.Is(err, ErrCorrupt):
			return nil, fmt.Errorf("%w: %s is not a valid pool file (truncated, overwritten, or not a pool)", err, path)
		}
		return nil, err
	}
	openHandles.Add(1)
	return &Pool{h: h, path: path}, nil
}

// Close unmaps the pool; the file stays. Slices from Bytes must not be used afterwards.
// It waits for calls in flight on other goroutines. A second Close returns ErrClosed.
func (p *Pool) Close() error {
	p.calls.mu.Lock()
	defer p.calls.mu.Unlock()
	if !p.calls.shut() {
		return ErrClosed
	}
	rc, errno := C.flx_pool_close(p.h)
	openHandles.Add(-1)
	return check("pool.Close", rc, errno)
}

// Destroy removes the pool file (if it is still the one this handle created) and closes
// the handle. Owner only: on an attached handle it returns ErrNotSupported and the handle
// stays open.
func (p *Pool) Destroy() error {
	p.calls.mu.Lock()
	defer p.calls.mu.Unlock()
	if p.calls.closed.Load() {
		return ErrClosed
	}
	if !p.owner {
		return &core.Error{Op: "pool.Destroy", Code: core.ENOTSUP}
	}
	if !p.calls.shut() {
		return ErrClosed
	}
	rc, errno := C.flx_pool_destroy(p.h)
	openHandles.Add(-1)
	return check("pool.Destroy", rc, errno)
}

// Path returns the pool file's path.
func (p *Pool) Path() string { return p.path }

// Owner reports whether this is the owner's handle (from Create).
func (p *Pool) Owner() bool { return p.owner }

// Segments lists the pool's segments in this process's mapping, in order:
// segment i starts at the mapping's base + i*SegmentSize, so an object at
// offset off lies in segment off/SegmentSize at off%SegmentSize (objects
// never cross a segment unless they span several). The pointers stay valid
// until Close or Destroy: whoever registers them (rdma) must deregister
// first.
func (p *Pool) Segments() ([]Segment, error) {
	slot, ok := p.calls.enter()
	if !ok {
		return nil, ErrClosed
	}
	defer p.calls.exit(slot)
	var in C.flx_pool_info
	if err := check("pool.Segments", C.flx_pool_get_info(p.h, &in), nil); err != nil {
		return nil, err
	}
	segs := make([]Segment, in.segment_count)
	size := uint64(in.segment_size)
	for i := range segs {
		segs[i] = Segment{Index: uint32(i), Data: unsafe.Add(in.base, uint64(i)*size), Len: size}
	}
	return segs, nil
}

// Info returns the pool's geometry and identity.
func (p *Pool) Info() (Info, error) {
	slot, ok := p.calls.enter()
	if !ok {
		return Info{}, ErrClosed
	}
	defer p.calls.exit(slot)
	var in C.flx_pool_info
	if err := check("pool.Info", C.flx_pool_get_info(p.h, &in), nil); err != nil {
		return Info{}, err
	}
	return Info{
		Size:         uint64(in.pool_size),
		SegmentSize:  uint64(in.segment_size),
		SegmentCount: uint64(in.segment_count),
		DataOffset:   uint64(in.data_offset),
		Created:      time.Unix(0, int64(in.created_ns)),
		Generation:   uint64(in.generation),
		HugePageSize: uint64(in.huge_page_size),
		OwnerPID:     int(in.owner_pid),
		FS:           FSKind(in.fs_kind),
		Owner:        in.is_owner != 0,
	}, nil
}

// Alloc allocates an object of n bytes (owner only) in state WRITING with refcount 1, the
// writer's reference. ErrTooBig: it could never fit; ErrNoMem: no room now.
func (p *Pool) Alloc(n, keyHash, version uint64) (Offset, error) {
	slot, ok := p.calls.enter()
	if !ok {
		return 0, ErrClosed
	}
	defer p.calls.exit(slot)
	r := C.flx_go_alloc(p.h, C.uint64_t(n), C.uint64_t(keyHash), C.uint64_t(version))
	if r.rc != 0 {
		return 0, check("pool.Alloc", r.rc, nil)
	}
	return Offset(r.off), nil
}

// Seal moves an object from WRITING to READY so readers can Ref it.
func (p *Pool) Seal(off Offset) error {
	slot, ok := p.calls.enter()
	if !ok {
		return ErrClosed
	}
	defer p.calls.exit(slot)
	return check("pool.Seal", C.flx_obj_seal(p.h, C.uint64_t(off)), nil)
}

// Ref takes a reader's reference on a READY object. ErrBusy while it is being written,
// ErrNotFound once removed. When off may be stale, compare Header's KeyHash/Version or
// AllocSeq after a successful Ref.
func (p *Pool) Ref(off Offset) error {
	slot, ok := p.calls.enter()
	if !ok {
		return ErrClosed
	}
	defer p.calls.exit(slot)
	return check("pool.Ref", C.flx_obj_ref(p.h, C.uint64_t(off)), nil)
}

// Unref drops a reference. released is true when this left the object removed and
// unreferenced: on the owner's handle it has been freed; on an attached handle the
// caller must ask the owner to Free it.
func (p *Pool) Unref(off Offset) (released bool, err error) {
	slot, ok := p.calls.enter()
	if !ok {
		return false, ErrClosed
	}
	defer p.calls.exit(slot)
	rc := C.flx_obj_unref(p.h, C.uint64_t(off))
	return rc == 1, check("pool.Unref", rc, nil)
}

// Remove marks the object REMOVED: no new references. released is true when nobody held
// a reference (freed on the owner's handle; an attached handle must ask the owner to Free
// it); otherwise the last Unref releases it.
func (p *Pool) Remove(off Offset) (released bool, err error) {
	slot, ok := p.calls.enter()
	if !ok {
		return false, ErrClosed
	}
	defer p.calls.exit(slot)
	rc := C.flx_obj_remove(p.h, C.uint64_t(off))
	return rc == 1, check("pool.Remove", rc, nil)
}

// Free returns an object's memory (owner only). The object must be removed and
// unreferenced, or still WRITING with only the writer's reference (an abandoned write).
// ErrBusy if it is still referenced or READY; ErrInvalid for a double free or an offset
// that is not an object.
func (p *Pool) Free(off Offset) error {
	slot, ok := p.calls.enter()
	if !ok {
		return ErrClosed
	}
	defer p.calls.exit(slot)
	return check("pool.Free", C.flx_pool_free(p.h, C.uint64_t(off)), nil)
}

// Bytes returns the object's data in place: pool memory, not Go memory. It returns nil
// when off is not a valid object or the pool is closed. The slice is valid until Close,
// and holds this object's bytes only while the caller holds a reference.
func (p *Pool) Bytes(off Offset) []byte {
	slot, ok := p.calls.enter()
	if !ok {
		return nil
	}
	defer p.calls.exit(slot)
	r := C.flx_go_data(p.h, C.uint64_t(off))
	if r.ptr == nil {
		return nil
	}
	n := int(r.len)
	return unsafe.Slice((*byte)(r.ptr), n)[:n:n]
}

// Header returns a copy of the object's header.
func (p *Pool) Header(off Offset) (Header, error) {
	slot, ok := p.calls.enter()
	if !ok {
		return Header{}, ErrClosed
	}
	defer p.calls.exit(slot)
	r := C.flx_go_info(p.h, C.uint64_t(off))
	if err := check("pool.Header", r.rc, nil); err != nil {
		return Header{}, err
	}
	in := &r.info
	return Header{
		KeyHash:   uint64(in.key_hash),
		Length:    uint64(in.length),
		Version:   uint64(in.version),
		AllocSeq:  uint64(in.alloc_seq),
		BlockLen:  uint64(in.block_len),
		State:     State(in.state),
		RefCount:  uint32(in.refcount),
		SizeClass: int(in.size_class),
	}, nil
}

// Stats returns the allocator's counters (owner only).
func (p *Pool) Stats() (Stats, error) {
	slot, ok := p.calls.enter()
	if !ok {
		return Stats{}, ErrClosed
	}
	defer p.calls.exit(slot)
	var st C.flx_pool_stats
	if err := check("pool.Stats", C.flx_pool_stats_get(p.h, &st), nil); err != nil {
		return Stats{}, err
	}
	s := Stats{
		Total:          uint64(st.total_bytes),
		Capacity:       uint64(st.capacity_bytes),
		Used:           uint64(st.used_bytes),
		Reserved:       uint64(st.reserved_bytes),
		Free:           uint64(st.free_bytes),
		SmallFree:      uint64(st.small_free_bytes),
		LargestFreeRun: uint64(st.largest_free_run),
		Objects:        uint64(st.object_count),
		LargeObjects:   uint64(st.large_objects),
		Classes:        make([]ClassStats, int(st.nclasses)),
	}
	for i := range s.Classes {
		c := &st.classes[i]
		s.Classes[i] = ClassStats{
			BlockSize: uint64(c.block_size),
			Spans:     uint64(c.spans),
			Objects:   uint64(c.objects),
			FreeSlots: uint64(c.free_slots),
		}
	}
	return s, nil
}

// Check walks the allocator's bookkeeping and verifies it is consistent (owner only). It
// takes every lock and costs O(pool pages): for tests and debugging.
func (p *Pool) Check() error {
	slot, ok := p.calls.enter()
	if !ok {
		return ErrClosed
	}
	defer p.calls.exit(slot)
	return check("pool.Check", C.flx_pool_check(p.h), nil)
}
