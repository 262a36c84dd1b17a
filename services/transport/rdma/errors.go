package rdma

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/fluxon-dev/fluxon/cgo/core"
	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// mapError turns a verbs failure into the transport error a caller tells
// apart with errors.Is, keeping the original (code, errno, completion
// status) in the chain. It lives here rather than in cgo/rdma so the cgo
// layer does not depend on the transport package.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	var wc *cgordma.WCError
	if errors.As(err, &wc) {
		return fmt.Errorf("%w: %s: %w", wcClass(wc.Status), op, err)
	}
	var ce *core.Error
	if errors.As(err, &ce) && ce.Errno != 0 {
		if class := errnoClass(ce.Errno); class != nil {
			return fmt.Errorf("%w: %s: %w", class, op, err)
		}
	}
	return fmt.Errorf("rdma %s: %w", op, err)
}

// wcClass classifies a failed completion. A QP that hit any error moves to
// the error state and flushes everything behind it, so every class but
// ErrInvalid ends the connection.
func wcClass(s cgordma.WCStatus) error {
	switch s {
	case cgordma.WCRetryExcErr, cgordma.WCRNRRetryExcErr, cgordma.WCRespTimeoutErr,
		cgordma.WCWRFlushErr, cgordma.WCRemAbortErr, cgordma.WCFatalErr:
		// The peer stopped acknowledging (gone, rebooted, link down) or the
		// QP was torn down under the request.
		return transport.ErrPeerGone
	case cgordma.WCRemAccessErr, cgordma.WCRemInvReqErr, cgordma.WCLocProtErr,
		cgordma.WCLocLenErr, cgordma.WCLocAccessErr:
		// A stale rkey, a range outside the region, a wrong length: the
		// caller's reference no longer matches the owner's registration.
		return transport.ErrInvalid
	default:
		return transport.ErrProtocol
	}
}

func errnoClass(e syscall.Errno) error {
	switch e {
	case syscall.ETIMEDOUT:
		return transport.ErrTimeout
	case syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EADDRNOTAVAIL:
		return transport.ErrUnreachable
	case syscall.ECONNRESET, syscall.EPIPE, syscall.ENOTCONN:
		return transport.ErrPeerGone
	case syscall.EINVAL:
		return transport.ErrInvalid
	}
	return nil
}
