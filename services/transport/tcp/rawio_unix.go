//go:build unix

package tcp

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
)

const busyPollSupported = true

// pollReader is a busy_poll connection's read function. Only the
// connection's reader goroutine calls it.
type pollReader struct {
	rc   syscall.RawConn
	spin time.Duration
	// try is r.attempt, bound once so that reads do not allocate.
	try func(fd uintptr) bool
	p   []byte
	n   int
	err error
}

func busyPollReader(tc *net.TCPConn, spin time.Duration) (func([]byte) (int, error), error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp transport: busy_poll needs the raw socket: %w", err)
	}
	r := &pollReader{rc: rc, spin: spin}
	r.try = r.attempt
	return r.read, nil
}

// attempt retries a non-blocking read until it returns data, EOF or an
// error, or until the spin is over; false hands the wait to the netpoller
// (which honours read deadlines), after which it is called again.
func (r *pollReader) attempt(fd uintptr) bool {
	var start time.Time
	for {
		r.n, r.err = syscall.Read(int(fd), r.p)
		switch r.err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			return true
		}
		now := time.Now()
		if start.IsZero() {
			start = now
		} else if now.Sub(start) >= r.spin {
			return false
		}
		// Let other goroutines of this P run between attempts: on a busy
		// process the spin then costs latency to nobody. (A pure spin
		// holding the P was 4x slower on 2 processors. Capping the number
		// of spinners was worse still: while some goroutine spins, Go's
		// schedulers always find it runnable and skip polling the network,
		// so a reader that did park waits for a spin to end; busy polling
		// pays off when every waiting reader spins, or when processors are
		// left idle to poll.)
		runtime.Gosched()
	}
}

func (r *pollReader) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.rc.Read(r.try)
	r.p = nil
	if err != nil {
		return 0, err
	}
	if r.err != nil {
		return 0, os.NewSyscallError("read", r.err)
	}
	if r.n == 0 {
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
