package rdma

import (
	"errors"
	"syscall"
	"testing"

	"github.com/fluxon-dev/fluxon/cgo/core"
	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	"github.com/fluxon-dev/fluxon/services/transport"
)

func TestMapError(t *testing.T) {
	sys := func(e syscall.Errno) error { return &core.Error{Op: "rdma post read", Code: core.ESYS, Errno: e} }
	wc := func(s cgordma.WCStatus) error { return &cgordma.WCError{Op: "read", Status: s} }
	cases := []struct {
		in   error
		want error
	}{
		{wc(cgordma.WCRetryExcErr), transport.ErrPeerGone},
		{wc(cgordma.WCRNRRetryExcErr), transport.ErrPeerGone},
		{wc(cgordma.WCWRFlushErr), transport.ErrPeerGone},
		{wc(cgordma.WCRespTimeoutErr), transport.ErrPeerGone},
		{wc(cgordma.WCRemAccessErr), transport.ErrInvalid},
		{wc(cgordma.WCLocLenErr), transport.ErrInvalid},
		{wc(cgordma.WCRemOpErr), transport.ErrProtocol},
		{wc(cgordma.WCBadRespErr), transport.ErrProtocol},
		{sys(syscall.ETIMEDOUT), transport.ErrTimeout},
		{sys(syscall.ECONNREFUSED), transport.ErrUnreachable},
		{sys(syscall.EHOSTUNREACH), transport.ErrUnreachable},
		{sys(syscall.ECONNRESET), transport.ErrPeerGone},
		{sys(syscall.EINVAL), transport.ErrInvalid},
		{cgordma.ErrNoDevice, cgordma.ErrNoDevice},
	}
	for _, c := range cases {
		got := mapError("op", c.in)
		if !errors.Is(got, c.want) || !errors.Is(got, c.in) {
			t.Errorf("mapError(%v) = %v; want it to match %v and keep the original", c.in, got, c.want)
		}
	}
	if mapError("op", nil) != nil {
		t.Error("mapError(nil) != nil")
	}
	// An errno with no transport meaning (ENOMEM: locked-memory limit) stays itself only.
	got := mapError("register", sys(syscall.ENOMEM))
	for _, e := range []error{transport.ErrPeerGone, transport.ErrTimeout, transport.ErrUnreachable, transport.ErrInvalid} {
		if errors.Is(got, e) {
			t.Errorf("ENOMEM mapped to %v", e)
		}
	}
	if s := cgordma.WCRemAccessErr.String(); s != "remote access error" {
		t.Errorf("status name %q", s)
	}
}
