package transport

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// Hello is the payload of HELLO and HELLO_ACK frames:
//
//	offset size field
//	     0    2 protocol version
//	     2    2 reserved, zero
//	     4    8 start time, unix ns (signed; 0 = unknown)
//	    12    8 max message size the sender accepts
//	    20  1+n cluster name (length byte, bytes)
//	     …  1+n instance key
//	     …  1+n role
//
// Bytes after the role are ignored, so a later protocol version can append
// fields that an older peer skips.
type Hello struct {
	Identity
	// MaxMessage is the largest request or response payload the sender
	// accepts.
	MaxMessage uint64
}

// AppendHello appends h's encoding (with h.Protocol as the version) to dst.
func AppendHello(dst []byte, h Hello) ([]byte, error) {
	for _, f := range []struct{ name, v string }{
		{"cluster name", h.ClusterName}, {"instance key", h.InstanceKey}, {"role", h.Role},
	} {
		if len(f.v) > MaxIdentityField {
			return dst, fmt.Errorf("%w: %s of %d bytes, at most %d fit a handshake", ErrInvalid, f.name, len(f.v), MaxIdentityField)
		}
	}
	dst = binary.BigEndian.AppendUint16(dst, h.Protocol)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, uint64(unixNano(h.StartTime)))
	dst = binary.BigEndian.AppendUint64(dst, h.MaxMessage)
	for _, v := range []string{h.ClusterName, h.InstanceKey, h.Role} {
		dst = append(dst, byte(len(v)))
		dst = append(dst, v...)
	}
	return dst, nil
}

// DecodeHello decodes a HELLO or HELLO_ACK payload.
func DecodeHello(p []byte) (Hello, error) {
	var h Hello
	if len(p) < HelloFixedSize {
		return h, fmt.Errorf("%w: hello of %d bytes, at least %d needed", ErrProtocol, len(p), HelloFixedSize)
	}
	h.Protocol = binary.BigEndian.Uint16(p[0:])
	if r := binary.BigEndian.Uint16(p[2:]); r != 0 {
		return h, fmt.Errorf("%w: hello reserved bytes are 0x%04x, must be zero", ErrProtocol, r)
	}
	if ns := int64(binary.BigEndian.Uint64(p[4:])); ns != 0 {
		h.StartTime = time.Unix(0, ns)
	}
	h.MaxMessage = binary.BigEndian.Uint64(p[12:])
	rest := p[HelloFixedSize:]
	fields := [3]*string{&h.ClusterName, &h.InstanceKey, &h.Role}
	for i, f := range fields {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return h, fmt.Errorf("%w: hello ends inside field %d of 3", ErrProtocol, i+1)
		}
		n := int(rest[0])
		*f = string(rest[1 : 1+n])
		rest = rest[1+n:]
	}
	return h, nil
}

// RequestHead starts the payload of a request's first frame:
//
//	offset size field
//	     0    8 budget: ns left until the caller's deadline (0 = none)
//	     8    8 total body length, over every frame of the request
//	    16    2 path length
//	    18    n path
//
// The body follows (this frame's share of it).
type RequestHead struct {
	Budget time.Duration
	Total  uint64
	Path   string
}

// AppendRequestHead appends h's encoding to dst.
func AppendRequestHead(dst []byte, h RequestHead) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(max(h.Budget, 0)))
	dst = binary.BigEndian.AppendUint64(dst, h.Total)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(h.Path)))
	return append(dst, h.Path...)
}

// DecodeRequestFixed decodes the fixed part of a request head and says how
// long the path that follows is.
func DecodeRequestFixed(p []byte) (h RequestHead, pathLen int, err error) {
	if len(p) < RequestHeadSize {
		return h, 0, fmt.Errorf("%w: request head of %d bytes, %d needed", ErrProtocol, len(p), RequestHeadSize)
	}
	b := binary.BigEndian.Uint64(p[0:])
	if b > math.MaxInt64 {
		return h, 0, fmt.Errorf("%w: request budget %d ns does not fit a duration", ErrProtocol, b)
	}
	h.Budget = time.Duration(b)
	h.Total = binary.BigEndian.Uint64(p[8:])
	pathLen = int(binary.BigEndian.Uint16(p[16:]))
	if pathLen > MaxPathLen {
		return h, 0, fmt.Errorf("%w: request path of %d bytes, at most %d allowed", ErrProtocol, pathLen, MaxPathLen)
	}
	return h, pathLen, nil
}

// DecodeRequestHead decodes the head of a request's first-frame payload
// and returns the body bytes that follow it in this frame.
func DecodeRequestHead(p []byte) (RequestHead, []byte, error) {
	h, n, err := DecodeRequestFixed(p)
	if err != nil {
		return h, nil, err
	}
	if len(p) < RequestHeadSize+n {
		return h, nil, fmt.Errorf("%w: request path of %d bytes overruns the %d-byte frame", ErrProtocol, n, len(p))
	}
	h.Path = string(p[RequestHeadSize : RequestHeadSize+n])
	body := p[RequestHeadSize+n:]
	if uint64(len(body)) > h.Total {
		return h, nil, fmt.Errorf("%w: request frame carries %d body bytes of a %d-byte total", ErrProtocol, len(body), h.Total)
	}
	return h, body, nil
}

// AppendResponseHead appends a response's first-frame head (its total body
// length) to dst.
func AppendResponseHead(dst []byte, total uint64) []byte {
	return binary.BigEndian.AppendUint64(dst, total)
}

// DecodeResponseHead decodes a response's first-frame head and returns the
// body bytes that follow it in this frame.
func DecodeResponseHead(p []byte) (total uint64, body []byte, err error) {
	if len(p) < ResponseHeadSize {
		return 0, nil, fmt.Errorf("%w: response head of %d bytes, %d needed", ErrProtocol, len(p), ResponseHeadSize)
	}
	total = binary.BigEndian.Uint64(p)
	body = p[ResponseHeadSize:]
	if uint64(len(body)) > total {
		return 0, nil, fmt.Errorf("%w: response frame carries %d body bytes of a %d-byte total", ErrProtocol, len(body), total)
	}
	return total, body, nil
}

// AppendErrorPayload appends an ERROR or CLOSE payload (code u16, then the
// message, cut to MaxErrorMessage bytes) to dst.
func AppendErrorPayload(dst []byte, code Code, msg string) []byte {
	if len(msg) > MaxErrorMessage {
		msg = msg[:MaxErrorMessage]
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, msg...)
}

// DecodeErrorPayload decodes an ERROR or CLOSE payload.
func DecodeErrorPayload(p []byte) (*RemoteError, error) {
	if len(p) < ErrorHeadSize || len(p) > ErrorHeadSize+MaxErrorMessage {
		return nil, fmt.Errorf("%w: error payload of %d bytes, want %d..%d", ErrProtocol, len(p), ErrorHeadSize, ErrorHeadSize+MaxErrorMessage)
	}
	c := Code(binary.BigEndian.Uint16(p))
	if c == 0 {
		return nil, fmt.Errorf("%w: error frame with code 0", ErrProtocol)
	}
	return &RemoteError{Code: c, Message: string(p[ErrorHeadSize:])}, nil
}

// BulkRead is the payload of a BULK_READ frame:
//
//	offset size field
//	     0    8 budget ns (0 = none)
//	     8    4 segment
//	    12    8 offset
//	    20    8 length
//	    28    8 tag
type BulkRead struct {
	Budget time.Duration
	Ref    RemoteRef
}

// AppendBulkRead appends r's encoding to dst.
func AppendBulkRead(dst []byte, r BulkRead) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(max(r.Budget, 0)))
	dst = binary.BigEndian.AppendUint32(dst, r.Ref.Segment)
	dst = binary.BigEndian.AppendUint64(dst, r.Ref.Offset)
	dst = binary.BigEndian.AppendUint64(dst, r.Ref.Length)
	return binary.BigEndian.AppendUint64(dst, r.Ref.Tag)
}

// DecodeBulkRead decodes a BULK_READ payload.
func DecodeBulkRead(p []byte) (BulkRead, error) {
	var r BulkRead
	if len(p) != BulkReadSize {
		return r, fmt.Errorf("%w: bulk-read payload of %d bytes, want %d", ErrProtocol, len(p), BulkReadSize)
	}
	b := binary.BigEndian.Uint64(p[0:])
	if b > math.MaxInt64 {
		return r, fmt.Errorf("%w: bulk-read budget %d ns does not fit a duration", ErrProtocol, b)
	}
	r.Budget = time.Duration(b)
	r.Ref.Segment = binary.BigEndian.Uint32(p[8:])
	r.Ref.Offset = binary.BigEndian.Uint64(p[12:])
	r.Ref.Length = binary.BigEndian.Uint64(p[20:])
	r.Ref.Tag = binary.BigEndian.Uint64(p[28:])
	return r, nil
}
