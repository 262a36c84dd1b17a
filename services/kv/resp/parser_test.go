package resp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// fuzzLimits are small so the fuzzer reaches every limit.
var fuzzLimits = limits{maxBulk: 1 << 16, maxArgs: 64, maxInline: 256, maxQuery: 1 << 17}

type parsed struct {
	cmds [][]string
	err  error
}

// parseAll parses in to the end. bufSize is the bufio buffer size; oneByte
// feeds the parser one byte per read; sink, when set, takes bulks of 4 bytes
// or more into buffers of its own.
func parseAll(in []byte, lim limits, bufSize int, oneByte, sink bool) (parsed, *parser) {
	var r io.Reader = bytes.NewReader(in)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	p := newParser(bufio.NewReaderSize(r, bufSize), lim)
	if sink {
		p.sink, p.sinkMin = func(_ [][]byte, n int, _ bool) ([]byte, bool) { return make([]byte, n), false }, 4
	}
	var out parsed
	for {
		args, err := p.next()
		if err != nil {
			out.err = err
			return out, p
		}
		cmd := make([]string, len(args))
		for i, a := range args {
			cmd[i] = string(a)
		}
		out.cmds = append(out.cmds, cmd)
	}
}

func encode(cmd []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(cmd))
	for _, a := range cmd {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.Bytes()
}

// sameErr compares parse outcomes: the same sentinel, and for protocol
// errors the same text.
func sameErr(a, b error) bool {
	if errors.Is(a, ErrProtocol) || errors.Is(b, ErrProtocol) {
		return a != nil && b != nil && a.Error() == b.Error()
	}
	return errors.Is(a, io.EOF) == errors.Is(b, io.EOF) && errors.Is(a, io.ErrUnexpectedEOF) == errors.Is(b, io.ErrUnexpectedEOF)
}

func checkParse(t *testing.T, in []byte) {
	base, p := parseAll(in, fuzzLimits, 4096, false, false)
	err := base.err
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
		t.Fatalf("unexpected error kind: %v", err)
	}
	if errors.Is(err, ErrProtocol) && !strings.HasPrefix(protocolReply(err), "ERR Protocol error: ") {
		t.Fatalf("protocol error reply %q", protocolReply(err))
	}
	// Memory follows the input, never the lengths it declares.
	if limit := 2 * (len(in) + readChunk); cap(p.buf) > limit || cap(p.spans) > len(in)+16 {
		t.Fatalf("parser holds %d arena bytes and %d spans for %d input bytes", cap(p.buf), cap(p.spans), len(in))
	}
	for _, cmd := range base.cmds {
		if len(cmd) == 0 || len(cmd) > max(fuzzLimits.maxArgs, fuzzLimits.maxInline) {
			t.Fatalf("command with %d arguments", len(cmd))
		}
		for _, a := range cmd {
			if int64(len(a)) > fuzzLimits.maxBulk {
				t.Fatalf("argument of %d bytes", len(a))
			}
		}
		// A command re-encoded as multibulk parses back to itself.
		again, _ := parseAll(encode(cmd), fuzzLimits, 4096, false, false)
		if len(again.cmds) != 1 || !slices.Equal(again.cmds[0], cmd) || !errors.Is(again.err, io.EOF) {
			t.Fatalf("round trip of %q gave %q, %v", cmd, again.cmds, again.err)
		}
	}
	// How the input is cut into reads, the buffer size and the bulk sink
	// change nothing.
	for _, v := range []struct {
		bufSize       int
		oneByte, sink bool
	}{{16, true, false}, {16, false, true}, {4096, true, true}} {
		got, _ := parseAll(in, fuzzLimits, v.bufSize, v.oneByte, v.sink)
		if !slices.EqualFunc(got.cmds, base.cmds, slices.Equal) || !sameErr(got.err, base.err) {
			t.Fatalf("with %+v: %q, %v; want %q, %v", v, got.cmds, got.err, base.cmds, base.err)
		}
	}
}

// FuzzParse feeds the parser arbitrary input. It must never panic, return
// only clean errors (end of input or ErrProtocol), hold memory in proportion
// to the input, and give the same commands however the input is cut.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"PING\r\nECHO \"a\\x41\"\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n",
		"*2\r\n$4\r\nECHO\r\n$65536\r\nab",
		"*-1\r\n*0\r\n\r\n",
		"*1\r\n*1\r\n$4\r\nPING\r\n",
		"SET k 'it\\'s'\r\n",
		"*1\r\n$9223372036854775807\r\n",
	} {
		f.Add([]byte(s))
	}
	// Every request in the protocol test files.
	files, _ := filepath.Glob("testdata/*.txt")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i < len(lines); i++ {
			if lines[i] != "request" {
				continue
			}
			var in []string
			for i++; i < len(lines) && lines[i] != "----"; i++ {
				in = append(in, lines[i])
			}
			if b, err := unescapeInput(in); err == nil && len(b) < 4096 {
				f.Add(b)
			}
		}
	}
	f.Fuzz(checkParse)
}

// TestParserAllocationBounded: declared sizes and counts cost nothing until
// the bytes arrive.
func TestParserAllocationBounded(t *testing.T) {
	lim := limits{maxBulk: 1 << 30, maxArgs: 1 << 20, maxInline: 1 << 16, maxQuery: 1 << 31}
	in := "*1\r\n$536870912\r\n" + strings.Repeat("x", 1000)
	got, p := parseAll([]byte(in), lim, 4096, false, false)
	if !errors.Is(got.err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", got.err)
	}
	if cap(p.buf) > readChunk {
		t.Fatalf("a 512 MiB claim with 1000 bytes sent made the parser hold %d bytes", cap(p.buf))
	}

	in = "*1048576\r\n" + strings.Repeat("$0\r\n\r\n", 3)
	got, p = parseAll([]byte(in), lim, 4096, false, false)
	if !errors.Is(got.err, io.ErrUnexpectedEOF) || cap(p.spans) > 64 {
		t.Fatalf("err = %v, %d spans held for 3 arguments sent", got.err, cap(p.spans))
	}

	// A big argument streams in, chunk by chunk, and its buffer is not kept
	// for the next command.
	big := strings.Repeat("y", 3<<20)
	in = string(encode([]string{"ECHO", big})) + "PING\r\n"
	p = newParser(bufio.NewReaderSize(strings.NewReader(in), 4096), lim)
	args, err := p.next()
	if err != nil || string(args[1]) != big {
		t.Fatalf("big ECHO: %v", err)
	}
	if cap(p.buf) > 2*len(big) {
		t.Fatalf("arena of %d bytes for a %d byte argument", cap(p.buf), len(big))
	}
	if args, err = p.next(); err != nil || string(args[0]) != "PING" {
		t.Fatalf("PING after the big ECHO: %q %v", args, err)
	}
	if cap(p.buf) > arenaKeep {
		t.Fatalf("the big argument's %d byte arena was kept", cap(p.buf))
	}
}

func TestParseInt(t *testing.T) {
	for _, tt := range []struct {
		in string
		n  int64
		ok bool
	}{
		{"0", 0, true}, {"1", 1, true}, {"-1", -1, true}, {"123", 123, true},
		{"9223372036854775807", 1<<63 - 1, true}, {"-9223372036854775808", -1 << 63, true},
		{"9223372036854775808", 0, false}, {"-9223372036854775809", 0, false},
		{"18446744073709551616", 0, false}, {"99999999999999999999", 0, false},
		{"", 0, false}, {"-", 0, false}, {"+1", 0, false}, {"01", 0, false}, {"-0", 0, false},
		{" 1", 0, false}, {"1 ", 0, false}, {"1a", 0, false}, {"0x10", 0, false},
	} {
		n, ok := parseInt([]byte(tt.in))
		if n != tt.n || ok != tt.ok {
			t.Errorf("parseInt(%q) = %d, %v; want %d, %v", tt.in, n, ok, tt.n, tt.ok)
		}
	}
}
