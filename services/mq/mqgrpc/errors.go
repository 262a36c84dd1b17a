package mqgrpc

import (
	"google.golang.org/grpc/codes"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/internal/grpcerr"
	"github.com/fluxon-dev/fluxon/services/mq"
)

// errBadRequest: a request field out of range.
var errBadRequest = mq.ErrBadConfig

// errorMap pairs each mq sentinel with its status code and stable reason.
var errorMap = grpcerr.Map{Service: "mqgrpc", Entries: []grpcerr.Entry{
	{Err: mq.ErrChannelFull, Code: codes.ResourceExhausted, Reason: fluxonv1.MQErrorReason_MQ_CHANNEL_FULL.String()},
	{Err: mq.ErrChannelClosed, Code: codes.Unavailable, Reason: fluxonv1.MQErrorReason_MQ_CHANNEL_CLOSED.String()},
	{Err: mq.ErrProducerClosed, Code: codes.Unavailable, Reason: fluxonv1.MQErrorReason_MQ_CHANNEL_CLOSED.String()},
	{Err: mq.ErrNoChannel, Code: codes.NotFound, Reason: fluxonv1.MQErrorReason_MQ_NO_CHANNEL.String()},
	{Err: mq.ErrTypeMismatch, Code: codes.FailedPrecondition, Reason: fluxonv1.MQErrorReason_MQ_TYPE_MISMATCH.String()},
	{Err: mq.ErrIDInUse, Code: codes.AlreadyExists, Reason: fluxonv1.MQErrorReason_MQ_ID_IN_USE.String()},
	{Err: mq.ErrBadConfig, Code: codes.InvalidArgument, Reason: fluxonv1.MQErrorReason_MQ_BAD_REQUEST.String()},
	{Err: mq.ErrMessageTooLarge, Code: codes.InvalidArgument, Reason: fluxonv1.MQErrorReason_MQ_MESSAGE_TOO_LARGE.String()},
	{Err: mq.ErrUnknownMessage, Code: codes.FailedPrecondition, Reason: fluxonv1.MQErrorReason_MQ_UNKNOWN_MESSAGE.String()},
	{Err: meta.ErrEtcdUnreachable, Code: codes.Unavailable, Reason: fluxonv1.MQErrorReason_MQ_UNAVAILABLE.String()},
}}

func toStatus(err error) error { return errorMap.ToStatus(err) }

// Error is a failed call as the client sees it: errors.Is matches the mq
// sentinel its reason names.
type Error = grpcerr.Error

func fromStatus(err error) error {
	e := errorMap.FromStatus(err)
	if ge, ok := e.(*Error); ok && ge.Code == codes.Unimplemented && ge.Reason == "" {
		ge.Message += "; this owner does not serve the fluxon.v1.MQ service (started without etcd, or an older fluxon)"
	}
	return e
}
