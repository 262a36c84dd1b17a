package pool

import (
	"fmt"
	"time"
	"unsafe"
)

// Offset names an object: the byte offset of its data from the start of the pool file.
// The object's 64-byte header is at Offset-ObjectHeaderSize.
type Offset uint64

// In says where the byte at pool offset o lies in a pool cut into
// segSize-byte segments: segment o/segSize (RemoteRef.Segment, the index
// Segments gives), at o%segSize inside it. An object of up to one segment
// never crosses a segment boundary; a larger one spans consecutive
// segments from there (they are contiguous in the mapping), so a reader
// of it splits its ranges at segment boundaries.
func (o Offset) In(segSize uint64) (segment uint32, off uint64) {
	return uint32(uint64(o) / segSize), uint64(o) % segSize
}

// State is an object's life-cycle state.
type State uint32

// Object states, mirrored from enum flx_obj_state.
const (
	StateWriting State = 1 // allocated; the writer fills the data
	StateReady   State = 2 // sealed; readers may take references
	StateRemoved State = 3 // no new references; freed when the last one is dropped
	StateFree    State = 4 // the block went back to the allocator
)

func (s State) String() string {
	switch s {
	case StateWriting:
		return "WRITING"
	case StateReady:
		return "READY"
	case StateRemoved:
		return "REMOVED"
	case StateFree:
		return "FREE"
	}
	return fmt.Sprintf("State(%d)", uint32(s))
}

// Header is a copy of an object's header, taken with one atomic read of state and refcount.
type Header struct {
	KeyHash  uint64
	Length   uint64
	Version  uint64
	AllocSeq uint64 // unique per allocation in this pool: compare after Ref to detect reuse
	BlockLen uint64 // bytes the allocator set aside, header and rounding included
	State    State
	RefCount uint32
	// SizeClass is 1 + the small size class, or 0 for an object held in an extent.
	SizeClass int
}

// ClassStats describes one small size class.
type ClassStats struct {
	BlockSize uint64 // bytes per slot, header included
	Spans     uint64 // spans assigned to the class, cached empty ones included
	Objects   uint64 // live objects
	FreeSlots uint64
}

// Stats are the allocator's counters (owner only). Classes are read one at a time, so
// the whole is not one atomic snapshot while other goroutines allocate.
type Stats struct {
	Total          uint64 // pool size (the file)
	Capacity       uint64 // Total minus the pool header page
	Used           uint64 // sum over live objects of header + length
	Reserved       uint64 // bytes of live objects' blocks, rounding included
	Free           uint64 // bytes in free page runs, usable by any object
	SmallFree      uint64 // free slots in small-object spans, usable only by their class
	LargestFreeRun uint64 // bytes of the largest free page run
	Objects        uint64
	LargeObjects   uint64 // objects held in extents
	Classes        []ClassStats
}

// FSKind says what filesystem holds the pool file.
type FSKind uint32

// Filesystems, mirrored from enum flx_pool_fs.
const (
	FSOther     FSKind = 0
	FSTmpfs     FSKind = 1
	FSHugetlbfs FSKind = 2
)

func (k FSKind) String() string {
	switch k {
	case FSTmpfs:
		return "tmpfs"
	case FSHugetlbfs:
		return "hugetlbfs"
	}
	return "other"
}

// Info describes a pool: its header plus whether this handle is the owner's.
type Info struct {
	Size         uint64
	SegmentSize  uint64
	SegmentCount uint64
	DataOffset   uint64
	Created      time.Time
	Generation   uint64 // random per creation: tells a re-created pool from the old one
	HugePageSize uint64 // 0 on tmpfs
	OwnerPID     int
	FS           FSKind
	Owner        bool
}

// Segment is one segment of this process's mapping of the pool: the unit
// of RDMA registration. Data is pool memory (an mmap the GC never moves),
// valid until the handle is closed.
type Segment struct {
	Index uint32
	Data  unsafe.Pointer
	Len   uint64
}

// Options change how Create makes the pool file.
type Options struct {
	// Replace atomically replaces an existing file at the path (default: ErrExist).
	Replace bool
	// Sparse skips reserving the memory up front; a full tmpfs then shows up as SIGBUS
	// when a page is first touched instead of as an error from Create.
	Sparse bool
	// AnyFS allows a path that is not on tmpfs or hugetlbfs (tests and tools only: a
	// disk-backed pool writes back to disk).
	AnyFS bool
}
