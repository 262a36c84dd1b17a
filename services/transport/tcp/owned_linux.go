//go:build linux

package tcp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// ownedSocket is a busy_poll connection's socket kept out of the Go
// runtime's epoll set while it spins.
//
// Why: a socket in an epoll set that a thread sleeps in (epoll_wait) wakes
// that thread with every segment it receives, from inside the sender's
// write(2). The runtime has such a thread whenever a P is idle, which a
// busy-polling process on a small machine nearly always has: the woken
// thread finds nothing to do and sleeps again, but it took a core from one
// of the two spinning sides for a while. Measured with the C ping-pong
// itself (bench/cping, both ends spinning, over the veth link): adding a
// thread that sleeps in epoll_wait on the socket made the median round
// trip 12-33 % slower and the p90 1.5-2x; the socket in an epoll set that
// nobody waits in, or registered but disarmed, cost nothing measurable.
//
// So the fd is a duplicate this package owns, and the net package's
// descriptor is closed, which takes the socket out of the runtime's set.
// Each direction has an epoll set of its own (rd, wr) holding just this
// socket, one-shot: armed only by a read or write that found nothing to do
// and has to wait, disarmed by the event that ends the wait. That small
// set's own fd is what the runtime polls (epoll sets nest), so a waiting
// read or write parks its goroutine in the runtime's poller as usual, with
// its deadlines; while nobody waits, segments reach a disarmed entry and
// wake nobody.
type ownedSocket struct {
	rawFD
	laddr, raddr net.Addr
	rd, wr       *waitSet
	// Deadlines in Unix nanoseconds, 0 for none: a read or write fails
	// once its deadline passed, as a net.Conn's does, even with bytes
	// ready.
	rdl, wdl  atomic.Int64
	closeOnce sync.Once
	iov       []syscall.Iovec // WriteBuffers' scratch (the writer's)
}

// waitSet is an epoll set holding one socket, for one direction's waits.
type waitSet struct {
	f      *os.File // the epoll fd, non-blocking, in the runtime's poller
	rc     syscall.RawConn
	events uint32
	mu     sync.Mutex // one waiter at a time; guards added
	added  bool       // the socket is in the set (armed or not)
	ev     [1]syscall.EpollEvent
}

func newWaitSet(events uint32) (*waitSet, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking before NewFile, so that os puts it in the poller.
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	w := &waitSet{f: os.NewFile(uintptr(fd), "busy-poll wait set"), events: events}
	rc, err := w.f.SyscallConn()
	if err != nil {
		_ = w.f.Close()
		return nil, err
	}
	w.rc = rc
	return w, nil
}

// wait arms the socket in the set and parks until its events come, the
// set's read deadline passes, or the set closes. The entry is level
// triggered, so readiness that came before arming is reported at once;
// the caller retries its read or write, and waits again if it finds
// nothing after all.
func (w *waitSet) wait(fd uintptr) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	op := syscall.EPOLL_CTL_MOD
	if !w.added {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: w.events | syscall.EPOLLONESHOT}
	var cerr error
	if err := w.rc.Control(func(efd uintptr) {
		cerr = syscall.EpollCtl(int(efd), op, int(fd), &ev)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return os.NewSyscallError("epoll_ctl", cerr)
	}
	w.added = true
	err := w.rc.Read(func(efd uintptr) bool {
		// Reporting the event is what disarms a one-shot entry.
		n, err := syscall.EpollWait(int(efd), w.ev[:], 0)
		return n > 0 || (err != nil && err != syscall.EINTR)
	})
	if err != nil {
		// A deadline or Close ended the wait with the entry still armed.
		// Armed and unreported, it would pass every segment on to the
		// runtime's poller again: take it out (disarming it with a
		// modify would leave it watching for errors and hang-ups).
		if w.rc.Control(func(efd uintptr) { _ = syscall.EpollCtl(int(efd), syscall.EPOLL_CTL_DEL, int(fd), &ev) }) == nil {
			w.added = false
		}
	}
	return err
}

// newOwnedSocket takes tc's socket out of the runtime's poller. tc is
// closed whatever happens; on success the socket lives on in the returned
// ownedSocket.
func newOwnedSocket(tc *net.TCPConn) (*ownedSocket, error) {
	defer tc.Close() // closing the net package's fd takes the socket out of the runtime's epoll set
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp transport: busy_poll socket: %w", err)
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		// The duplicate shares the socket and its O_NONBLOCK (a file
		// status flag), which the net package set.
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			derr = os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", e)
			return
		}
		dup = int(r)
	}); err != nil {
		return nil, fmt.Errorf("tcp transport: busy_poll socket: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("tcp transport: busy_poll socket: %w", derr)
	}
	s := &ownedSocket{laddr: tc.LocalAddr(), raddr: tc.RemoteAddr()}
	s.fd = uintptr(dup)
	if s.rd, err = newWaitSet(syscall.EPOLLIN | syscall.EPOLLRDHUP); err == nil {
		s.wr, err = newWaitSet(syscall.EPOLLOUT)
	}
	if err != nil {
		s.release()
		return nil, fmt.Errorf("tcp transport: busy_poll socket: %w", err)
	}
	return s, nil
}

// LocalAddr implements net.Conn.
func (s *ownedSocket) LocalAddr() net.Addr { return s.laddr }

// RemoteAddr implements net.Conn.
func (s *ownedSocket) RemoteAddr() net.Addr { return s.raddr }

// Read implements net.Conn.
func (s *ownedSocket) Read(b []byte) (int, error) {
	for {
		if err := expired(&s.rdl); err != nil {
			return 0, err
		}
		n, err := s.TryRead(b)
		if n > 0 || err != nil || len(b) == 0 {
			return n, err
		}
		if err := s.wait(s.rd); err != nil {
			return 0, err
		}
	}
}

// Write implements net.Conn.
func (s *ownedSocket) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		if err := expired(&s.wdl); err != nil {
			return written, err
		}
		n, err := s.TryWrite(b[written:])
		written += n
		if err != nil {
			return written, err
		}
		if n == 0 {
			if err := s.wait(s.wr); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// maxIovec bounds the buffers of one writev(2) (IOV_MAX is 1024).
const maxIovec = 64

// WriteBuffers writes all of *bufs with writev(2), consuming them as
// net.Buffers.WriteTo does: net.Buffers gets writev from the net package's
// own types only, and framed's writer uses this when a connection has it.
func (s *ownedSocket) WriteBuffers(bufs *net.Buffers) (int64, error) {
	var total int64
	for len(*bufs) > 0 {
		if err := expired(&s.wdl); err != nil {
			return total, err
		}
		s.iov = s.iov[:0]
		for _, b := range *bufs {
			if len(s.iov) == maxIovec {
				break
			}
			if len(b) > 0 {
				s.iov = append(s.iov, syscall.Iovec{Base: &b[0], Len: uint64(len(b))})
			}
		}
		if len(s.iov) == 0 {
			*bufs = (*bufs)[:0]
			break
		}
		n, e, ok := s.raw(syscall.SYS_WRITEV, unsafe.Pointer(&s.iov[0]), len(s.iov))
		clear(s.iov) // drop the references to the buffers
		n, err := rawResult("writev", n, e, ok)
		if err != nil {
			return total, err
		}
		total += int64(n)
		consume(bufs, n)
		if n == 0 {
			if err := s.wait(s.wr); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

// consume drops the first n bytes of *bufs.
func consume(bufs *net.Buffers, n int) {
	for len(*bufs) > 0 && n >= len((*bufs)[0]) {
		n -= len((*bufs)[0])
		(*bufs)[0] = nil
		*bufs = (*bufs)[1:]
	}
	if n > 0 {
		(*bufs)[0] = (*bufs)[0][n:]
	}
}

// wait parks until the socket is ready in w's direction; a closed socket
// is net.ErrClosed, a passed deadline os.ErrDeadlineExceeded.
func (s *ownedSocket) wait(w *waitSet) error {
	if s.isClosed() {
		return net.ErrClosed
	}
	err := w.wait(s.fd)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return os.ErrDeadlineExceeded
	case s.isClosed():
		return net.ErrClosed
	}
	return fmt.Errorf("tcp transport: busy_poll wait: %w", err)
}

func (s *ownedSocket) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// expired reports a deadline that has passed.
func expired(dl *atomic.Int64) error {
	if d := dl.Load(); d != 0 && time.Now().UnixNano() >= d {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

// SetReadDeadline implements net.Conn; a waiting reader takes the new
// deadline at once.
func (s *ownedSocket) SetReadDeadline(t time.Time) error {
	s.interrupt.Store(!t.IsZero() && !t.After(time.Now()))
	s.rdl.Store(deadlineNanos(t))
	return s.rd.f.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn.
func (s *ownedSocket) SetWriteDeadline(t time.Time) error {
	s.wdl.Store(deadlineNanos(t))
	return s.wr.f.SetReadDeadline(t) // a writer waits for its set to be readable
}

// SetDeadline implements net.Conn.
func (s *ownedSocket) SetDeadline(t time.Time) error {
	return errors.Join(s.SetReadDeadline(t), s.SetWriteDeadline(t))
}

// Close implements net.Conn: raw calls in flight finish and later ones
// fail, waiters return net.ErrClosed, and the fd is closed.
func (s *ownedSocket) Close() error {
	first := false
	s.closeOnce.Do(func() { first = true })
	if !first {
		return net.ErrClosed
	}
	return s.release()
}

func (s *ownedSocket) release() error {
	s.shut()
	for _, w := range []*waitSet{s.rd, s.wr} {
		if w != nil {
			_ = w.f.Close() // wakes its waiter, which then finds s closed
		}
	}
	if err := syscall.Close(int(s.fd)); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// busyStream is what prepare builds a busy_poll stream from: on Linux a
// socket outside the runtime's poller (see ownedSocket).
func busyStream(tc *net.TCPConn) (net.Conn, func([]byte) (int, error), func([]byte) (int, error), error) {
	s, err := newOwnedSocket(tc)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, s.TryRead, s.TryWrite, nil
}
