//go:build linux && cgo && ucx

package ucx

/*
#cgo CFLAGS: -I${SRCDIR}/../../native/include -D_GNU_SOURCE -std=gnu11 -Wall -Wextra -Werror
#cgo pkg-config: ucx
#include <stdlib.h>
#include "fluxon/ucx.h"
*/
import "C"

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/fluxon-dev/fluxon/cgo/core"
)

// Sizes of the buffers that receive a worker address or a packed rkey
// (UCX's are a few hundred bytes with every transport on).
const (
	maxAddress = 16 << 10
	maxRKey    = 16 << 10
)

var live atomic.Int64

// Supported reports whether this build has UCX.
func Supported() bool { return true }

// Live is the number of open handles of every kind, for leak checks.
func Live() int64 { return live.Load() }

func check(op string, rc C.int, errno error) error {
	if rc >= 0 {
		return nil
	}
	if rc <= C.FLX_UCX_STATUS_BASE {
		return &Error{Op: op, Status: int(rc - C.FLX_UCX_STATUS_BASE), Msg: C.GoString(C.flx_ucx_strerror(rc))}
	}
	en, _ := errno.(syscall.Errno)
	return core.Check(op, int(rc), en)
}

// Node is a UCX context and worker with its progress thread.
type Node struct {
	mu sync.RWMutex // held for reading by calls, for writing by Close
	p  *C.flx_ucx_node
}

// Open starts a node. UCX reads its configuration (UCX_TLS, ...) from the
// environment here.
func Open() (*Node, error) {
	var p *C.flx_ucx_node
	rc, errno := C.flx_ucx_node_open(&p)
	if err := check("open node", rc, errno); err != nil {
		return nil, err
	}
	live.Add(1)
	return &Node{p: p}, nil
}

// Close stops the node. Its endpoints, mappings and rkeys must be closed
// first.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p == nil {
		return ErrClosed
	}
	C.flx_ucx_node_close(n.p)
	n.p = nil
	live.Add(-1)
	return nil
}

// Address is the worker's address, which a peer passes to Connect.
func (n *Node) Address() ([]byte, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.p == nil {
		return nil, ErrClosed
	}
	buf := make([]byte, maxAddress)
	var l C.size_t
	rc, errno := C.flx_ucx_node_address(n.p, unsafe.Pointer(&buf[0]), C.size_t(len(buf)), &l)
	if err := check("worker address", rc, errno); err != nil {
		return nil, err
	}
	return buf[:l], nil
}

// Endpoint is a connection to a peer node's worker.
type Endpoint struct {
	n  *Node
	mu sync.RWMutex
	p  *C.flx_ucx_ep
}

// Connect opens an endpoint to the worker whose Address is addr.
func (n *Node) Connect(addr []byte) (*Endpoint, error) {
	if len(addr) == 0 {
		return nil, check("connect", C.FLX_EINVAL, nil)
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.p == nil {
		return nil, ErrClosed
	}
	var p *C.flx_ucx_ep
	rc, errno := C.flx_ucx_ep_open(n.p, unsafe.Pointer(&addr[0]), C.size_t(len(addr)), &p)
	if err := check("connect", rc, errno); err != nil {
		return nil, err
	}
	live.Add(1)
	return &Endpoint{n: n, p: p}, nil
}

// Close closes the endpoint once no Get runs on it.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.p == nil {
		return ErrClosed
	}
	C.flx_ucx_ep_close(e.p)
	e.p = nil
	live.Add(-1)
	return nil
}

// RKey is a peer's remote key, unpacked for one endpoint.
type RKey struct {
	mu sync.Mutex
	p  *C.flx_ucx_rkey
}

// Unpack turns a peer's packed rkey (Mapping.RKey on its side) into an RKey
// for Get on e.
func (e *Endpoint) Unpack(packed []byte) (*RKey, error) {
	if len(packed) == 0 {
		return nil, check("unpack rkey", C.FLX_EINVAL, nil)
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.p == nil {
		return nil, ErrClosed
	}
	var p *C.flx_ucx_rkey
	rc, errno := C.flx_ucx_rkey_unpack(e.p, unsafe.Pointer(&packed[0]), C.size_t(len(packed)), &p)
	if err := check("unpack rkey", rc, errno); err != nil {
		return nil, err
	}
	live.Add(1)
	return &RKey{p: p}, nil
}

// Close frees the rkey (before its endpoint).
func (r *RKey) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil {
		return ErrClosed
	}
	C.flx_ucx_rkey_destroy(r.p)
	r.p = nil
	live.Add(-1)
	return nil
}

// Get reads len(dst) bytes at the peer's address raddr, inside the mapping
// rk was packed from, straight into dst, and returns once they are there,
// the read failed or ctx is done. dst needs no mapping of its own: it is Go
// memory that C uses only during the call, and UCX registers it (or, over
// tcp, receives into it from the socket) as its transport needs. One call
// is one cgo crossing, whatever the length.
//
// UCX cannot cancel a get: one that gives up at ctx's deadline
// (core.ETIMEDOUT) or on its cancel (core.ECANCELED, noticed within about
// a millisecond) closes the endpoint, so that dst is never written after
// Get returns. The endpoint's other gets fail with it, and so do later
// ones: close it and connect again. Over shared memory alone such a get
// reads through a bounce buffer (see native/ucx/ucx.c).
func (e *Endpoint) Get(ctx context.Context, rk *RKey, raddr uint64, dst []byte) error {
	if len(dst) == 0 {
		return nil
	}
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return check("get", C.FLX_ETIMEDOUT, nil)
		}
	}
	if ctx.Err() != nil {
		return check("get", C.FLX_ECANCELED, nil)
	}
	var cancel *C.int
	if ctx.Done() != nil {
		// C polls the flag; it lives in C memory, which the callback may
		// still be writing when stop reports it already started.
		cancel = (*C.int)(C.calloc(1, C.sizeof_int))
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			atomic.StoreInt32((*int32)(unsafe.Pointer(cancel)), 1)
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired
			}
			C.free(unsafe.Pointer(cancel))
		}()
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.p == nil {
		return ErrClosed
	}
	rk.mu.Lock()
	defer rk.mu.Unlock()
	if rk.p == nil {
		return ErrClosed
	}
	rc, errno := C.flx_ucx_get(e.p, rk.p, C.uint64_t(raddr), unsafe.Pointer(&dst[0]), C.size_t(len(dst)),
		C.uint64_t(timeout), cancel)
	return check("get", rc, errno)
}

// Mapping is memory mapped for remote access.
type Mapping struct {
	n      *Node
	mu     sync.Mutex
	p      *C.flx_ucx_mem
	pin    runtime.Pinner
	addr   uint64
	packed []byte
}

// Map maps buf for remote reads and packs its rkey. buf may be Go memory:
// it is pinned (runtime.Pinner) until Close, since UCX reads it while no
// cgo call runs. Peers read it through Mapping.Addr and Mapping.RKey.
func (n *Node) Map(buf []byte) (*Mapping, error) {
	if len(buf) == 0 {
		return nil, check("map", C.FLX_EINVAL, nil)
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.p == nil {
		return nil, ErrClosed
	}
	m := &Mapping{n: n, addr: uint64(uintptr(unsafe.Pointer(&buf[0])))}
	m.pin.Pin(&buf[0])
	rc, errno := C.flx_ucx_mem_map(n.p, unsafe.Pointer(&buf[0]), C.size_t(len(buf)), &m.p)
	if err := check("map", rc, errno); err != nil {
		m.pin.Unpin()
		return nil, err
	}
	rkey := make([]byte, maxRKey)
	var l C.size_t
	rc, errno = C.flx_ucx_mem_rkey(m.p, unsafe.Pointer(&rkey[0]), C.size_t(len(rkey)), &l)
	if err := check("pack rkey", rc, errno); err != nil {
		C.flx_ucx_mem_unmap(m.p)
		m.pin.Unpin()
		return nil, err
	}
	m.packed = rkey[:l:l]
	live.Add(1)
	return m, nil
}

// Addr is the mapped buffer's address, as a peer's Get takes it.
func (m *Mapping) Addr() uint64 { return m.addr }

// RKey is the packed remote key a peer unpacks.
func (m *Mapping) RKey() []byte { return m.packed }

// Close unmaps and unpins the buffer. A peer's Get still reading it fails
// or reads what the buffer then holds.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p == nil {
		return ErrClosed
	}
	m.n.mu.RLock()
	C.flx_ucx_mem_unmap(m.p)
	m.n.mu.RUnlock()
	m.p = nil
	m.pin.Unpin()
	live.Add(-1)
	return nil
}
