//go:build unix

package tcp

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

const busyPollSupported = true

// rawReader is a busy_poll connection's TryRead: one non-blocking read(2)
// on the raw fd (framed does the spinning). Only the goroutine that holds
// the connection's reading role calls it.
type rawReader struct {
	rc  syscall.RawConn
	try func(fd uintptr) bool
	p   []byte
	n   int
	err error
}

func tryReader(tc *net.TCPConn) (func([]byte) (int, error), error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp transport: busy_poll needs the raw socket: %w", err)
	}
	r := &rawReader{rc: rc}
	r.try = r.attempt
	return r.read, nil
}

func (r *rawReader) attempt(fd uintptr) bool {
	for {
		r.n, r.err = syscall.Read(int(fd), r.p)
		if r.err != syscall.EINTR {
			return true // done, whatever happened: never wait
		}
	}
}

func (r *rawReader) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.rc.Read(r.try)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.err == syscall.EAGAIN:
		return 0, nil
	case r.err != nil:
		return 0, os.NewSyscallError("read", r.err)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// rawWriter is a connection's TryWrite: one non-blocking write(2) on the
// raw fd. Only one producer calls it at a time (framed's busy flag).
type rawWriter struct {
	rc  syscall.RawConn
	try func(fd uintptr) bool
	p   []byte
	n   int
	err error
}

func tryWriter(tc *net.TCPConn) (func([]byte) (int, error), error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp transport: raw socket: %w", err)
	}
	w := &rawWriter{rc: rc}
	w.try = w.attempt
	return w.write, nil
}

func (w *rawWriter) attempt(fd uintptr) bool {
	for {
		w.n, w.err = syscall.Write(int(fd), w.p)
		if w.err != syscall.EINTR {
			return true // done, whatever happened: never wait
		}
	}
}

func (w *rawWriter) write(p []byte) (int, error) {
	w.p = p
	err := w.rc.Write(w.try)
	w.p = nil
	if err != nil {
		return 0, err
	}
	if w.err == syscall.EAGAIN {
		return 0, nil
	}
	if w.err != nil {
		return 0, os.NewSyscallError("write", w.err)
	}
	return w.n, nil
}
