package rpcgrpc

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/services/rpc"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the service
// returns (the KV service's too).
const ErrorDomain = "fluxon.dev"

// ErrorInfo metadata keys of a handler error.
const (
	// MetaCode is the handler's application code (decimal), when not 0.
	MetaCode = "code"
	// MetaMessage is the handler's own message, without the call's context.
	MetaMessage = "message"
)

// ErrBadRequest: a malformed CallRequest (no node_id, negative timeout_ms).
var ErrBadRequest = errors.New("rpcgrpc: malformed request")

// errorMap pairs each sentinel with its status code and stable reason. The
// server takes the first entry the error matches; the client maps a reason
// back to its sentinel.
var errorMap = []struct {
	err    error
	code   codes.Code
	reason fluxonv1.RPCErrorReason
}{
	{rpc.ErrUnknownNode, codes.NotFound, fluxonv1.RPCErrorReason_RPC_UNKNOWN_NODE},
	{rpc.ErrUnknownPath, codes.Unimplemented, fluxonv1.RPCErrorReason_RPC_UNKNOWN_PATH},
	{rpc.ErrHandler, codes.Unknown, fluxonv1.RPCErrorReason_RPC_HANDLER_ERROR},
	{rpc.ErrHandlerPanic, codes.Internal, fluxonv1.RPCErrorReason_RPC_HANDLER_PANIC},
	{rpc.ErrTimeout, codes.DeadlineExceeded, fluxonv1.RPCErrorReason_RPC_TIMEOUT},
	{rpc.ErrPeerGone, codes.Unavailable, fluxonv1.RPCErrorReason_RPC_PEER_GONE},
	{rpc.ErrStaleNode, codes.Unavailable, fluxonv1.RPCErrorReason_RPC_STALE_NODE},
	{rpc.ErrUnreachable, codes.Unavailable, fluxonv1.RPCErrorReason_RPC_UNREACHABLE},
	{rpc.ErrRefused, codes.FailedPrecondition, fluxonv1.RPCErrorReason_RPC_REFUSED},
	{rpc.ErrTooLarge, codes.ResourceExhausted, fluxonv1.RPCErrorReason_RPC_TOO_LARGE},
	{rpc.ErrInvalidPath, codes.InvalidArgument, fluxonv1.RPCErrorReason_RPC_INVALID_PATH},
	{ErrBadRequest, codes.InvalidArgument, fluxonv1.RPCErrorReason_RPC_BAD_REQUEST},
	{rpc.ErrClosed, codes.Unavailable, fluxonv1.RPCErrorReason_RPC_NODE_CLOSED},
}

// toStatus turns a Call error into the status error the handler returns;
// its message is the rpc error's, which says what happened.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, reason := codes.Internal, ""
	for _, m := range errorMap {
		if errors.Is(err, m.err) {
			code, reason = m.code, m.reason.String()
			break
		}
	}
	if reason == "" && errors.Is(err, context.Canceled) {
		code = codes.Canceled
	}
	st := status.New(code, err.Error())
	if reason != "" {
		info := &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}
		var he *rpc.Error
		if errors.As(err, &he) {
			info.Metadata = map[string]string{MetaMessage: he.Message}
			if he.Code != 0 {
				info.Metadata[MetaCode] = strconv.FormatInt(he.Code, 10)
			}
		}
		if withInfo, derr := st.WithDetails(info); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// Error is a failed call as the client sees it. errors.Is matches the rpc
// sentinel its reason names (rpc.ErrHandler, rpc.ErrTimeout, ...; a
// timeout also matches context.DeadlineExceeded), errors.As finds the
// handler's *rpc.Error (so rpc.Code works across the wire), and
// GRPCStatus yields the status.
type Error struct {
	Code    codes.Code
	Reason  string // the ErrorInfo reason; "" when the server gave none
	Message string // the server's message
	st      *status.Status
	targets []error
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("rpcgrpc: %s: %s", e.Code, e.Message)
	}
	return e.Message
}

// Unwrap returns the sentinels (and the handler's *rpc.Error) the error
// matches.
func (e *Error) Unwrap() []error { return e.targets }

// GRPCStatus returns the status the server sent.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// fromStatus maps an error a stub returned back to an *Error; errors that
// are not statuses pass through.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), st: st}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok && i.GetDomain() == ErrorDomain {
			info = i
			break
		}
	}
	if info != nil {
		e.Reason = info.GetReason()
		for _, m := range errorMap {
			if m.reason.String() == e.Reason {
				e.targets = append(e.targets, m.err)
				break
			}
		}
		if e.Reason == fluxonv1.RPCErrorReason_RPC_HANDLER_ERROR.String() {
			he := &rpc.Error{Message: info.GetMetadata()[MetaMessage]}
			he.Code, _ = strconv.ParseInt(info.GetMetadata()[MetaCode], 10, 64)
			e.targets = append(e.targets, he)
		}
	}
	switch e.Code {
	case codes.DeadlineExceeded:
		e.targets = append(e.targets, context.DeadlineExceeded)
	case codes.Canceled:
		e.targets = append(e.targets, context.Canceled)
	case codes.Unimplemented:
		if e.Reason == "" {
			e.Message += "; this member does not serve the fluxon.v1.RPC service (an older fluxon?)"
		}
	}
	return e
}
