// Package grpcerr carries a service's sentinel errors across gRPC: the
// server turns an error into a status with a google.rpc.ErrorInfo whose
// reason names the sentinel; the client turns the status back into an
// *Error that errors.Is matches against the same sentinel. kvgrpc and
// mqgrpc share it (rpcgrpc adds handler metadata of its own).
package grpcerr

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every fluxon service's errors.
const Domain = "fluxon.dev"

// Entry pairs a sentinel with its status code and stable reason.
type Entry struct {
	Err    error
	Code   codes.Code
	Reason string
}

// Map is a service's sentinels; the first entry an error matches wins.
// Service names the service in messages of errors without a reason.
type Map struct {
	Service string
	Entries []Entry
}

// Classify returns the code and reason ("" for none) err crosses the wire
// with. Errors that match nothing are codes.Internal: a bug, not something
// the caller did.
func (m Map) Classify(err error) (codes.Code, string) {
	for _, e := range m.Entries {
		if errors.Is(err, e.Err) {
			return e.Code, e.Reason
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled, ""
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, ""
	}
	return codes.Internal, ""
}

// ToStatus turns err into the status error a handler returns; its message
// is err's, which says what to do. Statuses pass through.
func (m Map) ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, reason := m.Classify(err)
	st := status.New(code, err.Error())
	if reason != "" {
		if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// Sentinel returns the error reason names, or nil.
func (m Map) Sentinel(reason string) error {
	if reason == "" {
		return nil
	}
	for _, e := range m.Entries {
		if e.Reason == reason {
			return e.Err
		}
	}
	return nil
}

// FromStatus maps an error a stub returned back to an *Error. Errors that
// are not statuses (io.EOF from a stream, a local bug) pass through.
func (m Map) FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return m.NewError(st, ReasonOf(st))
}

// ReasonOf is the reason of st's ErrorInfo in Domain ("" when none).
func ReasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}

// NewError builds the client's error for st with reason.
func (m Map) NewError(st *status.Status, reason string) *Error {
	e := &Error{Code: st.Code(), Reason: reason, Message: st.Message(), service: m.Service, st: st, target: m.Sentinel(reason)}
	if e.target == nil {
		switch e.Code {
		case codes.Canceled:
			e.target = context.Canceled
		case codes.DeadlineExceeded:
			e.target = context.DeadlineExceeded
		}
	}
	return e
}

// Error is a failed call as the client sees it. Unwrap yields the sentinel
// the reason names, so errors.Is holds across the wire; GRPCStatus yields
// the status, so status.Code works.
type Error struct {
	Code    codes.Code
	Reason  string // the ErrorInfo reason; "" when the server gave none
	Message string // the server's message, which says what to do
	service string
	st      *status.Status
	target  error
}

// Error is the server's message, as the service would have said it
// locally; errors that did not come from it (no reason) also name the code.
func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("%s: %s: %s", e.service, e.Code, e.Message)
	}
	return e.Message
}

// Unwrap returns the sentinel the reason names, or nil.
func (e *Error) Unwrap() error { return e.target }

// GRPCStatus returns the status the server sent.
func (e *Error) GRPCStatus() *status.Status { return e.st }
