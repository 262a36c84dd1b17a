package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Parser limits that are not options.
const (
	// maxHeaderLine bounds a "*N" or "$N" line, as Redis's PROTO_INLINE_MAX_SIZE
	// does; any valid one is far shorter.
	maxHeaderLine = 64 << 10
	// readChunk is how much a bulk buffer grows ahead of the bytes actually
	// received, so a client that declares a huge length and sends nothing
	// costs at most this much.
	readChunk = 64 << 10
	// arenaKeep is the largest argument buffer kept between commands; a
	// bigger one (after a large MSET, say) is dropped so an idle connection
	// does not pin it.
	arenaKeep = 1 << 20
)

// ErrProtocol is matched (errors.Is) by every error the parser returns for
// malformed input; the stream is then out of sync and is abandoned.
var ErrProtocol = errors.New("protocol error")

// protocolError is malformed input; detail is what the client is told after
// "-ERR Protocol error: ", in Redis's words where Redis has them.
type protocolError struct{ detail string }

func (e *protocolError) Error() string        { return "protocol error: " + e.detail }
func (e *protocolError) Is(target error) bool { return target == ErrProtocol }

func protoErr(format string, args ...any) error {
	return &protocolError{detail: fmt.Sprintf(format, args...)}
}

// protocolReply is the error reply for a parser error, as Redis words it.
func protocolReply(err error) string {
	var pe *protocolError
	if errors.As(err, &pe) {
		return "ERR Protocol error: " + pe.detail
	}
	return "ERR Protocol error: " + err.Error()
}

// limits bound what one command may make the parser hold.
type limits struct {
	maxBulk   int64 // longest bulk string
	maxArgs   int   // most arguments in one multibulk command
	maxInline int   // longest inline command line
	maxQuery  int64 // most argument bytes of one command held in memory
}

// bulkSink lets the caller place a large bulk argument itself, for example
// straight into a store reservation. It is called with the arguments read so
// far, the declared length n and whether this is the command's last argument.
// It returns a buffer of exactly n bytes to fill, or skip=true to have the
// bytes read and dropped (the caller has recorded why), or neither to let the
// parser keep them.
type bulkSink func(args [][]byte, n int, last bool) (dst []byte, skip bool)

// parser reads RESP2 commands, multibulk or inline, from a buffered stream.
// It validates every length before it allocates and never holds more than
// the limits allow. Arguments returned by next stay valid until the next call.
type parser struct {
	br  *bufio.Reader
	lim limits

	// sink, when set, is offered every bulk of at least sinkMin bytes.
	sink    bulkSink
	sinkMin int

	buf   []byte // the arena holding this command's arguments
	spans []span // where each argument lives
	args  [][]byte
	line  []byte // scratch for lines longer than the bufio buffer
}

// span is one argument: a range of the arena, or a buffer the sink supplied.
type span struct {
	start, end int
	ext        []byte
	isExt      bool
}

func newParser(br *bufio.Reader, lim limits) *parser {
	return &parser{br: br, lim: lim}
}

// next returns the next command's arguments (never zero of them). It returns
// io.EOF at a clean end of input, io.ErrUnexpectedEOF when input ends inside
// a command, an error wrapping ErrProtocol for malformed input (the stream is
// then out of sync and must be abandoned), or the reader's error.
func (p *parser) next() ([][]byte, error) {
	if cap(p.buf) > arenaKeep {
		p.buf = nil
	}
	if cap(p.line) > maxHeaderLine {
		p.line = nil
	}
	for {
		p.buf, p.spans = p.buf[:0], p.spans[:0]
		b, err := p.br.Peek(1)
		if err != nil {
			return nil, err
		}
		if b[0] == '*' {
			err = p.multibulk()
		} else {
			err = p.inline()
		}
		if err != nil {
			return nil, err
		}
		if len(p.spans) > 0 {
			return p.materialize(), nil
		}
		// "*0", "*-1" and blank lines are no commands; Redis skips them too.
	}
}

func (p *parser) materialize() [][]byte {
	p.args = p.args[:0]
	for _, s := range p.spans {
		if s.isExt {
			p.args = append(p.args, s.ext)
		} else {
			p.args = append(p.args, p.buf[s.start:s.end:s.end])
		}
	}
	return p.args
}

// readLine returns the next line without its "\n", reading at most limit
// bytes; longer lines are a protocol error with the given text. It returns
// io.ErrUnexpectedEOF when input ends before the "\n".
func (p *parser) readLine(limit int, tooBig string) ([]byte, error) {
	line, err := p.br.ReadSlice('\n')
	if err == nil {
		if len(line) > limit+1 {
			return nil, protoErr("%s", tooBig)
		}
		return line[:len(line)-1], nil
	}
	// The line is longer than the bufio buffer: gather it.
	p.line = append(p.line[:0], line...)
	for errors.Is(err, bufio.ErrBufferFull) {
		if len(p.line) > limit {
			return nil, protoErr("%s", tooBig)
		}
		line, err = p.br.ReadSlice('\n')
		p.line = append(p.line, line...)
	}
	if err != nil {
		if len(p.line) > limit {
			return nil, protoErr("%s", tooBig)
		}
		return nil, unexpected(err)
	}
	if len(p.line) > limit+1 {
		return nil, protoErr("%s", tooBig)
	}
	return p.line[:len(p.line)-1], nil
}

// unexpected turns an end of input inside a command into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// header reads a "*N" or "$N" line (the caller has checked the first byte)
// and returns N; ok is false when N is not a canonical decimal integer
// followed by "\r\n".
func (p *parser) header(tooBig string) (n int64, ok bool, err error) {
	line, err := p.readLine(maxHeaderLine, tooBig)
	if err != nil {
		return 0, false, err
	}
	if len(line) < 2 || line[len(line)-1] != '\r' {
		return 0, false, nil
	}
	n, ok = parseInt(line[1 : len(line)-1])
	return n, ok, nil
}

func (p *parser) multibulk() error {
	n, ok, err := p.header("too big mbulk count string")
	if err != nil {
		return err
	}
	if !ok || n > int64(p.lim.maxArgs) {
		return protoErr("invalid multibulk length")
	}
	if n <= 0 {
		return nil
	}
	var held int64 // argument bytes in the arena
	for i := range int(n) {
		b, err := p.br.Peek(1)
		if err != nil {
			return unexpected(err)
		}
		if b[0] != '$' {
			return protoErr("expected '$', got '%s'", b[:1])
		}
		l, ok, err := p.header("too big bulk count string")
		if err != nil {
			return unexpected(err)
		}
		if !ok || l < 0 || l > p.lim.maxBulk {
			return protoErr("invalid bulk length")
		}
		if err := p.bulk(int(l), i == int(n)-1, &held); err != nil {
			return err
		}
	}
	return nil
}

// bulk reads one bulk string's n bytes and its "\r\n".
func (p *parser) bulk(n int, last bool, held *int64) error {
	if p.sink != nil && n >= p.sinkMin {
		dst, skip := p.sink(p.materialize(), n, last)
		switch {
		case dst != nil:
			if len(dst) != n {
				panic(fmt.Sprintf("resp: bulk sink returned %d bytes for a bulk of %d", len(dst), n))
			}
			if _, err := io.ReadFull(p.br, dst); err != nil {
				return unexpected(err)
			}
			p.spans = append(p.spans, span{ext: dst, isExt: true})
			return p.crlf()
		case skip:
			if _, err := p.br.Discard(n); err != nil {
				return unexpected(err)
			}
			p.spans = append(p.spans, span{ext: []byte{}, isExt: true})
			return p.crlf()
		}
	}
	if *held+int64(n) > p.lim.maxQuery {
		return protoErr("command longer than %d bytes", p.lim.maxQuery)
	}
	*held += int64(n)
	start := len(p.buf)
	for got := 0; got < n; {
		// Grow by what is missing, but never far ahead of what arrived.
		step := min(n-got, max(readChunk, got))
		at := len(p.buf)
		p.buf = slices.Grow(p.buf, step)[:at+step]
		if _, err := io.ReadFull(p.br, p.buf[at:]); err != nil {
			return unexpected(err)
		}
		got += step
	}
	p.spans = append(p.spans, span{start: start, end: len(p.buf)})
	return p.crlf()
}

func (p *parser) crlf() error {
	b, err := p.br.Peek(2)
	if err != nil {
		if len(b) == 1 && b[0] != '\r' {
			return protoErr("bulk string not terminated by CRLF")
		}
		return unexpected(err)
	}
	if b[0] != '\r' || b[1] != '\n' {
		return protoErr("bulk string not terminated by CRLF")
	}
	_, _ = p.br.Discard(2)
	return nil
}

// inline reads a command written as a line of words (telnet style), split
// as Redis's sdssplitargs does: "double quotes" with \n \r \t \b \a \xHH and
// \\ escapes, 'single quotes' with \' escapes.
func (p *parser) inline() error {
	line, err := p.readLine(p.lim.maxInline, "too big inline request")
	if err != nil {
		return err
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if !splitArgs(line, &p.buf, &p.spans) {
		p.spans = p.spans[:0]
		return protoErr("unbalanced quotes in request")
	}
	return nil
}

// splitArgs appends the words of line to buf and their spans to spans, as
// Redis's sdssplitargs splits them, and reports false for unbalanced quotes.
// Unlike Redis, which stops at a NUL byte, a NUL is an ordinary byte here.
func splitArgs(line []byte, buf *[]byte, spans *[]span) bool {
	n := len(line)
	for i := 0; ; {
		for i < n && isSpace(line[i]) {
			i++
		}
		if i == n {
			return true
		}
		start := len(*buf)
		inDQ, inSQ := false, false
		for done := false; !done; i++ {
			if i == n {
				if inDQ || inSQ {
					return false
				}
				break
			}
			c := line[i]
			switch {
			case inDQ:
				switch {
				case c == '\\' && i+3 < n && line[i+1] == 'x' && isHex(line[i+2]) && isHex(line[i+3]):
					*buf = append(*buf, unhex(line[i+2])<<4|unhex(line[i+3]))
					i += 3
				case c == '\\' && i+1 < n:
					i++
					*buf = append(*buf, unescape(line[i]))
				case c == '"':
					// The closing quote must end the word.
					if i+1 < n && !isSpace(line[i+1]) {
						return false
					}
					done = true
				default:
					*buf = append(*buf, c)
				}
			case inSQ:
				switch {
				case c == '\\' && i+1 < n && line[i+1] == '\'':
					i++
					*buf = append(*buf, '\'')
				case c == '\'':
					if i+1 < n && !isSpace(line[i+1]) {
						return false
					}
					done = true
				default:
					*buf = append(*buf, c)
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t':
					done = true
				case '"':
					inDQ = true
				case '\'':
					inSQ = true
				default:
					*buf = append(*buf, c)
				}
			}
		}
		*spans = append(*spans, span{start: start, end: len(*buf)})
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}

// parseInt parses a canonical decimal int64 as Redis's string2ll does: an
// optional '-', no '+', no leading zeros, no spaces, no overflow.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return -int64(v), true
	}
	if v > 1<<63-1 {
		return 0, false
	}
	return int64(v), true
}
