package transport

import (
	"errors"
	"fmt"
	"strings"
)

// Errors a caller tells apart with errors.Is. Returned errors wrap one (or
// more) of these with what happened and what to do.
var (
	// ErrPeerGone: the connection was lost (closed by the peer, reset, a
	// keepalive timeout, a protocol error) before the call completed.
	// Retrying on a new connection may succeed.
	ErrPeerGone = errors.New("transport: peer gone")
	// ErrClosed: this side closed the connection or listener.
	ErrClosed = errors.New("transport: connection closed")
	// ErrTimeout: the call's context deadline passed (the error also
	// matches context.DeadlineExceeded), or a handshake took too long.
	ErrTimeout = errors.New("transport: timed out")
	// ErrRemote: the peer's handler returned an error or panicked; see
	// RemoteError for its code and message.
	ErrRemote = errors.New("transport: remote error")
	// ErrFrameTooLarge: a message or frame is above the receiver's limit.
	ErrFrameTooLarge = errors.New("transport: too large")
	// ErrProtocol: a malformed or unexpected frame; the connection that
	// carried it is closed.
	ErrProtocol = errors.New("transport: protocol error")
	// ErrTruncated: a frame ended before its declared length. A frame
	// decoder returns it when it needs more bytes; a connection that ends
	// inside a frame fails with it (and ErrPeerGone).
	ErrTruncated = fmt.Errorf("%w: truncated frame", ErrProtocol)
	// ErrInvalid: a call's arguments are wrong (path too long, dst of the
	// wrong length); nothing was sent.
	ErrInvalid = errors.New("transport: invalid argument")
	// ErrUnreachable: nothing accepted a connection at the address.
	ErrUnreachable = errors.New("transport: unreachable")

	// Handshake refusals, returned by Dial (and by a Verify to choose the
	// code the other side receives).
	ErrWrongCluster    = errors.New("transport: peer is in another cluster")
	ErrStaleMember     = errors.New("transport: stale member incarnation")
	ErrVersionMismatch = errors.New("transport: protocol version not supported")
	ErrRefused         = errors.New("transport: connection refused by peer")
)

// Code is a stable error code carried in error frames. Codes below 100 are
// for handler errors (RemoteError), codes from 100 up for connection-level
// errors (handshake refusals, goodbyes, protocol errors).
type Code uint16

// Error codes. Never renumber one: peers of other versions read them.
const (
	// CodeHandler: the handler returned an error without a code of its own.
	CodeHandler Code = 1
	// CodePanic: the handler panicked.
	CodePanic Code = 2
	// CodeUnsupported: the handler serves no such operation.
	CodeUnsupported Code = 3
	// CodeNotFound: the handler has no such path, key or range.
	CodeNotFound Code = 4
	// CodeInvalid: the handler rejected the request's arguments.
	CodeInvalid Code = 5
	// CodeUnavailable: the handler cannot serve now (shutting down, full).
	CodeUnavailable Code = 6
	// CodeTooLarge: the reply was above the caller's MaxMessageSize.
	CodeTooLarge Code = 7
	// CodeInternal: the serving side broke its own contract (ServeRead
	// returned a wrong length).
	CodeInternal Code = 8

	CodeWrongCluster    Code = 100
	CodeStaleMember     Code = 101
	CodeVersionMismatch Code = 102
	CodeRefused         Code = 103
	CodeProtocol        Code = 104
	CodeGoingAway       Code = 105
	CodeKeepalive       Code = 106
)

var codeNames = map[Code]string{
	CodeHandler:         "handler",
	CodePanic:           "panic",
	CodeUnsupported:     "unsupported",
	CodeNotFound:        "not_found",
	CodeInvalid:         "invalid",
	CodeUnavailable:     "unavailable",
	CodeTooLarge:        "too_large",
	CodeInternal:        "internal",
	CodeWrongCluster:    "wrong_cluster",
	CodeStaleMember:     "stale_member",
	CodeVersionMismatch: "version_mismatch",
	CodeRefused:         "refused",
	CodeProtocol:        "protocol",
	CodeGoingAway:       "going_away",
	CodeKeepalive:       "keepalive",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// RemoteError is an error that crossed the connection: a handler's error
// (errors.Is(err, ErrRemote)) or a handshake refusal. A handler returns one
// to choose the code its caller sees.
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	if e.Code >= CodeWrongCluster {
		// Read after "… refused the connection: " or "… ended the
		// connection: ".
		return fmt.Sprintf("%s (%s)", strings.TrimPrefix(e.Message, "transport: "), e.Code)
	}
	return fmt.Sprintf("transport: remote error (%s): %s", e.Code, e.Message)
}

// Is makes a RemoteError match ErrRemote (handler codes) or the sentinel of
// its connection-level code.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrRemote:
		return e.Code < CodeWrongCluster
	case ErrFrameTooLarge:
		return e.Code == CodeTooLarge
	case ErrWrongCluster:
		return e.Code == CodeWrongCluster
	case ErrStaleMember:
		return e.Code == CodeStaleMember
	case ErrVersionMismatch:
		return e.Code == CodeVersionMismatch
	case ErrRefused:
		return e.Code >= CodeWrongCluster && e.Code <= CodeRefused
	case ErrProtocol:
		return e.Code == CodeProtocol
	}
	return false
}

// RefusalCode is the code a handshake refusal err travels with.
func RefusalCode(err error) Code {
	switch {
	case errors.Is(err, ErrWrongCluster):
		return CodeWrongCluster
	case errors.Is(err, ErrStaleMember):
		return CodeStaleMember
	case errors.Is(err, ErrVersionMismatch):
		return CodeVersionMismatch
	}
	return CodeRefused
}

// HandlerErrorCode is the code a handler's err travels with.
func HandlerErrorCode(err error) (Code, string) {
	var re *RemoteError
	if errors.As(err, &re) && re.Code != 0 && re.Code < CodeWrongCluster {
		return re.Code, re.Message
	}
	return CodeHandler, err.Error()
}

// compound is one failure that is several things at once: a truncated
// frame on a connection is a lost peer and a protocol error; an oversize
// frame is a protocol error and too large. Its message is written once.
type compound struct {
	msg       string
	sentinels []error
}

func (e *compound) Error() string { return e.msg }

func (e *compound) Is(target error) bool {
	for _, s := range e.sentinels {
		if errors.Is(s, target) {
			return true
		}
	}
	return false
}

// Compound returns an error reading msg that matches (errors.Is) each of
// sentinels and whatever they wrap. For transport implementations.
func Compound(msg string, sentinels ...error) error {
	return &compound{msg: msg, sentinels: sentinels}
}

// ProtocolTooLarge is the error for a frame or message above the receiving
// side's limit: ErrProtocol and ErrFrameTooLarge.
func ProtocolTooLarge(format string, args ...any) error {
	return Compound("transport: protocol error: too large: "+fmt.Sprintf(format, args...), ErrProtocol, ErrFrameTooLarge)
}

// PeerGone is ErrPeerGone caused by err, with one "transport:" prefix.
func PeerGone(err error) error {
	if errors.Is(err, ErrPeerGone) {
		return err
	}
	return Compound("transport: peer gone: "+strings.TrimPrefix(err.Error(), "transport: "), ErrPeerGone, err)
}
