package kvgrpc

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the service
// returns.
const ErrorDomain = "fluxon.dev"

// Errors of the gRPC layer itself (the store's own are kv's sentinels); each
// crosses the wire as its reason and compares with errors.Is on the client.
var (
	// ErrUsePutStream: a unary Put carried more than MaxUnaryValue bytes.
	ErrUsePutStream = errors.New("value too large for a unary Put")
	// ErrUseGet: a BatchGet item's value did not fit in the response.
	ErrUseGet = errors.New("value too large for this BatchGet response")
	// ErrBadRequest: a malformed request or stream (missing header, oversized
	// chunk, unknown kind, contradictory options).
	ErrBadRequest = errors.New("malformed request")
	// ErrSizeMismatch: a PutStream's chunks did not add up to its size.
	ErrSizeMismatch = errors.New("stream size mismatch")
	// ErrBatchTooLarge: a batch had more than MaxBatchItems items or more than
	// MaxBatchBytes of values.
	ErrBatchTooLarge = errors.New("batch too large")
)

// errorMap pairs each sentinel with its status code and stable reason. The
// server takes the first entry the error matches; the client maps a reason
// back to its sentinel.
var errorMap = []struct {
	err    error
	code   codes.Code
	reason fluxonv1.ErrorReason
}{
	{kv.ErrNotFound, codes.NotFound, fluxonv1.ErrorReason_KEY_NOT_FOUND},
	{kv.ErrExists, codes.AlreadyExists, fluxonv1.ErrorReason_KEY_EXISTS},
	{kv.ErrInflight, codes.Aborted, fluxonv1.ErrorReason_PUT_INFLIGHT},
	{kv.ErrEmptyKey, codes.InvalidArgument, fluxonv1.ErrorReason_EMPTY_KEY},
	{kv.ErrKeyTooLong, codes.InvalidArgument, fluxonv1.ErrorReason_KEY_TOO_LONG},
	{kv.ErrValueTooLarge, codes.InvalidArgument, fluxonv1.ErrorReason_VALUE_TOO_LARGE},
	{kv.ErrPoolFull, codes.ResourceExhausted, fluxonv1.ErrorReason_POOL_FULL},
	{kv.ErrLeaseNotFound, codes.NotFound, fluxonv1.ErrorReason_LEASE_NOT_FOUND},
	{kv.ErrLeaseTTL, codes.InvalidArgument, fluxonv1.ErrorReason_LEASE_TTL_OUT_OF_RANGE},
	{kv.ErrClosed, codes.Unavailable, fluxonv1.ErrorReason_STORE_CLOSED},
	{kv.ErrUnavailable, codes.Unavailable, fluxonv1.ErrorReason_KEY_UNAVAILABLE},
	{kv.ErrReplicas, codes.FailedPrecondition, fluxonv1.ErrorReason_REPLICAS},
	{kv.ErrBadValue, codes.InvalidArgument, fluxonv1.ErrorReason_BAD_VALUE},
	{ErrUsePutStream, codes.InvalidArgument, fluxonv1.ErrorReason_USE_PUT_STREAM},
	{ErrUseGet, codes.ResourceExhausted, fluxonv1.ErrorReason_USE_GET},
	{ErrBadRequest, codes.InvalidArgument, fluxonv1.ErrorReason_BAD_REQUEST},
	{ErrSizeMismatch, codes.InvalidArgument, fluxonv1.ErrorReason_SIZE_MISMATCH},
	{ErrBatchTooLarge, codes.InvalidArgument, fluxonv1.ErrorReason_BATCH_TOO_LARGE},
}

// classify returns the code and reason ("" for none) an error crosses the
// wire with. Errors that match nothing are codes.Internal: a bug or a pool
// fault, not something the caller did.
func classify(err error) (codes.Code, string) {
	for _, m := range errorMap {
		if errors.Is(err, m.err) {
			return m.code, m.reason.String()
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

// toStatus turns a store error into the status error a handler returns. The
// message is the kv error's, which says what to do.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (a broken stream, a canceled call)
	}
	code, reason := classify(err)
	st := status.New(code, err.Error())
	if reason != "" {
		if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// itemStatus is a batch item's outcome; nil error is OK.
func itemStatus(err error) *fluxonv1.ItemStatus {
	if err == nil {
		return &fluxonv1.ItemStatus{}
	}
	code, reason := classify(err)
	return &fluxonv1.ItemStatus{Code: int32(code), Reason: reason, Message: err.Error()}
}

// Error is a failed call as the client sees it. Unwrap yields the kv (or
// kvgrpc) sentinel named by the reason, so errors.Is(err, kv.ErrNotFound)
// holds across the wire; GRPCStatus yields the status, so status.Code works.
type Error struct {
	Code    codes.Code
	Reason  string // the ErrorInfo reason; "" when the server gave none
	Message string // the server's message, which says what to do
	st      *status.Status
	target  error
}

// Error is the server's message, as the store would have said it locally;
// errors that did not come from the store (no reason) also name the code.
func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("kvgrpc: %s: %s", e.Code, e.Message)
	}
	return e.Message
}

// Unwrap returns the sentinel the reason names, or nil.
func (e *Error) Unwrap() error { return e.target }

// GRPCStatus returns the status the server sent.
func (e *Error) GRPCStatus() *status.Status { return e.st }

func sentinelFor(reason string) error {
	if reason == "" {
		return nil
	}
	for _, m := range errorMap {
		if m.reason.String() == reason {
			return m.err
		}
	}
	return nil
}

func newError(st *status.Status, reason string) *Error {
	e := &Error{Code: st.Code(), Reason: reason, Message: st.Message(), st: st, target: sentinelFor(reason)}
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

// fromStatus maps an error a stub returned back to an *Error. Errors that
// are not statuses (io.EOF from a stream, a local bug) pass through.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			reason = info.GetReason()
			break
		}
	}
	return newError(st, reason)
}

// fromItem maps a batch item's status back; nil when the item succeeded.
func fromItem(s *fluxonv1.ItemStatus) error {
	if s == nil || codes.Code(s.GetCode()) == codes.OK {
		return nil
	}
	return newError(status.New(codes.Code(s.GetCode()), s.GetMessage()), s.GetReason())
}
