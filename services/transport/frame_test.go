package transport

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/frames/*.txt")

// A frame test file (testdata/frames/*.txt) is a list of cases:
//
//	# comments
//	<directive> [args]
//	<input lines>
//	----
//	<expected output lines>
//	<blank line>
//
// Directives:
//
//	decode [limit=N]   decode the input bytes as a sequence of frames (data
//	                   frames limited to N payload bytes, default
//	                   MaxFramePayload) and describe each, or the error
//	                   that stops decoding and the sentinels it matches
//	encode <type> [stream=N] [flags=a|b]
//	                   build a frame of that type from the input's key=value
//	                   fields (per type: see buildPayload), print its bytes
//	                   in hex and what decoding them gives back
//
// Input bytes are hex pairs (spaces ignored), "quoted text", or HH*N for N
// copies of byte HH. `go test -run TestFrames -rewrite` regenerates the
// expected outputs; review the diff.
func TestFrames(t *testing.T) {
	files, err := filepath.Glob("testdata/frames/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no frame test files: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			runFrameFile(t, path)
		})
	}
}

func runFrameFile(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var out strings.Builder
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" || strings.HasPrefix(l, "#") {
			out.WriteString(l + "\n")
			continue
		}
		pos := fmt.Sprintf("%s:%d", path, i+1)
		out.WriteString(l + "\n")
		var input []string
		for i++; i < len(lines) && lines[i] != "----"; i++ {
			input = append(input, lines[i])
			out.WriteString(lines[i] + "\n")
		}
		if i == len(lines) {
			t.Fatalf("%s: no ---- after the input", pos)
		}
		out.WriteString("----\n")
		var expected []string
		for i++; i < len(lines) && lines[i] != ""; i++ {
			expected = append(expected, lines[i])
		}
		actual := runFrameCase(t, pos, l, input)
		out.WriteString(actual + "\n\n")
		if !*rewrite && actual != strings.Join(expected, "\n") {
			t.Errorf("%s: %s\n got:\n%s\nwant:\n%s\n(if the new output is right, run with -rewrite and review the diff)",
				pos, l, actual, strings.Join(expected, "\n"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func runFrameCase(t *testing.T, pos, directive string, input []string) string {
	f := fields(directive)
	args := map[string]string{}
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		}
	}
	switch f[0] {
	case "decode":
		limit := uint32(MaxFramePayload)
		if v, ok := args["limit"]; ok {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				t.Fatalf("%s: limit: %v", pos, err)
			}
			limit = uint32(n)
		}
		b, err := parseBytes(strings.Join(input, " "))
		if err != nil {
			t.Fatalf("%s: %v", pos, err)
		}
		return describeFrames(b, limit)
	case "encode":
		if len(f) < 2 {
			t.Fatalf("%s: encode needs a frame type", pos)
		}
		typ, ok := ParseFrameType(f[1])
		if !ok {
			t.Fatalf("%s: unknown frame type %q", pos, f[1])
		}
		h := Header{Type: typ}
		if v, ok := args["stream"]; ok {
			h.Stream, _ = strconv.ParseUint(v, 10, 64)
		}
		if v, ok := args["flags"]; ok {
			if h.Flags, ok = ParseFlags(v); !ok {
				t.Fatalf("%s: bad flags %q", pos, v)
			}
		}
		kv := map[string]string{}
		for _, l := range input {
			for _, a := range fields(l) {
				k, v, _ := strings.Cut(a, "=")
				kv[k] = v
			}
		}
		payload, err := buildPayload(h, kv)
		if err != nil {
			return "error: " + err.Error()
		}
		b := AppendFrame(nil, Frame{Header: h, Payload: payload})
		return hexDump(b) + "\n" + describeFrames(b, MaxFramePayload)
	}
	t.Fatalf("%s: unknown directive %q", pos, f[0])
	return ""
}

// fields splits s at spaces, keeping "quoted strings" (which may follow
// key=) whole and unquoted.
func fields(s string) []string {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		end := strings.IndexByte(s, ' ')
		if q := strings.IndexByte(s, '"'); q >= 0 && (end < 0 || q < end) {
			prefix := s[:q]
			rest := s[q:]
			quoted, err := strconv.QuotedPrefix(rest)
			if err == nil {
				v, _ := strconv.Unquote(quoted)
				out = append(out, prefix+v)
				s = rest[len(quoted):]
				continue
			}
		}
		if end < 0 {
			end = len(s)
		}
		out = append(out, s[:end])
		s = s[end:]
	}
	return out
}

// parseBytes reads hex pairs, "quoted text" and HH*N repeats.
func parseBytes(s string) ([]byte, error) {
	var b []byte
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("bad quoted text at %q", s)
			}
			v, _ := strconv.Unquote(q)
			b = append(b, v...)
			s = s[len(q):]
			continue
		}
		tok, rest, _ := strings.Cut(s, " ")
		s = rest
		if pat, count, ok := strings.Cut(tok, "*"); ok {
			p, err := hex.DecodeString(pat)
			n, err2 := strconv.Atoi(count)
			if err != nil || err2 != nil {
				return nil, fmt.Errorf("bad repeat %q", tok)
			}
			b = append(b, bytes.Repeat(p, n)...)
			continue
		}
		p, err := hex.DecodeString(tok)
		if err != nil {
			return nil, fmt.Errorf("bad hex %q", tok)
		}
		b = append(b, p...)
	}
	return b, nil
}

func hexDump(b []byte) string {
	var s strings.Builder
	s.WriteString("bytes: " + spacedHex(b[:min(len(b), HeaderSize)]))
	for rest := b[min(len(b), HeaderSize):]; len(rest) > 0; {
		k := min(len(rest), 16)
		s.WriteString("\n       " + spacedHex(rest[:k]))
		rest = rest[k:]
	}
	return s.String()
}

func spacedHex(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, " ")
}

func buildPayload(h Header, kv map[string]string) ([]byte, error) {
	u64 := func(k string) uint64 {
		v, _ := strconv.ParseUint(kv[k], 10, 64)
		return v
	}
	dur := func(k string) time.Duration {
		d, _ := time.ParseDuration(kv[k])
		return d
	}
	if raw, ok := kv["payload"]; ok {
		return parseBytes(raw)
	}
	body := []byte(kv["body"])
	switch h.Type {
	case FrameHello, FrameHelloAck:
		var start time.Time
		if ns := u64("start"); ns != 0 {
			start = time.Unix(0, int64(ns))
		}
		return AppendHello(nil, Hello{
			Identity:   Identity{ClusterName: kv["cluster"], InstanceKey: kv["key"], StartTime: start, Role: kv["role"], Protocol: uint16(u64("protocol"))},
			MaxMessage: u64("max"),
		})
	case FrameRequest:
		if h.Flags&FlagCont != 0 {
			return body, nil
		}
		return append(AppendRequestHead(nil, RequestHead{Budget: dur("budget"), Total: u64("total"), Path: kv["path"]}), body...), nil
	case FrameResponse:
		if h.Flags&FlagCont != 0 {
			return body, nil
		}
		return append(AppendResponseHead(nil, u64("total")), body...), nil
	case FrameError, FrameClose:
		return AppendErrorPayload(nil, Code(u64("code")), kv["msg"]), nil
	case FrameBulkRead:
		return AppendBulkRead(nil, BulkRead{Budget: dur("budget"), Ref: RemoteRef{
			Segment: uint32(u64("segment")), Offset: u64("offset"), Length: u64("length"), Tag: u64("tag"),
		}}), nil
	case FramePing, FramePong:
		return parseBytes(kv["data"])
	}
	return body, nil
}

// sentinels lists the package errors err matches, for test output.
func sentinels(err error) string {
	var names []string
	for _, s := range []struct {
		n string
		e error
	}{{"protocol", ErrProtocol}, {"truncated", ErrTruncated}, {"too-large", ErrFrameTooLarge}} {
		if errors.Is(err, s.e) {
			names = append(names, s.n)
		}
	}
	return strings.Join(names, ", ")
}

func showBody(b []byte) string {
	if len(b) <= 48 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("<%d bytes>", len(b))
}

// describeFrames decodes b as a sequence of frames.
func describeFrames(b []byte, limit uint32) string {
	var out []string
	for len(b) > 0 {
		f, n, err := DecodeFrame(b, limit)
		if err != nil {
			out = append(out, "error: "+err.Error(), "is: "+sentinels(err))
			break
		}
		out = append(out, "frame: "+f.Header.String())
		if d := describePayload(f); d != "" {
			out = append(out, "  "+d)
		}
		b = b[n:]
	}
	return strings.Join(out, "\n")
}

func describePayload(f Frame) string {
	p := f.Payload
	cont := f.Flags&FlagCont != 0
	switch {
	case f.Type == FrameHello || f.Type == FrameHelloAck:
		h, err := DecodeHello(p)
		if err != nil {
			return "payload error: " + err.Error()
		}
		return fmt.Sprintf("hello: protocol=%d start_ns=%d max=%d cluster=%q key=%q role=%q",
			h.Protocol, unixNano(h.StartTime), h.MaxMessage, h.ClusterName, h.InstanceKey, h.Role)
	case f.Type == FrameRequest && !cont:
		h, body, err := DecodeRequestHead(p)
		if err != nil {
			return "payload error: " + err.Error()
		}
		return fmt.Sprintf("request: budget=%v total=%d path=%q body=%s", h.Budget, h.Total, h.Path, showBody(body))
	case f.Type == FrameResponse && !cont:
		total, body, err := DecodeResponseHead(p)
		if err != nil {
			return "payload error: " + err.Error()
		}
		return fmt.Sprintf("response: total=%d body=%s", total, showBody(body))
	case f.Type == FrameError || f.Type == FrameClose:
		re, err := DecodeErrorPayload(p)
		if err != nil {
			return "payload error: " + err.Error()
		}
		return fmt.Sprintf("error: code=%s(%d) msg=%q", re.Code, uint16(re.Code), re.Message)
	case f.Type == FrameBulkRead:
		r, err := DecodeBulkRead(p)
		if err != nil {
			return "payload error: " + err.Error()
		}
		return fmt.Sprintf("bulk-read: budget=%v %s", r.Budget, r.Ref)
	case f.Type == FramePing || f.Type == FramePong:
		return fmt.Sprintf("data: %x", p)
	case len(p) > 0:
		return "body: " + showBody(p)
	}
	return ""
}

// TestDecodeHeaderNoAllocation: validating a header allocates nothing,
// whatever length it declares.
func TestDecodeHeaderNoAllocation(t *testing.T) {
	b := AppendHeader(nil, Header{Type: FrameBulkData, Stream: 1, Length: 0xFFFFFFFF})
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeHeader(b, MaxFramePayload); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("got %v", err)
		}
	})
	// The error itself is the only allocation (fmt); nothing sized by the
	// declared length: a 4 GiB allocation would show as a failure or OOM.
	if allocs > 8 {
		t.Fatalf("DecodeHeader allocated %v times", allocs)
	}
	good := AppendHeader(nil, Header{Type: FrameRequest, Stream: 1, Length: 100})
	if n := testing.AllocsPerRun(100, func() { _, _ = DecodeHeader(good, MaxFramePayload) }); n != 0 {
		t.Fatalf("decoding a valid header allocated %v times", n)
	}
}

func TestErrorsMatch(t *testing.T) {
	for _, tc := range []struct {
		code Code
		is   []error
		not  []error
	}{
		{CodeHandler, []error{ErrRemote}, []error{ErrRefused, ErrFrameTooLarge}},
		{CodeTooLarge, []error{ErrRemote, ErrFrameTooLarge}, []error{ErrRefused}},
		{CodeWrongCluster, []error{ErrWrongCluster, ErrRefused}, []error{ErrRemote}},
		{CodeStaleMember, []error{ErrStaleMember, ErrRefused}, []error{ErrRemote, ErrWrongCluster}},
		{CodeVersionMismatch, []error{ErrVersionMismatch, ErrRefused}, nil},
		{CodeRefused, []error{ErrRefused}, []error{ErrStaleMember}},
		{CodeProtocol, []error{ErrProtocol}, []error{ErrRefused, ErrRemote}},
	} {
		err := fmt.Errorf("wrapped: %w", &RemoteError{Code: tc.code, Message: "m"})
		for _, e := range tc.is {
			if !errors.Is(err, e) {
				t.Errorf("code %s does not match %v", tc.code, e)
			}
		}
		for _, e := range tc.not {
			if errors.Is(err, e) {
				t.Errorf("code %s matches %v", tc.code, e)
			}
		}
	}
	for _, tc := range []struct {
		err  error
		want Code
	}{
		{fmt.Errorf("%w: x", ErrWrongCluster), CodeWrongCluster},
		{fmt.Errorf("%w: x", ErrStaleMember), CodeStaleMember},
		{fmt.Errorf("%w: x", ErrVersionMismatch), CodeVersionMismatch},
		{errors.New("other"), CodeRefused},
	} {
		if got := RefusalCode(tc.err); got != tc.want {
			t.Errorf("RefusalCode(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	if c, m := HandlerErrorCode(&RemoteError{Code: CodeNotFound, Message: "k"}); c != CodeNotFound || m != "k" {
		t.Errorf("HandlerErrorCode kept %s %q", c, m)
	}
	// A handler cannot send a connection-level code.
	if c, _ := HandlerErrorCode(&RemoteError{Code: CodeStaleMember, Message: "k"}); c != CodeHandler {
		t.Errorf("HandlerErrorCode let a handler send %s", c)
	}
}

func TestVerifyCluster(t *testing.T) {
	v := VerifyCluster(Identity{ClusterName: "a"})
	if err := v(Identity{ClusterName: "a"}); err != nil {
		t.Fatal(err)
	}
	err := v(Identity{ClusterName: "b", InstanceKey: "k"})
	if !errors.Is(err, ErrWrongCluster) || !strings.Contains(err.Error(), `"b"`) || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("VerifyCluster: %v", err)
	}
}

func TestHelloLimits(t *testing.T) {
	_, err := AppendHello(nil, Hello{Identity: Identity{InstanceKey: strings.Repeat("k", MaxIdentityField+1)}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("an oversize instance key: %v", err)
	}
	p, err := AppendHello(nil, Hello{Identity: Identity{
		ClusterName: strings.Repeat("c", MaxIdentityField), InstanceKey: strings.Repeat("k", MaxIdentityField), Role: strings.Repeat("r", MaxIdentityField),
	}})
	if err != nil || len(p) > MaxHelloSize {
		t.Fatalf("the largest hello is %d bytes (limit %d), %v", len(p), MaxHelloSize, err)
	}
}
