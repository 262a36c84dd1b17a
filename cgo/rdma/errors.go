package rdma

import (
	"errors"
	"fmt"
)

var (
	// ErrNoDevice: this host has no usable RDMA device (or none of the
	// configured network.rdma_device_names). Use another transport.
	ErrNoDevice = errors.New("no RDMA device")
	// ErrNotCompiled: this binary was built without RDMA support (build
	// with -tags rdma where libibverbs-dev is installed).
	ErrNotCompiled = errors.New("rdma: not compiled in; build with -tags rdma and libibverbs")
	// ErrClosed: use of a closed handle.
	ErrClosed = errors.New("rdma: use of a closed handle")
)

// WCStatus is an ibv_wc_status value from a failed completion. The values
// are the rdma-core ABI (infiniband/verbs.h), stable across versions.
type WCStatus uint32

// Completion statuses the transport tells apart.
const (
	WCSuccess         WCStatus = 0
	WCLocLenErr       WCStatus = 1
	WCLocQPOpErr      WCStatus = 2
	WCLocProtErr      WCStatus = 4
	WCWRFlushErr      WCStatus = 5
	WCMWBindErr       WCStatus = 6
	WCBadRespErr      WCStatus = 7
	WCLocAccessErr    WCStatus = 8
	WCRemInvReqErr    WCStatus = 9
	WCRemAccessErr    WCStatus = 10
	WCRemOpErr        WCStatus = 11
	WCRetryExcErr     WCStatus = 12
	WCRNRRetryExcErr  WCStatus = 13
	WCRemAbortErr     WCStatus = 16
	WCFatalErr        WCStatus = 19
	WCRespTimeoutErr  WCStatus = 20
	WCGeneralErr      WCStatus = 21
	wcStatusNameLimit          = 22
)

var wcNames = [wcStatusNameLimit]string{
	0: "success", 1: "local length error", 2: "local QP operation error", 3: "local EE context operation error",
	4: "local protection error", 5: "work request flushed", 6: "memory window bind error", 7: "bad response",
	8: "local access error", 9: "remote invalid request", 10: "remote access error", 11: "remote operation error",
	12: "transport retry counter exceeded", 13: "RNR retry counter exceeded", 14: "local RDD violation",
	15: "remote invalid RD request", 16: "remote aborted", 17: "invalid EE context number",
	18: "invalid EE context state", 19: "fatal error", 20: "response timeout", 21: "general error",
}

func (s WCStatus) String() string {
	if s < wcStatusNameLimit {
		return wcNames[s]
	}
	return fmt.Sprintf("status %d", uint32(s))
}

// WCError is a work request that completed with an error status.
type WCError struct {
	Op        string // "read", "write", "send", "recv"
	Status    WCStatus
	VendorErr uint32
}

func (e *WCError) Error() string {
	return fmt.Sprintf("rdma %s: completion failed: %s (vendor error 0x%x)", e.Op, e.Status, e.VendorErr)
}
