//go:build linux && cgo && rdma

package rdma

/*
#cgo CFLAGS: -I${SRCDIR}/../../native/include -D_GNU_SOURCE -std=gnu11 -Wall -Wextra -Werror
#cgo LDFLAGS: -libverbs
#include <stdlib.h>
#include "fluxon/rdma.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"github.com/fluxon-dev/fluxon/cgo/core"
)

// Compiled reports whether this build has the verbs wrappers.
const Compiled = true

const maxDevices = 64

func check(op string, rc C.int, err error) error {
	if rc == C.FLX_ENODEV {
		return fmt.Errorf("%w: %s: ibv_get_device_list found none (no RDMA NIC, or no RDMA subsystem in this kernel/container)", ErrNoDevice, op)
	}
	var errno syscall.Errno
	errors.As(err, &errno)
	return core.Check("rdma "+op, int(rc), errno)
}

// Devices lists the host's RDMA devices; ErrNoDevice when there are none.
func Devices() ([]DeviceInfo, error) {
	var info [maxDevices]C.flx_rdma_dev_info
	var n C.int
	rc, err := C.flx_rdma_devices(&info[0], maxDevices, &n)
	if rc != 0 {
		return nil, check("devices", rc, err)
	}
	out := make([]DeviceInfo, 0, min(int(n), maxDevices))
	for i := 0; i < int(n) && i < maxDevices; i++ {
		d := &info[i]
		out = append(out, DeviceInfo{Name: C.GoString(&d.name[0]), NodeGUID: uint64(d.node_guid),
			MaxQPWR: uint32(d.max_qp_wr), MaxCQE: uint32(d.max_cqe), Ports: uint32(d.phys_port_cnt),
			PortState: uint32(d.port_state), LinkLayer: uint32(d.link_layer)})
	}
	return out, nil
}

// Context is an opened device with its protection domain and completion
// queue. Close it after every QP and MR made from it.
type Context struct{ c *C.flx_rdma_ctx }

// Open opens device name (empty: the first) on port with a CQ of cqDepth.
func Open(name string, port uint8, cqDepth int) (*Context, error) {
	var cname *C.char
	if name != "" {
		cname = C.CString(name)
		defer C.free(unsafe.Pointer(cname))
	}
	var c *C.flx_rdma_ctx
	rc, err := C.flx_rdma_open(cname, C.uint8_t(port), C.int(cqDepth), &c)
	if rc != 0 {
		return nil, check("open "+name, rc, err)
	}
	return &Context{c: c}, nil
}

// Close frees the context.
func (x *Context) Close() error {
	if x.c == nil {
		return ErrClosed
	}
	C.flx_rdma_close(x.c)
	x.c = nil
	return nil
}

// MR is a registered memory region.
type MR struct{ m *C.flx_rdma_mr }

// Register registers [addr, addr+length), which must be memory Go's GC
// does not own (a pool segment mapping, C memory) and stays mapped until
// Deregister. remote allows the peer's READ/WRITE.
func (x *Context) Register(addr unsafe.Pointer, length uint64, remote bool) (*MR, error) {
	var m *C.flx_rdma_mr
	r := C.int(0)
	if remote {
		r = 1
	}
	rc, err := C.flx_rdma_reg(x.c, addr, C.size_t(length), r, &m)
	if rc != 0 {
		return nil, check("register", rc, err)
	}
	return &MR{m: m}, nil
}

// LKey and RKey are the region's keys.
func (m *MR) LKey() uint32 { return uint32(C.flx_rdma_mr_lkey(m.m)) }

// RKey is the key a peer names in READ/WRITE.
func (m *MR) RKey() uint32 { return uint32(C.flx_rdma_mr_rkey(m.m)) }

// Deregister releases the registration.
func (m *MR) Deregister() error {
	if m.m == nil {
		return ErrClosed
	}
	rc, err := C.flx_rdma_dereg(m.m)
	if rc != 0 {
		return check("deregister", rc, err)
	}
	m.m = nil
	return nil
}

// QP is an RC queue pair on a Context's CQ.
type QP struct {
	q   *C.flx_rdma_qp
	ctx *Context
}

// CreateQP creates an RC QP with the given queue depths.
func (x *Context) CreateQP(sendDepth, recvDepth uint32) (*QP, error) {
	var q *C.flx_rdma_qp
	rc, err := C.flx_rdma_qp_create(x.c, C.uint32_t(sendDepth), C.uint32_t(recvDepth), &q)
	if rc != 0 {
		return nil, check("create qp", rc, err)
	}
	return &QP{q: q, ctx: x}, nil
}

// Close destroys the QP.
func (q *QP) Close() error {
	if q.q == nil {
		return ErrClosed
	}
	rc, err := C.flx_rdma_qp_destroy(q.q)
	if rc != 0 {
		return check("destroy qp", rc, err)
	}
	q.q = nil
	return nil
}

// MaxRdAtomic is FLX_RDMA_MAX_RD_ATOMIC: both differences must be
// non-negative constants.
const (
	_ = uint(C.FLX_RDMA_MAX_RD_ATOMIC - MaxRdAtomic)
	_ = uint(MaxRdAtomic - C.FLX_RDMA_MAX_RD_ATOMIC)
)

func toC(a *Addr) C.flx_rdma_addr {
	var c C.flx_rdma_addr
	c.lid, c.port, c.mtu = C.uint16_t(a.LID), C.uint8_t(a.Port), C.uint8_t(a.MTU)
	for i, b := range a.GID {
		c.gid[i] = C.uint8_t(b)
	}
	c.gid_index, c.qpn, c.psn = C.uint32_t(a.GIDIndex), C.uint32_t(a.QPN), C.uint32_t(a.PSN)
	c.rd_atomic = C.uint8_t(a.RdAtomic)
	return c
}

// Local returns this QP's address record (without regions).
func (q *QP) Local(gidIndex, psn uint32) (Addr, error) {
	var c C.flx_rdma_addr
	rc, err := C.flx_rdma_qp_local(q.q, C.uint32_t(gidIndex), C.uint32_t(psn), &c)
	if rc != 0 {
		return Addr{}, check("query port", rc, err)
	}
	a := Addr{LID: uint16(c.lid), Port: uint8(c.port), MTU: uint8(c.mtu), GIDIndex: uint32(c.gid_index),
		QPN: uint32(c.qpn), PSN: uint32(c.psn), RdAtomic: uint8(c.rd_atomic)}
	for i := range a.GID {
		a.GID[i] = byte(c.gid[i])
	}
	return a, nil
}

// Connect moves the QP through INIT, RTR (towards peer) and RTS.
func (q *QP) Connect(local, peer *Addr) error {
	l, p := toC(local), toC(peer)
	rc, err := C.flx_rdma_qp_connect(q.q, &l, &p)
	if rc != 0 {
		return check("connect qp", rc, err)
	}
	return nil
}

// PostRead posts an RDMA READ of the peer's [raddr, +length) (rkey) into
// local memory at addr inside mr, signaled.
func (q *QP) PostRead(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32, raddr uint64, rkey uint32) error {
	rc, err := C.flx_rdma_post_rw(q.q, 0, C.uint64_t(wrID), mr.m, addr, C.uint32_t(length), C.uint64_t(raddr), C.uint32_t(rkey), 1)
	if rc != 0 {
		return check("post read", rc, err)
	}
	return nil
}

// PostWrite posts an RDMA WRITE of local [addr, +length) to the peer's raddr.
func (q *QP) PostWrite(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32, raddr uint64, rkey uint32) error {
	rc, err := C.flx_rdma_post_rw(q.q, 1, C.uint64_t(wrID), mr.m, addr, C.uint32_t(length), C.uint64_t(raddr), C.uint32_t(rkey), 1)
	if rc != 0 {
		return check("post write", rc, err)
	}
	return nil
}

// PostSend posts a signaled SEND of [addr, +length).
func (q *QP) PostSend(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32) error {
	rc, err := C.flx_rdma_post_send(q.q, C.uint64_t(wrID), mr.m, addr, C.uint32_t(length), 1)
	if rc != 0 {
		return check("post send", rc, err)
	}
	return nil
}

// PostRecv posts a receive buffer.
func (q *QP) PostRecv(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32) error {
	rc, err := C.flx_rdma_post_recv(q.q, C.uint64_t(wrID), mr.m, addr, C.uint32_t(length))
	if rc != 0 {
		return check("post recv", rc, err)
	}
	return nil
}

// Completion is one polled work completion.
type Completion struct {
	WRID      uint64
	Status    WCStatus
	VendorErr uint32
	ByteLen   uint32
	QPNum     uint32
}

// Poll collects up to len(out) completions: spin empty polls first, then
// a wait of at most timeoutMS on the completion channel. It returns 0, nil
// on timeout. One goroutine polls a Context at a time, on a locked OS
// thread while it may sleep in the kernel.
func (x *Context) Poll(out []Completion, spin uint32, timeoutMS int) (int, error) {
	if len(out) == 0 {
		return 0, nil
	}
	wcs := (*C.flx_rdma_wc)(C.malloc(C.size_t(len(out)) * C.sizeof_flx_rdma_wc))
	defer C.free(unsafe.Pointer(wcs))
	var n C.int
	rc, err := C.flx_rdma_poll(x.c, wcs, C.int(len(out)), C.uint32_t(spin), C.int(timeoutMS), &n)
	if rc == C.FLX_EAGAIN {
		return 0, nil
	}
	if rc != 0 {
		return 0, check("poll cq", rc, err)
	}
	ws := unsafe.Slice(wcs, int(n))
	for i, w := range ws {
		out[i] = Completion{WRID: uint64(w.wr_id), Status: WCStatus(w.status), VendorErr: uint32(w.vendor_err),
			ByteLen: uint32(w.byte_len), QPNum: uint32(w.qp_num)}
	}
	return int(n), nil
}
