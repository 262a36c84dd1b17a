package rpc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Errors a caller tells apart with errors.Is. Call wraps one of them with
// the node, the path and what happened; the transport's error stays in the
// chain too (errors.Is(err, transport.ErrPeerGone) still works).
var (
	// ErrUnknownNode: the resolver does not know the node (never a member,
	// or it advertises no rpc endpoint).
	ErrUnknownNode = errors.New("rpc: unknown node")
	// ErrUnknownPath: the node serves no handler for the path.
	ErrUnknownPath = errors.New("rpc: unknown path")
	// ErrHandler: the handler returned an error. errors.As with *Error gives
	// its application code and message.
	ErrHandler = errors.New("rpc: handler failed")
	// ErrHandlerPanic: the handler panicked; the message carries the panic
	// value. The serving node recovered and keeps serving.
	ErrHandlerPanic = errors.New("rpc: handler panicked")
	// ErrTimeout: the call's deadline passed. The error also matches
	// context.DeadlineExceeded.
	ErrTimeout = errors.New("rpc: timed out")
	// ErrPeerGone: the connection was lost while the call was in flight,
	// or the node left the cluster (its member record went). Whether the
	// handler ran is unknown.
	ErrPeerGone = errors.New("rpc: peer gone")
	// ErrStaleNode: the resolver's incarnation of the node is not the one
	// listening at its address (the node restarted, or another member took
	// the address), or the caller is itself an old incarnation the callee
	// refuses. Retry once the resolver has caught up.
	ErrStaleNode = errors.New("rpc: stale node incarnation")
	// ErrUnreachable: nothing accepted a connection at the node's address
	// (it died and its record has not expired yet, or a firewall).
	ErrUnreachable = errors.New("rpc: node unreachable")
	// ErrRefused: the node refused the connection for another reason than
	// staleness (another cluster, an unsupported protocol version).
	ErrRefused = errors.New("rpc: connection refused")
	// ErrTooLarge: the request or the reply is above the receiver's
	// message size limit.
	ErrTooLarge = errors.New("rpc: message too large")
	// ErrInvalidPath: a path that is empty, does not start with "/", is too
	// long, or (for Register) lies under the reserved "/fluxon/" prefix.
	ErrInvalidPath = errors.New("rpc: invalid path")
	// ErrDuplicatePath: Register of a path that already has a handler.
	ErrDuplicatePath = errors.New("rpc: path already registered")
	// ErrClosed: the local Node is closed (or was closed during the call).
	ErrClosed = errors.New("rpc: node closed")
)

// Error is an application error: what a handler returns to give its
// caller a numeric code, and what the caller gets back (inside the
// returned error's chain: errors.As(err, &e)). It matches ErrHandler.
type Error struct {
	// Code is the application's code; 0 means none.
	Code int64
	// Message is the handler's message (at most transport.MaxErrorMessage
	// bytes arrive).
	Message string
}

// Errorf returns an application error with code and a formatted message.
func Errorf(code int64, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("handler error (code %d): %s", e.Code, e.Message)
	}
	return "handler error: " + e.Message
}

// Is makes an *Error match ErrHandler.
func (e *Error) Is(target error) bool { return target == ErrHandler }

// Code returns the application code of a call's error: the Code of the
// *Error in its chain, or 0 when there is none.
func Code(err error) int64 {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// A handler's error crosses the transport as a RemoteError with
// CodeHandler; a non-zero application code rides in front of the message
// as "[code N] ", which stays readable in the transport's own logs.
var codePrefix = regexp.MustCompile(`^\[code (-?[0-9]{1,19})\] `)

func encodeHandlerError(err error) *transport.RemoteError {
	var e *Error
	if errors.As(err, &e) {
		if e.Code != 0 {
			return &transport.RemoteError{Code: transport.CodeHandler, Message: fmt.Sprintf("[code %d] %s", e.Code, e.Message)}
		}
		return &transport.RemoteError{Code: transport.CodeHandler, Message: e.Message}
	}
	return &transport.RemoteError{Code: transport.CodeHandler, Message: err.Error()}
}

func decodeHandlerError(msg string) *Error {
	if m := codePrefix.FindStringSubmatch(msg); m != nil {
		if c, err := strconv.ParseInt(m[1], 10, 64); err == nil {
			return &Error{Code: c, Message: msg[len(m[0]):]}
		}
	}
	return &Error{Message: msg}
}

// outcome is a call's result as metrics count it.
type outcome uint8

const (
	outcomeOK outcome = iota
	outcomeUnknownNode
	outcomeUnknownPath
	outcomeHandlerError
	outcomeHandlerPanic
	outcomeTimeout
	outcomeCanceled
	outcomePeerGone
	outcomeStaleNode
	outcomeUnreachable
	outcomeRefused
	outcomeTooLarge
	outcomeInvalid
	outcomeClosed
	outcomeOther
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	outcomeOK:           "ok",
	outcomeUnknownNode:  "unknown_node",
	outcomeUnknownPath:  "unknown_path",
	outcomeHandlerError: "handler_error",
	outcomeHandlerPanic: "handler_panic",
	outcomeTimeout:      "timeout",
	outcomeCanceled:     "canceled",
	outcomePeerGone:     "peer_gone",
	outcomeStaleNode:    "stale_node",
	outcomeUnreachable:  "unreachable",
	outcomeRefused:      "refused",
	outcomeTooLarge:     "too_large",
	outcomeInvalid:      "invalid",
	outcomeClosed:       "closed",
	outcomeOther:        "other",
}

func (o outcome) String() string { return outcomeNames[o] }

// outcomeOf classifies an error Call returns.
func outcomeOf(err error) outcome {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrUnknownNode):
		return outcomeUnknownNode
	case errors.Is(err, ErrUnknownPath):
		return outcomeUnknownPath
	case errors.Is(err, ErrHandler):
		return outcomeHandlerError
	case errors.Is(err, ErrHandlerPanic):
		return outcomeHandlerPanic
	case errors.Is(err, ErrTimeout):
		return outcomeTimeout
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, ErrPeerGone):
		return outcomePeerGone
	case errors.Is(err, ErrStaleNode):
		return outcomeStaleNode
	case errors.Is(err, ErrUnreachable):
		return outcomeUnreachable
	case errors.Is(err, ErrRefused):
		return outcomeRefused
	case errors.Is(err, ErrTooLarge):
		return outcomeTooLarge
	case errors.Is(err, ErrInvalidPath):
		return outcomeInvalid
	case errors.Is(err, ErrClosed):
		return outcomeClosed
	}
	return outcomeOther
}

// callError turns what the transport returned for a call (dial or request)
// into the error Call returns: one rpc sentinel, the transport's error
// kept in the chain. gone, when not nil, is why this Node dropped the
// connection itself (the node left or restarted, or Close).
func callError(ctx context.Context, nodeID, path string, err, gone error) error {
	where := fmt.Sprintf("%s on node %q", path, nodeID)
	var re *transport.RemoteError
	switch {
	case errors.As(err, &re) && re.Code < transport.CodeWrongCluster:
		switch re.Code {
		case transport.CodeNotFound:
			return fmt.Errorf("%w: %s: %s", ErrUnknownPath, where, re.Message)
		case transport.CodePanic:
			return fmt.Errorf("%w: %s: %s", ErrHandlerPanic, where, re.Message)
		case transport.CodeTooLarge:
			return fmt.Errorf("%w: %s: %s", ErrTooLarge, where, re.Message)
		case transport.CodeUnavailable:
			return fmt.Errorf("%w: %s: %s", ErrPeerGone, where, re.Message)
		}
		return fmt.Errorf("rpc: %s: %w", where, decodeHandlerError(re.Message))
	case errors.Is(err, transport.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
		if !errors.Is(err, context.DeadlineExceeded) {
			// A handshake that outlasted the transport's own limit: a
			// deadline all the same, so it matches like the caller's.
			err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
		return fmt.Errorf("%w: %s: %w", ErrTimeout, where, err)
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		if cause := context.Cause(ctx); cause != nil && cause != context.Canceled {
			return fmt.Errorf("rpc: %s: %w (%w)", where, err, cause)
		}
		return fmt.Errorf("rpc: %s: %w", where, err)
	case errors.Is(err, transport.ErrStaleMember):
		return fmt.Errorf("%w: %s: %w", ErrStaleNode, where, err)
	case errors.Is(err, transport.ErrRefused), errors.Is(err, transport.ErrWrongCluster), errors.Is(err, transport.ErrVersionMismatch):
		return fmt.Errorf("%w: %s: %w", ErrRefused, where, err)
	case errors.Is(err, transport.ErrUnreachable):
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, where, err)
	case errors.Is(err, transport.ErrFrameTooLarge):
		return fmt.Errorf("%w: %s: %w", ErrTooLarge, where, err)
	case errors.Is(err, transport.ErrInvalid):
		return fmt.Errorf("%w: %s: %w", ErrInvalidPath, where, err)
	case gone != nil && errors.Is(gone, ErrClosed):
		return fmt.Errorf("%w: %s: %w", ErrClosed, where, err)
	case gone != nil:
		return fmt.Errorf("%w: %s: %v: %w", ErrPeerGone, where, gone, err)
	case errors.Is(err, transport.ErrPeerGone), errors.Is(err, transport.ErrClosed):
		return fmt.Errorf("%w: %s: %w", ErrPeerGone, where, err)
	}
	return fmt.Errorf("rpc: %s: %w", where, err)
}
