package resp

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/*.txt")

// A protocol test file (testdata/*.txt) is a list of cases run in order
// against one server over one fresh store, whose clock moves only when told:
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
//	request       send the input lines (escaped bytes, concatenated) on a
//	              new connection, half-close it and read every reply until
//	              the server closes; the output is the raw reply bytes,
//	              escaped, one line per "\n"
//	advance <d>   move the store's clock by the duration d
//	reap          run the store's lease reaper once
//	server k=v …  restart the server with options max-bulk, max-args,
//	              max-inline, max-query, max-clients (the store is kept)
//	kv-put <key> <value> [ttl=<d>]  put straight into the kv store
//	kv-get <key>  read straight from the kv store
//
// Escapes in input and output: \r \n \t \\ \xHH. An input line
// "@repeat N <text>" stands for text repeated N times.
//
// Every file runs twice on fresh stores: once sending each request in one
// write and once in small pieces, which must not change any reply. With
// -rewrite the first run's output replaces the expected output.
func TestProtocol(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no protocol test files: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			for _, split := range []bool{false, true} {
				name := "whole"
				if split {
					name = "split"
				}
				t.Run(name, func(t *testing.T) {
					// Parsed per run: with -rewrite the split run checks
					// against what the whole run wrote.
					runCases(t, f, parseCases(t, f), split, *rewrite && !split)
				})
			}
		})
	}
}

type ddCase struct {
	pos      string   // file:line of the directive
	head     []string // comment, directive and input lines, verbatim
	cmd      string
	args     []string
	input    []string
	expected string
	actual   string
}

func parseCases(t *testing.T, path string) []*ddCase {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var cases []*ddCase
	var head []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" || strings.HasPrefix(l, "#") {
			head = append(head, l)
			continue
		}
		c := &ddCase{pos: fmt.Sprintf("%s:%d", path, i+1), head: append(head, l)}
		head = nil
		f := strings.Fields(l)
		c.cmd, c.args = f[0], f[1:]
		for i++; i < len(lines) && lines[i] != "----"; i++ {
			c.head = append(c.head, lines[i])
			c.input = append(c.input, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s: no ---- after the input", c.pos)
		}
		c.head = append(c.head, "----")
		var out []string
		for i++; i < len(lines) && lines[i] != ""; i++ {
			out = append(out, lines[i])
		}
		c.expected = strings.Join(out, "\n")
		cases = append(cases, c)
	}
	return cases
}

func runCases(t *testing.T, path string, cases []*ddCase, split, rewriteFile bool) {
	clock := newFakeClock()
	st := newStore(t, clock.Now)
	var addr net.Addr
	var stop func()
	start := func(o Options) {
		if stop != nil {
			stop()
		}
		o.Log = quietLog()
		s := NewServer(st, o)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr()
		done := make(chan error, 1)
		go func() { done <- s.Serve(ln) }()
		stop = func() {
			s.Close()
			<-done
		}
	}
	start(Options{})
	defer func() { stop() }()

	for _, c := range cases {
		var out string
		switch c.cmd {
		case "request":
			in, err := unescapeInput(c.input)
			if err != nil {
				t.Fatalf("%s: %v", c.pos, err)
			}
			out = escapeOutput(roundTrip(t, addr, in, split))
		case "advance":
			d, err := time.ParseDuration(c.args[0])
			if err != nil {
				t.Fatalf("%s: %v", c.pos, err)
			}
			clock.Advance(d)
			out = "ok"
		case "reap":
			st.ExpireLeases()
			out = "ok"
		case "server":
			var o Options
			for _, a := range c.args {
				k, v, _ := strings.Cut(a, "=")
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatalf("%s: %v", c.pos, err)
				}
				switch k {
				case "max-bulk":
					o.MaxBulkLen = n
				case "max-args":
					o.MaxArgs = int(n)
				case "max-inline":
					o.MaxInlineLen = int(n)
				case "max-query":
					o.MaxQueryLen = n
				case "max-clients":
					o.MaxClients = int(n)
				default:
					t.Fatalf("%s: unknown server option %q", c.pos, k)
				}
			}
			start(o)
			out = "ok"
		case "kv-put":
			out = kvPut(st, c.args)
		case "kv-get":
			b, _, err := st.GetCopy(c.args[0], nil)
			if err != nil {
				out = "error: " + err.Error()
			} else {
				out = escapeOutput(b)
			}
		default:
			t.Fatalf("%s: unknown directive %q", c.pos, c.cmd)
		}
		c.actual = out
		if !rewriteFile && out != c.expected {
			t.Errorf("%s: %s\n got:\n%s\nwant:\n%s", c.pos, strings.Join(c.head, "\n"), out, c.expected)
		}
	}
	if rewriteFile {
		var b strings.Builder
		for _, c := range cases {
			for _, l := range c.head {
				b.WriteString(l + "\n")
			}
			if c.actual != "" {
				b.WriteString(c.actual + "\n")
			}
			b.WriteString("\n")
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func kvPut(st *kv.Store, args []string) string {
	var o kv.PutOptions
	for _, a := range args[2:] {
		if v, ok := strings.CutPrefix(a, "ttl="); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				return "error: " + err.Error()
			}
			o.TTL = d
		}
	}
	value, err := unescape1(args[1])
	if err != nil {
		return "error: " + err.Error()
	}
	if _, err := st.Put(context.Background(), args[0], value, o); err != nil {
		return "error: " + err.Error()
	}
	return "ok"
}

// roundTrip sends in on a new connection, half-closes it and returns every
// byte the server sends until it closes the connection.
func roundTrip(t *testing.T, addr net.Addr, in []byte, split bool) []byte {
	nc, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(waitLimit))
	go func() {
		// Write errors only mean the server closed early (a protocol error);
		// the replies tell.
		w := nc.(*net.TCPConn)
		if !split {
			_, _ = w.Write(in)
		} else {
			for i, n := 0, 0; i < len(in); i += n {
				n = min(1+i%5, len(in)-i) // pieces of 1 to 5 bytes
				if len(in) > 4<<10 {
					n = min(1021, len(in)-i)
				}
				if _, err := w.Write(in[i : i+n]); err != nil {
					break
				}
			}
		}
		_ = w.CloseWrite()
	}()
	out, err := io.ReadAll(bufio.NewReader(nc))
	if err != nil {
		t.Fatalf("reading replies: %v (after %q)", err, out)
	}
	return out
}

func unescapeInput(lines []string) ([]byte, error) {
	var out []byte
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "@repeat "); ok {
			ns, text, _ := strings.Cut(rest, " ")
			n, err := strconv.Atoi(ns)
			if err != nil {
				return nil, fmt.Errorf("bad @repeat count in %q", l)
			}
			b, err := unescape1(text)
			if err != nil {
				return nil, err
			}
			out = append(out, bytes.Repeat(b, n)...)
			continue
		}
		b, err := unescape1(l)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

func unescape1(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		if i+1 == len(s) {
			return nil, fmt.Errorf("dangling backslash in %q", s)
		}
		i++
		switch s[i] {
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case '\\':
			out = append(out, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("short \\x escape in %q", s)
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad \\x escape in %q", s)
			}
			out = append(out, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("unknown escape \\%c in %q", s[i], s)
		}
	}
	return out, nil
}

// escapeOutput escapes b, one line per "\n".
func escapeOutput(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		switch {
		case c == '\r':
			sb.WriteString(`\r`)
		case c == '\n':
			sb.WriteString(`\n`)
			if i != len(b)-1 {
				sb.WriteByte('\n')
			}
		case c == '\t':
			sb.WriteString(`\t`)
		case c == '\\':
			sb.WriteString(`\\`)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&sb, `\x%02x`, c)
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}
