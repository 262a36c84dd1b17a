package rdma

import (
	"container/list"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// ErrCacheFull: every cached region is pinned by a work request in flight,
// so none can be evicted to make room. Retry after completions.
var ErrCacheFull = errors.New("rdma: memory-region cache full of pinned regions")

// Region is a registered memory region: a pool segment or bounce buffer.
type Region struct {
	Addr uintptr
	Len  uint64
	LKey uint32
	RKey uint32
	// Handle is the registration's native handle (*MR with a device),
	// opaque to the cache.
	Handle any
}

// RegisterFunc registers [addr, addr+length); DeregisterFunc undoes it.
// Injected so the cache is tested without a device.
type (
	RegisterFunc   func(addr uintptr, length uint64) (Region, error)
	DeregisterFunc func(Region) error
)

// MRCache keeps up to a fixed number of registered regions, one per pool
// segment: registration pins pages and costs a system call plus NIC table
// updates, so a segment is registered once and looked up by address on
// every transfer. When full, the least recently used unpinned region is
// deregistered. A region in use by a work request is pinned (Acquire ...
// release) and never evicted.
//
// Safe for concurrent use; one mutex, held across register/deregister calls
// (they are rare: once per segment).
type MRCache struct {
	mu       sync.Mutex
	capacity int
	reg      RegisterFunc
	dereg    DeregisterFunc
	byAddr   []*mrEntry // sorted by Addr; regions never overlap
	lru      *list.List // of *mrEntry, front = most recent
	closed   bool
}

type mrEntry struct {
	r    Region
	pins int
	elem *list.Element
}

// NewMRCache returns a cache of at most capacity regions.
func NewMRCache(capacity int, reg RegisterFunc, dereg DeregisterFunc) *MRCache {
	if capacity < 1 {
		capacity = 1
	}
	return &MRCache{capacity: capacity, reg: reg, dereg: dereg, lru: list.New()}
}

// find returns the index of the entry containing addr, or -1; i is where an
// entry starting at addr would be inserted.
func (c *MRCache) find(addr uintptr) (idx, ins int) {
	i := sort.Search(len(c.byAddr), func(i int) bool { return c.byAddr[i].r.Addr > addr })
	if i > 0 {
		e := c.byAddr[i-1]
		if addr-e.r.Addr < uintptr(e.r.Len) {
			return i - 1, i
		}
	}
	return -1, i
}

// Lookup finds the registered region containing [addr, addr+length) without
// registering or pinning.
func (c *MRCache) Lookup(addr uintptr, length uint64) (Region, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, _ := c.find(addr)
	if i < 0 || !contains(c.byAddr[i].r, addr, length) {
		return Region{}, false
	}
	c.lru.MoveToFront(c.byAddr[i].elem)
	return c.byAddr[i].r, true
}

func contains(r Region, addr uintptr, length uint64) bool {
	off := uint64(addr - r.Addr)
	return addr >= r.Addr && off <= r.Len && length <= r.Len-off
}

// Acquire returns the region containing [addr, addr+length), pinned until
// release is called. If none is cached, the segment [segBase,
// segBase+segLen) — which must contain the range — is registered first,
// evicting the least recently used unpinned region when the cache is full.
func (c *MRCache) Acquire(addr uintptr, length uint64, segBase uintptr, segLen uint64) (Region, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Region{}, nil, ErrClosed
	}
	if i, _ := c.find(addr); i >= 0 {
		e := c.byAddr[i]
		if !contains(e.r, addr, length) {
			return Region{}, nil, fmt.Errorf("rdma: range [%#x, +%d) crosses the end of registered region [%#x, +%d)", addr, length, e.r.Addr, e.r.Len)
		}
		return c.pin(e)
	}
	seg := Region{Addr: segBase, Len: segLen}
	if !contains(seg, addr, length) {
		return Region{}, nil, fmt.Errorf("rdma: range [%#x, +%d) is not inside segment [%#x, +%d)", addr, length, segBase, segLen)
	}
	// The new segment must not overlap a cached region.
	if c.overlaps(segBase, segLen) {
		return Region{}, nil, fmt.Errorf("rdma: segment [%#x, +%d) overlaps a registered region", segBase, segLen)
	}
	for len(c.byAddr) >= c.capacity {
		if err := c.evictOne(); err != nil {
			return Region{}, nil, err
		}
	}
	r, err := c.reg(segBase, segLen)
	if err != nil {
		return Region{}, nil, err
	}
	r.Addr, r.Len = segBase, segLen
	e := &mrEntry{r: r}
	e.elem = c.lru.PushFront(e)
	_, ins := c.find(segBase)
	c.byAddr = append(c.byAddr, nil)
	copy(c.byAddr[ins+1:], c.byAddr[ins:])
	c.byAddr[ins] = e
	return c.pin(e)
}

func (c *MRCache) pin(e *mrEntry) (Region, func(), error) {
	e.pins++
	c.lru.MoveToFront(e.elem)
	var once sync.Once
	return e.r, func() {
		once.Do(func() {
			c.mu.Lock()
			e.pins--
			c.mu.Unlock()
		})
	}, nil
}

func (c *MRCache) overlaps(base uintptr, n uint64) bool {
	_, ins := c.find(base)
	if ins > 0 {
		if p := c.byAddr[ins-1].r; p.Addr+uintptr(p.Len) > base {
			return true
		}
	}
	return ins < len(c.byAddr) && c.byAddr[ins].r.Addr < base+uintptr(n)
}

// evictOne deregisters the least recently used unpinned region.
func (c *MRCache) evictOne() error {
	for el := c.lru.Back(); el != nil; el = el.Prev() {
		e := el.Value.(*mrEntry)
		if e.pins > 0 {
			continue
		}
		if err := c.dereg(e.r); err != nil {
			return fmt.Errorf("rdma: deregister region [%#x, +%d): %w", e.r.Addr, e.r.Len, err)
		}
		c.remove(e)
		return nil
	}
	return fmt.Errorf("%w (%d regions)", ErrCacheFull, len(c.byAddr))
}

func (c *MRCache) remove(e *mrEntry) {
	c.lru.Remove(e.elem)
	i, _ := c.find(e.r.Addr)
	c.byAddr = append(c.byAddr[:i], c.byAddr[i+1:]...)
}

// Len is the number of cached regions.
func (c *MRCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byAddr)
}

// Close deregisters every region; pinned ones too, so call it only after
// the QPs that used them are destroyed. It returns the first error.
func (c *MRCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var first error
	for _, e := range c.byAddr {
		if err := c.dereg(e.r); err != nil && first == nil {
			first = err
		}
	}
	c.byAddr = nil
	c.lru.Init()
	return first
}
