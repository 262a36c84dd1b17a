// Package respclient is a minimal RESP2 (Redis protocol) client for the
// benchmarks: one connection, commands buffered with Send and written with
// Flush (so several can be pipelined), replies read in order with Receive.
// Large values travel without an intermediate copy in either direction: Set
// writes the caller's slice to the socket, and GetInto reads the bulk reply
// straight into the caller's buffer.
//
// It is not a general Redis client: no RESP3, no pub/sub, no cluster
// redirections, no reconnects. A Conn is not safe for concurrent use.
package respclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Buffer sizes and limits.
const (
	// bufSize is the read and write buffer of a connection. Bulk payloads at
	// least this large bypass the buffers.
	bufSize = 64 << 10
	// MaxBulk bounds a bulk reply's announced length (Redis's own default
	// proto-max-bulk-len is 512 MB); a longer one is a protocol error.
	MaxBulk = 1 << 30
	// maxArray bounds an array reply's announced length.
	maxArray = 1 << 24
	// maxDepth bounds the nesting of array replies.
	maxDepth = 8
	// maxLine bounds a status, error or length line.
	maxLine = 64 << 10
)

var (
	// ErrNil is returned by GetInto for a missing key (a nil bulk reply).
	ErrNil = errors.New("respclient: nil reply")
	// ErrProtocol reports a reply that is not well-formed RESP2.
	ErrProtocol = errors.New("respclient: protocol error")
)

// ServerError is an error reply from the server ("-ERR ..."), as opposed to
// an I/O or protocol failure. The connection stays usable after one.
type ServerError string

func (e ServerError) Error() string { return "redis: " + string(e) }

// Kind is the type of a reply.
type Kind byte

// Reply kinds, named by their RESP2 prefix.
const (
	KindStatus  Kind = '+'
	KindError   Kind = '-'
	KindInteger Kind = ':'
	KindBulk    Kind = '$'
	KindArray   Kind = '*'
)

// Reply is one parsed reply. Nil is set for a nil bulk ($-1) and a nil
// array (*-1).
type Reply struct {
	Kind  Kind
	Nil   bool
	Str   string // status, error
	Int   int64  // integer
	Bulk  []byte // bulk string (a fresh slice)
	Array []Reply
}

// Err returns the reply as an error if it is an error reply.
func (r Reply) Err() error {
	if r.Kind == KindError {
		return ServerError(r.Str)
	}
	return nil
}

// Conn is one RESP2 connection.
type Conn struct {
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	stop func() bool
	hdr  []byte // scratch for command headers
	line []byte // scratch for lines longer than the read buffer
}

// Dial connects to addr (host:port). Cancelling ctx after Dial returns
// interrupts any call blocked on the connection (it fails with a deadline
// error), so a benchmark stops promptly on Ctrl-C.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &Conn{nc: nc, r: bufio.NewReaderSize(nc, bufSize), w: bufio.NewWriterSize(nc, bufSize)}
	c.stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	return c, nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.stop()
	return c.nc.Close()
}

// Send buffers one command; Flush writes it. Arguments are written as bulk
// strings; a []byte argument of bufSize or more goes to the socket without
// being copied into the buffer.
func (c *Conn) Send(args ...[]byte) error {
	c.hdr = append(c.hdr[:0], '*')
	c.hdr = strconv.AppendInt(c.hdr, int64(len(args)), 10)
	c.hdr = append(c.hdr, '\r', '\n')
	if _, err := c.w.Write(c.hdr); err != nil {
		return err
	}
	for _, a := range args {
		c.hdr = append(c.hdr[:0], '$')
		c.hdr = strconv.AppendInt(c.hdr, int64(len(a)), 10)
		c.hdr = append(c.hdr, '\r', '\n')
		if _, err := c.w.Write(c.hdr); err != nil {
			return err
		}
		if _, err := c.w.Write(a); err != nil {
			return err
		}
		if _, err := c.w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	return nil
}

// SendStrings is Send for string arguments.
func (c *Conn) SendStrings(args ...string) error {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	return c.Send(b...)
}

// Flush writes every buffered command.
func (c *Conn) Flush() error { return c.w.Flush() }

// Receive reads the next reply. An error reply is returned as a Reply of
// KindError with a nil error: pipelined callers decide per reply.
func (c *Conn) Receive() (Reply, error) { return c.readReply(0) }

// Do sends one command and reads its reply; an error reply becomes a
// ServerError.
func (c *Conn) Do(args ...string) (Reply, error) {
	if err := c.SendStrings(args...); err != nil {
		return Reply{}, err
	}
	if err := c.Flush(); err != nil {
		return Reply{}, err
	}
	r, err := c.Receive()
	if err != nil {
		return r, err
	}
	return r, r.Err()
}

// Ping checks the server answers PONG.
func (c *Conn) Ping() error {
	r, err := c.Do("PING")
	if err != nil {
		return err
	}
	if r.Kind != KindStatus || r.Str != "PONG" {
		return fmt.Errorf("%w: PING answered %c%q", ErrProtocol, r.Kind, r.Str)
	}
	return nil
}

// Set stores value under key (SET key value) and waits for +OK.
func (c *Conn) Set(key string, value []byte) error {
	if err := c.Send([]byte("SET"), []byte(key), value); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return err
	}
	return c.expectOK()
}

func (c *Conn) expectOK() error {
	r, err := c.Receive()
	if err != nil {
		return err
	}
	if err := r.Err(); err != nil {
		return err
	}
	if r.Kind != KindStatus || r.Str != "OK" {
		return fmt.Errorf("%w: expected +OK, got %c", ErrProtocol, r.Kind)
	}
	return nil
}

// GetInto reads key (GET key) into buf, growing it if it is too small, and
// returns the value (a prefix of buf or of its replacement). A missing key
// gives ErrNil.
func (c *Conn) GetInto(key string, buf []byte) ([]byte, error) {
	if err := c.Send([]byte("GET"), []byte(key)); err != nil {
		return buf[:0], err
	}
	if err := c.Flush(); err != nil {
		return buf[:0], err
	}
	return c.ReceiveBulkInto(buf)
}

// ReceiveBulkInto reads the next reply, which must be a bulk string (or
// nil: ErrNil; or an error reply: ServerError), into buf, growing it if
// needed. Bulks of bufSize or more are read from the socket straight into
// buf.
func (c *Conn) ReceiveBulkInto(buf []byte) ([]byte, error) {
	line, err := c.readLine()
	if err != nil {
		return buf[:0], err
	}
	switch line[0] {
	case '$':
	case '-':
		return buf[:0], ServerError(line[1:])
	default:
		return buf[:0], fmt.Errorf("%w: expected a bulk reply, got %q", ErrProtocol, truncate(line))
	}
	n, err := parseLen(line[1:], MaxBulk)
	if err != nil {
		return buf[:0], err
	}
	if n < 0 {
		return buf[:0], ErrNil
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return buf[:0], err
	}
	return buf, c.readCRLF()
}

func (c *Conn) readCRLF() error {
	var crlf [2]byte
	if _, err := io.ReadFull(c.r, crlf[:]); err != nil {
		return err
	}
	if crlf != [2]byte{'\r', '\n'} {
		return fmt.Errorf("%w: bulk not followed by CRLF", ErrProtocol)
	}
	return nil
}

// readLine returns one line without its CRLF. The slice is valid until the
// next read.
func (c *Conn) readLine() (string, error) {
	b, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A line longer than the buffer (a long error message): gather it.
		c.line = append(c.line[:0], b...)
		for errors.Is(err, bufio.ErrBufferFull) && len(c.line) <= maxLine {
			b, err = c.r.ReadSlice('\n')
			c.line = append(c.line, b...)
		}
		if len(c.line) > maxLine {
			return "", fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, maxLine)
		}
		b = c.line
	}
	if err != nil {
		return "", err
	}
	if len(b) < 3 || b[len(b)-2] != '\r' {
		return "", fmt.Errorf("%w: malformed line %q", ErrProtocol, truncate(string(b)))
	}
	return string(b[:len(b)-2]), nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// parseLen parses a bulk or array length: -1 (nil) or 0..limit.
func parseLen(s string, limit int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 || n > limit {
		return 0, fmt.Errorf("%w: bad length %q", ErrProtocol, truncate(s))
	}
	return n, nil
}

func (c *Conn) readReply(depth int) (Reply, error) {
	if depth > maxDepth {
		return Reply{}, fmt.Errorf("%w: arrays nested deeper than %d", ErrProtocol, maxDepth)
	}
	line, err := c.readLine()
	if err != nil {
		return Reply{}, err
	}
	r := Reply{Kind: Kind(line[0])}
	switch r.Kind {
	case KindStatus, KindError:
		r.Str = line[1:]
	case KindInteger:
		if r.Int, err = strconv.ParseInt(line[1:], 10, 64); err != nil {
			return r, fmt.Errorf("%w: bad integer %q", ErrProtocol, truncate(line))
		}
	case KindBulk:
		n, err := parseLen(line[1:], MaxBulk)
		if err != nil {
			return r, err
		}
		if n < 0 {
			r.Nil = true
			return r, nil
		}
		r.Bulk = make([]byte, n)
		if _, err := io.ReadFull(c.r, r.Bulk); err != nil {
			return r, err
		}
		return r, c.readCRLF()
	case KindArray:
		n, err := parseLen(line[1:], maxArray)
		if err != nil {
			return r, err
		}
		if n < 0 {
			r.Nil = true
			return r, nil
		}
		r.Array = make([]Reply, n)
		for i := range r.Array {
			if r.Array[i], err = c.readReply(depth + 1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // the array was cut short
				}
				return r, err
			}
		}
	default:
		return r, fmt.Errorf("%w: unknown reply type %q", ErrProtocol, truncate(line))
	}
	return r, nil
}
