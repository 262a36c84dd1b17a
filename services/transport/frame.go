package transport

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// The frame header every transport uses, in network byte order:
//
//	offset size field
//	     0    2 magic 0x46 0x58 ("FX")
//	     2    1 frame format version (FrameVersion)
//	     3    1 frame type (FrameType)
//	     4    2 flags (Flags)
//	     6    2 reserved, zero
//	     8    8 stream id: the request a frame belongs to; 0 = the connection
//	    16    4 payload length, at most MaxFramePayload
//
// The payload follows. docs/transport.md lists each type's payload.
const (
	HeaderSize = 20
	// Magic is "FX".
	Magic uint16 = 0x4658
	// FrameVersion is the header format's version. A HELLO is always sent
	// in version 1 so that peers can negotiate (Identity.Protocol).
	FrameVersion uint8 = 1
	// MaxFramePayload bounds one frame's payload. Larger messages and bulk
	// ranges are split into frames (FlagMore).
	MaxFramePayload = 16 << 20
	// MaxFrameSize is the largest frame on the wire.
	MaxFrameSize = HeaderSize + MaxFramePayload
)

// Payload sizes of the fixed parts.
const (
	// RequestHeadSize: budget_ns u64, total u64, path_len u16.
	RequestHeadSize = 18
	// ResponseHeadSize: total u64.
	ResponseHeadSize = 8
	// BulkReadSize: budget_ns u64, segment u32, offset u64, length u64, tag u64.
	BulkReadSize = 36
	// PingSize: an opaque u64 the pong echoes.
	PingSize = 8
	// ErrorHeadSize: code u16; the message follows.
	ErrorHeadSize = 2
	// MaxErrorMessage bounds the message of an ERROR or CLOSE frame;
	// senders cut longer ones.
	MaxErrorMessage = 4096
	// HelloFixedSize: protocol u16, reserved u16, start_ns i64, max_message u64.
	HelloFixedSize = 20
	// MaxHelloSize bounds a HELLO payload.
	MaxHelloSize = 1024
	// HandshakeFrameLimit bounds any frame before the handshake completes,
	// so an unauthenticated peer cannot make us allocate more.
	HandshakeFrameLimit = ErrorHeadSize + MaxErrorMessage
)

// FrameType says what a frame carries.
type FrameType uint8

// Frame types. Never renumber one.
const (
	FrameHello    FrameType = 1  // dialer's Identity
	FrameHelloAck FrameType = 2  // listener's Identity: the connection is up
	FrameRequest  FrameType = 3  // a request or one-way message (fragments)
	FrameResponse FrameType = 4  // a reply (fragments)
	FrameError    FrameType = 5  // a failed request (stream id) or a refusal (stream 0)
	FrameBulkRead FrameType = 6  // ask for a remote range
	FrameBulkData FrameType = 7  // bytes of a range, in order (fragments)
	FrameCancel   FrameType = 8  // the caller abandons a stream
	FramePing     FrameType = 9  // keepalive probe
	FramePong     FrameType = 10 // keepalive answer
	FrameClose    FrameType = 11 // goodbye with a reason; the sender closes next
)

var frameTypeNames = [...]string{
	FrameHello:    "hello",
	FrameHelloAck: "hello-ack",
	FrameRequest:  "request",
	FrameResponse: "response",
	FrameError:    "error",
	FrameBulkRead: "bulk-read",
	FrameBulkData: "bulk-data",
	FrameCancel:   "cancel",
	FramePing:     "ping",
	FramePong:     "pong",
	FrameClose:    "close",
}

func (t FrameType) String() string {
	if int(t) < len(frameTypeNames) && frameTypeNames[t] != "" {
		return frameTypeNames[t]
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// ParseFrameType is String's inverse.
func ParseFrameType(s string) (FrameType, bool) {
	for t, n := range frameTypeNames {
		if n != "" && n == s {
			return FrameType(t), true
		}
	}
	return 0, false
}

// Flags modify a frame.
type Flags uint16

// Flag bits. Unknown bits are a protocol error.
const (
	// FlagMore: more frames of this message or range follow.
	FlagMore Flags = 1 << 0
	// FlagCont: this frame continues a message; its payload is body bytes
	// only (no head).
	FlagCont Flags = 1 << 1
	// FlagOneWay: a request whose reply nobody reads (Conn.Send).
	FlagOneWay Flags = 1 << 2
)

var flagNames = []struct {
	f Flags
	n string
}{{FlagMore, "more"}, {FlagCont, "cont"}, {FlagOneWay, "oneway"}}

func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for _, fn := range flagNames {
		if f&fn.f != 0 {
			parts = append(parts, fn.n)
			f &^= fn.f
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint16(f)))
	}
	return strings.Join(parts, "|")
}

// ParseFlags is String's inverse.
func ParseFlags(s string) (Flags, bool) {
	if s == "0" || s == "" {
		return 0, true
	}
	var f Flags
next:
	for _, p := range strings.Split(s, "|") {
		for _, fn := range flagNames {
			if p == fn.n {
				f |= fn.f
				continue next
			}
		}
		return 0, false
	}
	return f, true
}

// Header is a decoded frame header.
type Header struct {
	Type   FrameType
	Flags  Flags
	Stream uint64
	Length uint32
}

func (h Header) String() string {
	return fmt.Sprintf("%s stream=%d flags=%s len=%d", h.Type, h.Stream, h.Flags, h.Length)
}

// PutHeader writes h into b[:HeaderSize].
func PutHeader(b []byte, h Header) {
	_ = b[HeaderSize-1]
	binary.BigEndian.PutUint16(b[0:], Magic)
	b[2] = FrameVersion
	b[3] = byte(h.Type)
	binary.BigEndian.PutUint16(b[4:], uint16(h.Flags))
	binary.BigEndian.PutUint16(b[6:], 0)
	binary.BigEndian.PutUint64(b[8:], h.Stream)
	binary.BigEndian.PutUint32(b[16:], h.Length)
}

// AppendHeader appends h's encoding to dst.
func AppendHeader(dst []byte, h Header) []byte {
	var b [HeaderSize]byte
	PutHeader(b[:], h)
	return append(dst, b[:]...)
}

type streamRule uint8

const (
	streamAny streamRule = iota
	streamZero
	streamNonZero
)

// typeRule is what a frame type allows; checked on the header alone, before
// a byte of payload is read or allocated.
type typeRule struct {
	stream streamRule
	flags  Flags
	// minHead is the least payload of a first (non-FlagCont) frame.
	minHead uint32
	// max is the most payload of a control frame.
	max uint32
	// data frames (request, response, bulk-data) are bounded by the
	// caller's limit instead.
	data bool
}

var typeRules = [...]typeRule{
	FrameHello:    {stream: streamZero, minHead: HelloFixedSize + 3, max: MaxHelloSize},
	FrameHelloAck: {stream: streamZero, minHead: HelloFixedSize + 3, max: MaxHelloSize},
	FrameRequest:  {stream: streamNonZero, flags: FlagMore | FlagCont | FlagOneWay, minHead: RequestHeadSize, data: true},
	FrameResponse: {stream: streamNonZero, flags: FlagMore | FlagCont, minHead: ResponseHeadSize, data: true},
	FrameError:    {stream: streamAny, minHead: ErrorHeadSize, max: ErrorHeadSize + MaxErrorMessage},
	FrameBulkRead: {stream: streamNonZero, minHead: BulkReadSize, max: BulkReadSize},
	FrameBulkData: {stream: streamNonZero, flags: FlagMore, data: true},
	FrameCancel:   {stream: streamNonZero},
	FramePing:     {stream: streamZero, minHead: PingSize, max: PingSize},
	FramePong:     {stream: streamZero, minHead: PingSize, max: PingSize},
	FrameClose:    {stream: streamZero, minHead: ErrorHeadSize, max: ErrorHeadSize + MaxErrorMessage},
}

// DecodeHeader decodes and validates a frame header. limit bounds the
// payload of data frames (request, response, bulk-data, cancel's zero);
// it is capped at MaxFramePayload. Every violation is an ErrProtocol
// (oversize ones also ErrFrameTooLarge); fewer than HeaderSize bytes give
// ErrTruncated.
func DecodeHeader(b []byte, limit uint32) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d of the %d header bytes", ErrTruncated, len(b), HeaderSize)
	}
	if m := binary.BigEndian.Uint16(b[0:]); m != Magic {
		return Header{}, fmt.Errorf("%w: bad magic 0x%04x (want 0x%04x, \"FX\"): the peer does not speak the fluxon transport protocol", ErrProtocol, m, Magic)
	}
	if v := b[2]; v != FrameVersion {
		return Header{}, fmt.Errorf("%w: frame version %d, this build reads version %d only", ErrProtocol, v, FrameVersion)
	}
	h := Header{
		Type:   FrameType(b[3]),
		Flags:  Flags(binary.BigEndian.Uint16(b[4:])),
		Stream: binary.BigEndian.Uint64(b[8:]),
		Length: binary.BigEndian.Uint32(b[16:]),
	}
	if r := binary.BigEndian.Uint16(b[6:]); r != 0 {
		return h, fmt.Errorf("%w: reserved header bytes are 0x%04x, must be zero", ErrProtocol, r)
	}
	if int(h.Type) >= len(typeRules) || frameTypeNames[h.Type] == "" {
		return h, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, uint8(h.Type))
	}
	rule := typeRules[h.Type]
	if bad := h.Flags &^ rule.flags; bad != 0 {
		return h, fmt.Errorf("%w: flags %s are not allowed on a %s frame", ErrProtocol, bad, h.Type)
	}
	if h.Flags&FlagOneWay != 0 && h.Flags&FlagCont != 0 {
		return h, fmt.Errorf("%w: oneway belongs on a request's first frame, not on a continuation", ErrProtocol)
	}
	switch rule.stream {
	case streamZero:
		if h.Stream != 0 {
			return h, fmt.Errorf("%w: a %s frame belongs to the connection (stream 0), got stream %d", ErrProtocol, h.Type, h.Stream)
		}
	case streamNonZero:
		if h.Stream == 0 {
			return h, fmt.Errorf("%w: a %s frame needs a stream id, got 0", ErrProtocol, h.Type)
		}
	}
	max := rule.max
	if rule.data {
		max = min(limit, MaxFramePayload)
	}
	if h.Length > max {
		if rule.data {
			return h, ProtocolTooLarge("%s frame of %d payload bytes, the limit here is %d", h.Type, h.Length, max)
		}
		return h, fmt.Errorf("%w: %s frame of %d payload bytes, at most %d allowed", ErrProtocol, h.Type, h.Length, max)
	}
	if h.Flags&FlagCont == 0 && h.Length < rule.minHead {
		return h, fmt.Errorf("%w: %s frame of %d payload bytes, at least %d needed", ErrProtocol, h.Type, h.Length, rule.minHead)
	}
	return h, nil
}

// Frame is a header and its payload.
type Frame struct {
	Header
	Payload []byte
}

// AppendFrame appends f (its Length set from its payload) to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	f.Length = uint32(len(f.Payload))
	dst = AppendHeader(dst, f.Header)
	return append(dst, f.Payload...)
}

// DecodeFrame decodes the frame at the start of b and says how many bytes
// it took. Payload aliases b. ErrTruncated means b holds only part of a
// frame (whose header, when complete, is valid).
func DecodeFrame(b []byte, limit uint32) (Frame, int, error) {
	h, err := DecodeHeader(b, limit)
	if err != nil {
		return Frame{Header: h}, 0, err
	}
	end := HeaderSize + int(h.Length)
	if len(b) < end {
		return Frame{Header: h}, 0, fmt.Errorf("%w: %d of the %d payload bytes of a %s frame", ErrTruncated, len(b)-HeaderSize, h.Length, h.Type)
	}
	return Frame{Header: h, Payload: b[HeaderSize:end:end]}, end, nil
}
