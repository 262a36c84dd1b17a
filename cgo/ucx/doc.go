// Package ucx wraps native/ucx: a UCX (UCP) node (context, worker and its
// progress thread), endpoints to other nodes' workers, memory mapped for
// remote access with its packed rkey, and one-sided gets.
//
// It is built with the "ucx" build tag on Linux with cgo and Debian's
// libucx-dev (or any UCX >= 1.13 that pkg-config finds); every other build
// gets a stub whose Open returns ErrNotSupported. Which UCX transports run
// is UCX's own configuration, from the environment: UCX_TLS=tcp (loopback
// or any IP network), UCX_TLS=sm,self (one host), or UCX's default (all it
// finds: rc/ud/dc on RDMA NICs, sm, tcp).
package ucx

import (
	"errors"
	"fmt"
)

// ErrNotSupported: this build has no UCX (no "ucx" build tag, no cgo, or
// not Linux).
var ErrNotSupported = errors.New("ucx: not in this build; build with -tags ucx on Linux with cgo and libucx-dev installed")

// ErrClosed: use of a closed handle.
var ErrClosed = errors.New("ucx: use of a closed handle")

// Error is a UCX call that failed with a UCX status (ucs_status_t).
type Error struct {
	Op     string
	Status int
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("ucx: %s: %s (ucs_status %d)", e.Op, e.Msg, e.Status)
}

// Is matches another *Error with the same Status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}
