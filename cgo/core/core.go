// Package core wraps the C core's version and error codes. It is the only place
// where native error codes become Go errors, so every cgo package reports
// failures the same way: code + errno + message.
package core

/*
#cgo CFLAGS: -I${SRCDIR}/../../native/include -D_GNU_SOURCE -Wall -Wextra -Werror
#include "fluxon/core.h"
*/
import "C"

import (
	"fmt"
	"syscall"
)

// Version returns the C core's version string.
func Version() string { return C.GoString(C.flx_version()) }

// Code is a native flx_err code.
type Code int

// Native error codes, mirrored from native/include/fluxon/core.h.
const (
	OK        Code = C.FLX_OK
	EINVAL    Code = C.FLX_EINVAL
	ENOMEM    Code = C.FLX_ENOMEM
	ESYS      Code = C.FLX_ESYS
	ENOTFOUND Code = C.FLX_ENOTFOUND
	EBUSY     Code = C.FLX_EBUSY
	EEXIST    Code = C.FLX_EEXIST
	ECORRUPT  Code = C.FLX_ECORRUPT
	EVERSION  Code = C.FLX_EVERSION
	EAGAIN    Code = C.FLX_EAGAIN
	ETOOBIG   Code = C.FLX_ETOOBIG
	ENOTSUP   Code = C.FLX_ENOTSUP
	ENODEV    Code = C.FLX_ENODEV
	ETIMEDOUT Code = C.FLX_ETIMEDOUT
	ECANCELED Code = C.FLX_ECANCELED
)

func (c Code) String() string { return C.GoString(C.flx_strerror(C.int(c))) }

// Error is a failed native call: which operation, the flx_err code and, for
// FLX_ESYS, the errno the system call left.
type Error struct {
	Op    string
	Code  Code
	Errno syscall.Errno
}

func (e *Error) Error() string {
	if e.Errno != 0 {
		return fmt.Sprintf("%s: %s (errno %d: %s)", e.Op, e.Code, int(e.Errno), e.Errno.Error())
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Code)
}

// Is lets errors.Is match an *Error against another *Error with the same code,
// so callers can write errors.Is(err, &core.Error{Code: core.ENOMEM}).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Op == "" || t.Op == e.Op)
}

// Check converts a native return value into an error (nil for >= 0).
func Check(op string, rc int, errno syscall.Errno) error {
	if rc >= 0 {
		return nil
	}
	e := &Error{Op: op, Code: Code(rc)}
	if e.Code == ESYS {
		e.Errno = errno
	}
	return e
}
