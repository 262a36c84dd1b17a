package kvgrpc

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/internal/grpcerr"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the service
// returns.
const ErrorDomain = grpcerr.Domain

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
var errorMap = grpcerr.Map{Service: "kvgrpc", Entries: []grpcerr.Entry{
	{Err: kv.ErrNotFound, Code: codes.NotFound, Reason: fluxonv1.ErrorReason_KEY_NOT_FOUND.String()},
	{Err: kv.ErrExists, Code: codes.AlreadyExists, Reason: fluxonv1.ErrorReason_KEY_EXISTS.String()},
	{Err: kv.ErrInflight, Code: codes.Aborted, Reason: fluxonv1.ErrorReason_PUT_INFLIGHT.String()},
	{Err: kv.ErrEmptyKey, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_EMPTY_KEY.String()},
	{Err: kv.ErrKeyTooLong, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_KEY_TOO_LONG.String()},
	{Err: kv.ErrValueTooLarge, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_VALUE_TOO_LARGE.String()},
	{Err: kv.ErrPoolFull, Code: codes.ResourceExhausted, Reason: fluxonv1.ErrorReason_POOL_FULL.String()},
	{Err: kv.ErrLeaseNotFound, Code: codes.NotFound, Reason: fluxonv1.ErrorReason_LEASE_NOT_FOUND.String()},
	{Err: kv.ErrLeaseTTL, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_LEASE_TTL_OUT_OF_RANGE.String()},
	{Err: kv.ErrClosed, Code: codes.Unavailable, Reason: fluxonv1.ErrorReason_STORE_CLOSED.String()},
	{Err: kv.ErrUnavailable, Code: codes.Unavailable, Reason: fluxonv1.ErrorReason_KEY_UNAVAILABLE.String()},
	{Err: kv.ErrReplicas, Code: codes.FailedPrecondition, Reason: fluxonv1.ErrorReason_REPLICAS.String()},
	{Err: kv.ErrBadValue, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_BAD_VALUE.String()},
	{Err: ErrUsePutStream, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_USE_PUT_STREAM.String()},
	{Err: ErrUseGet, Code: codes.ResourceExhausted, Reason: fluxonv1.ErrorReason_USE_GET.String()},
	{Err: ErrBadRequest, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_BAD_REQUEST.String()},
	{Err: ErrSizeMismatch, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_SIZE_MISMATCH.String()},
	{Err: ErrBatchTooLarge, Code: codes.InvalidArgument, Reason: fluxonv1.ErrorReason_BATCH_TOO_LARGE.String()},
}}

// classify returns the code and reason ("" for none) an error crosses the
// wire with. Errors that match nothing are codes.Internal: a bug or a pool
// fault, not something the caller did.
func classify(err error) (codes.Code, string) { return errorMap.Classify(err) }

// toStatus turns a store error into the status error a handler returns. The
// message is the kv error's, which says what to do.
func toStatus(err error) error { return errorMap.ToStatus(err) }

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
type Error = grpcerr.Error

// fromStatus maps an error a stub returned back to an *Error. Errors that
// are not statuses (io.EOF from a stream, a local bug) pass through.
func fromStatus(err error) error { return errorMap.FromStatus(err) }

// fromItem maps a batch item's status back; nil when the item succeeded.
func fromItem(s *fluxonv1.ItemStatus) error {
	if s == nil || codes.Code(s.GetCode()) == codes.OK {
		return nil
	}
	return errorMap.NewError(status.New(codes.Code(s.GetCode()), s.GetMessage()), s.GetReason())
}
