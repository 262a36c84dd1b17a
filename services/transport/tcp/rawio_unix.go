//go:build unix

package tcp

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const busyPollSupported = true

// rawSocket is a TCP connection whose non-blocking reads (TryRead, for
// busy_poll) and writes (TryWrite) are single read(2) and write(2) calls
// made with syscall.RawSyscall on its fd. They skip the net package's fd
// lock and poller bookkeeping (RawConn.Read/Write) and the scheduler's
// syscall hooks, which together cost more than an empty read itself: 480
// ns per read through RawConn against 300 ns raw on the 2-core VM, and a
// busy-polled round trip makes four such calls on its critical path. The
// net package made the fd non-blocking, so neither call ever blocks.
//
// The price is a close guard of our own: Close waits for the calls in
// flight and later ones fail, so the fd number is never used once the
// socket closed (it may name another file by then). Everything else,
// blocking reads and writev included, goes through the embedded
// *net.TCPConn.
type rawSocket struct {
	*net.TCPConn
	rawFD
}

// rawFD is a non-blocking fd's raw calls and their close guard.
type rawFD struct {
	fd     uintptr
	mu     sync.RWMutex // held for reading by raw calls, for writing by Close
	closed bool
	// interrupt is set while the read deadline lies in the past, which is
	// how framed interrupts a reader: TryRead then fails as a read would.
	interrupt atomic.Bool
}

func newRawSocket(tc *net.TCPConn) (*rawSocket, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp transport: raw socket: %w", err)
	}
	s := &rawSocket{TCPConn: tc}
	if err := rc.Control(func(fd uintptr) { s.fd = fd }); err != nil {
		return nil, fmt.Errorf("tcp transport: raw socket: %w", err)
	}
	return s, nil
}

// Close implements net.Conn: once no raw call runs, and none will.
func (s *rawSocket) Close() error {
	s.shut()
	return s.TCPConn.Close()
}

// shut makes later raw calls fail, once those in flight returned.
func (s *rawFD) shut() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// SetReadDeadline implements net.Conn.
func (s *rawSocket) SetReadDeadline(t time.Time) error {
	s.interrupt.Store(!t.IsZero() && !t.After(time.Now()))
	return s.TCPConn.SetReadDeadline(t)
}

// SetDeadline implements net.Conn.
func (s *rawSocket) SetDeadline(t time.Time) error {
	s.interrupt.Store(!t.IsZero() && !t.After(time.Now()))
	return s.TCPConn.SetDeadline(t)
}

// raw makes one read(2), write(2) or writev(2) on the fd (buf and n are
// its second and third arguments), retrying EINTR.
func (s *rawFD) raw(trap uintptr, buf unsafe.Pointer, n int) (int, syscall.Errno, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, 0, false
	}
	for {
		r, _, e := syscall.RawSyscall(trap, s.fd, uintptr(buf), uintptr(n))
		if e != syscall.EINTR {
			return int(r), e, true
		}
	}
}

// TryRead reads what the socket holds without waiting: (0, nil) when
// nothing is there, io.EOF at the end.
func (s *rawFD) TryRead(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.interrupt.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	n, e, ok := s.raw(syscall.SYS_READ, unsafe.Pointer(&p[0]), len(p))
	if ok && e == 0 && n == 0 {
		return 0, io.EOF
	}
	return rawResult("read", n, e, ok)
}

// TryWrite writes what the socket takes without waiting: (0, nil) when it
// has no room.
func (s *rawFD) TryWrite(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, e, ok := s.raw(syscall.SYS_WRITE, unsafe.Pointer(&p[0]), len(p))
	return rawResult("write", n, e, ok)
}

// rawResult turns a raw call's outcome into TryRead's and TryWrite's:
// EAGAIN is (0, nil).
func rawResult(op string, n int, e syscall.Errno, ok bool) (int, error) {
	switch {
	case !ok:
		return 0, net.ErrClosed
	case e == syscall.EAGAIN:
		return 0, nil
	case e != 0:
		return 0, os.NewSyscallError(op, e)
	}
	return n, nil
}

// rawStream is what prepare builds a stream from: the connection to use
// and its non-blocking read and write.
func rawStream(tc *net.TCPConn) (net.Conn, func([]byte) (int, error), func([]byte) (int, error), error) {
	s, err := newRawSocket(tc)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, s.TryRead, s.TryWrite, nil
}
