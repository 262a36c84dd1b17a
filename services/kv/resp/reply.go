package resp

import (
	"bufio"
	"strconv"
)

// replier writes RESP2 replies into a connection's buffered writer. Errors
// stick in the bufio.Writer and surface at the next flush.
type replier struct {
	w       *bufio.Writer
	scratch [32]byte
}

func (r *replier) simple(s string) {
	r.w.WriteByte('+')
	r.w.WriteString(s)
	r.w.WriteString("\r\n")
}

// error writes "-" and msg, which must start with an error code ("ERR ...",
// "OOM ..."). CR and LF become spaces so a message can never break framing.
func (r *replier) error(msg string) {
	r.w.WriteByte('-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		r.w.WriteByte(c)
	}
	r.w.WriteString("\r\n")
}

func (r *replier) int(n int64) { r.prefixed(':', n) }

func (r *replier) arrayLen(n int) { r.prefixed('*', int64(n)) }

func (r *replier) bulk(b []byte) {
	r.prefixed('$', int64(len(b)))
	r.w.Write(b)
	r.w.WriteString("\r\n")
}

func (r *replier) bulkString(s string) {
	r.prefixed('$', int64(len(s)))
	r.w.WriteString(s)
	r.w.WriteString("\r\n")
}

func (r *replier) nilBulk() { r.w.WriteString("$-1\r\n") }

func (r *replier) ok() { r.w.WriteString("+OK\r\n") }

func (r *replier) prefixed(c byte, n int64) {
	b := append(r.scratch[:0], c)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, '\r', '\n')
	r.w.Write(b)
}
