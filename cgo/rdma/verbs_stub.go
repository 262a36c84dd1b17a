//go:build !linux || !cgo || !rdma

package rdma

import (
	"fmt"
	"unsafe"
)

// Compiled reports whether this build has the verbs wrappers.
const Compiled = false

var errStub = fmt.Errorf("%w: %w", ErrNoDevice, ErrNotCompiled)

// Devices fails: this build has no RDMA support (errors.Is ErrNoDevice and ErrNotCompiled).
func Devices() ([]DeviceInfo, error) { return nil, errStub }

// Context is unavailable in this build.
type Context struct{}

// Open fails like Devices.
func Open(name string, port uint8, cqDepth int) (*Context, error) { return nil, errStub }

// Close is a no-op.
func (x *Context) Close() error { return ErrClosed }

// MR is unavailable in this build.
type MR struct{}

// Register fails like Devices.
func (x *Context) Register(addr unsafe.Pointer, length uint64, remote bool) (*MR, error) {
	return nil, errStub
}

// LKey is 0.
func (m *MR) LKey() uint32 { return 0 }

// RKey is 0.
func (m *MR) RKey() uint32 { return 0 }

// Deregister fails like Devices.
func (m *MR) Deregister() error { return errStub }

// QP is unavailable in this build.
type QP struct{}

// CreateQP fails like Devices.
func (x *Context) CreateQP(sendDepth, recvDepth uint32) (*QP, error) { return nil, errStub }

// Close is a no-op.
func (q *QP) Close() error { return ErrClosed }

// Local fails like Devices.
func (q *QP) Local(gidIndex, psn uint32) (Addr, error) { return Addr{}, errStub }

// Connect fails like Devices.
func (q *QP) Connect(local, peer *Addr) error { return errStub }

// PostRead fails like Devices.
func (q *QP) PostRead(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32, raddr uint64, rkey uint32) error {
	return errStub
}

// PostWrite fails like Devices.
func (q *QP) PostWrite(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32, raddr uint64, rkey uint32) error {
	return errStub
}

// PostSend fails like Devices.
func (q *QP) PostSend(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32) error { return errStub }

// PostRecv fails like Devices.
func (q *QP) PostRecv(wrID uint64, mr *MR, addr unsafe.Pointer, length uint32) error { return errStub }

// Completion is one polled work completion.
type Completion struct {
	WRID      uint64
	Status    WCStatus
	VendorErr uint32
	ByteLen   uint32
	QPNum     uint32
}

// Poll fails like Devices.
func (x *Context) Poll(out []Completion, spin uint32, timeoutMS int) (int, error) { return 0, errStub }
