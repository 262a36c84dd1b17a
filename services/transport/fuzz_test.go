package transport

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame and payload decoders.
// They must never panic; every error must be an ErrProtocol; whatever
// decodes must encode back to the same bytes.
//
//	go test -run '^$' -fuzz FuzzDecodeFrame -fuzztime 60s ./services/transport
func FuzzDecodeFrame(f *testing.F) {
	id := Identity{ClusterName: "c", InstanceKey: "k", StartTime: time.Unix(0, 5), Role: "owner", Protocol: ProtocolVersion}
	hello, _ := AppendHello(nil, Hello{Identity: id, MaxMessage: 1 << 20})
	seeds := []Frame{
		{Header: Header{Type: FrameHello}, Payload: hello},
		{Header: Header{Type: FrameHelloAck}, Payload: hello},
		{Header: Header{Type: FrameRequest, Stream: 1}, Payload: append(AppendRequestHead(nil, RequestHead{Budget: time.Second, Total: 3, Path: "/p"}), "abc"...)},
		{Header: Header{Type: FrameRequest, Stream: 1, Flags: FlagCont | FlagMore}, Payload: []byte("xyz")},
		{Header: Header{Type: FrameResponse, Stream: 2}, Payload: append(AppendResponseHead(nil, 2), "ok"...)},
		{Header: Header{Type: FrameError, Stream: 2}, Payload: AppendErrorPayload(nil, CodeNotFound, "no")},
		{Header: Header{Type: FrameBulkRead, Stream: 3}, Payload: AppendBulkRead(nil, BulkRead{Ref: RemoteRef{Segment: 1, Offset: 2, Length: 3, Tag: 4}})},
		{Header: Header{Type: FrameBulkData, Stream: 3, Flags: FlagMore}, Payload: []byte("data")},
		{Header: Header{Type: FrameCancel, Stream: 3}},
		{Header: Header{Type: FramePing}, Payload: make([]byte, PingSize)},
		{Header: Header{Type: FrameClose}, Payload: AppendErrorPayload(nil, CodeGoingAway, "bye")},
	}
	for _, s := range seeds {
		f.Add(AppendFrame(nil, s), uint32(MaxFramePayload))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint32(4098))
	f.Add(AppendHeader(nil, Header{Type: FrameRequest, Stream: 1, Length: 0xFFFFFFFF}), uint32(MaxFramePayload))

	f.Fuzz(func(t *testing.T, data []byte, limit uint32) {
		fr, n, err := DecodeFrame(data, limit)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("DecodeFrame error %v is not an ErrProtocol", err)
			}
			return
		}
		if n < HeaderSize || n > len(data) || int(fr.Length) != len(fr.Payload) || n != HeaderSize+len(fr.Payload) {
			t.Fatalf("DecodeFrame took %d bytes of %d for %s with a %d-byte payload", n, len(data), fr.Header, len(fr.Payload))
		}
		isData := fr.Type == FrameRequest || fr.Type == FrameResponse || fr.Type == FrameBulkData
		if isData && fr.Length > min(limit, MaxFramePayload) {
			t.Fatalf("DecodeFrame let a %d-byte payload past limit %d", fr.Length, limit)
		}
		if enc := AppendFrame(nil, fr); !bytes.Equal(enc, data[:n]) {
			t.Fatalf("re-encoding %s gives\n%x\nwant\n%x", fr.Header, enc, data[:n])
		}
		checkPayload(t, fr)
	})
}

// checkPayload decodes a frame's payload by its type and re-encodes it.
func checkPayload(t *testing.T, fr Frame) {
	p := fr.Payload
	mustProto := func(err error) bool {
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("%s payload error %v is not an ErrProtocol", fr.Type, err)
		}
		return err == nil
	}
	cont := fr.Flags&FlagCont != 0
	switch {
	case fr.Type == FrameHello || fr.Type == FrameHelloAck:
		h, err := DecodeHello(p)
		if !mustProto(err) {
			return
		}
		enc, err := AppendHello(nil, h)
		if err != nil {
			t.Fatalf("re-encoding a decoded hello: %v", err)
		}
		// Trailing bytes (later versions' fields) are skipped on decode.
		if !bytes.HasPrefix(p, enc) {
			t.Fatalf("hello re-encodes as %x, want a prefix of %x", enc, p)
		}
	case fr.Type == FrameRequest && !cont:
		h, body, err := DecodeRequestHead(p)
		if !mustProto(err) {
			return
		}
		if enc := append(AppendRequestHead(nil, h), body...); !bytes.Equal(enc, p) {
			t.Fatalf("request head re-encodes as %x, want %x", enc, p)
		}
	case fr.Type == FrameResponse && !cont:
		total, body, err := DecodeResponseHead(p)
		if !mustProto(err) {
			return
		}
		if enc := append(AppendResponseHead(nil, total), body...); !bytes.Equal(enc, p) {
			t.Fatalf("response head re-encodes as %x, want %x", enc, p)
		}
	case fr.Type == FrameError || fr.Type == FrameClose:
		re, err := DecodeErrorPayload(p)
		if !mustProto(err) {
			return
		}
		if enc := AppendErrorPayload(nil, re.Code, re.Message); !bytes.Equal(enc, p) {
			t.Fatalf("error payload re-encodes as %x, want %x", enc, p)
		}
	case fr.Type == FrameBulkRead:
		r, err := DecodeBulkRead(p)
		if !mustProto(err) {
			return
		}
		if enc := AppendBulkRead(nil, r); !bytes.Equal(enc, p) {
			t.Fatalf("bulk-read re-encodes as %x, want %x", enc, p)
		}
	}
}
