package mqgrpc

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/mq"
)

// ErrorDomain is the ErrorInfo domain of every fluxon service's errors.
const ErrorDomain = "fluxon.dev"

// errBadRequest: a request field out of range.
var errBadRequest = mq.ErrBadConfig

// errorMap pairs each mq sentinel with its status code and stable reason.
var errorMap = []struct {
	err    error
	code   codes.Code
	reason fluxonv1.MQErrorReason
}{
	{mq.ErrChannelFull, codes.ResourceExhausted, fluxonv1.MQErrorReason_MQ_CHANNEL_FULL},
	{mq.ErrChannelClosed, codes.Unavailable, fluxonv1.MQErrorReason_MQ_CHANNEL_CLOSED},
	{mq.ErrProducerClosed, codes.Unavailable, fluxonv1.MQErrorReason_MQ_CHANNEL_CLOSED},
	{mq.ErrNoChannel, codes.NotFound, fluxonv1.MQErrorReason_MQ_NO_CHANNEL},
	{mq.ErrTypeMismatch, codes.FailedPrecondition, fluxonv1.MQErrorReason_MQ_TYPE_MISMATCH},
	{mq.ErrIDInUse, codes.AlreadyExists, fluxonv1.MQErrorReason_MQ_ID_IN_USE},
	{mq.ErrBadConfig, codes.InvalidArgument, fluxonv1.MQErrorReason_MQ_BAD_REQUEST},
	{mq.ErrMessageTooLarge, codes.InvalidArgument, fluxonv1.MQErrorReason_MQ_MESSAGE_TOO_LARGE},
	{mq.ErrUnknownMessage, codes.FailedPrecondition, fluxonv1.MQErrorReason_MQ_UNKNOWN_MESSAGE},
	{meta.ErrEtcdUnreachable, codes.Unavailable, fluxonv1.MQErrorReason_MQ_UNAVAILABLE},
}

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
	switch {
	case reason != "":
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	st := status.New(code, err.Error())
	if reason != "" {
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// Error is a failed call as the client sees it: errors.Is matches the mq
// sentinel its reason names.
type Error struct {
	Code    codes.Code
	Reason  string
	Message string
	target  error
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("mq over gRPC: %s: %s", e.Code, e.Message)
	}
	return e.Message
}

// Unwrap returns the mq sentinel the error matches.
func (e *Error) Unwrap() error { return e.target }

func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message()}
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok && i.GetDomain() == ErrorDomain {
			e.Reason = i.GetReason()
		}
	}
	for _, m := range errorMap {
		if m.reason.String() == e.Reason {
			e.target = m.err
			break
		}
	}
	switch {
	case e.target != nil:
	case e.Code == codes.DeadlineExceeded:
		e.target = context.DeadlineExceeded
	case e.Code == codes.Unimplemented:
		e.Message += "; this owner does not serve the fluxon.v1.MQ service (started without etcd, or an older fluxon)"
	}
	return e
}
