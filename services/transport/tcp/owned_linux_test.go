//go:build linux

package tcp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func ownedPair(t *testing.T) (*ownedSocket, net.Conn) {
	t.Helper()
	c, peer := tcpPair(t)
	s, err := newOwnedSocket(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, peer
}

// socketIno is the inode of the socket behind fd.
func socketIno(t *testing.T, fd uintptr) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// epollEntries lists, for every epoll set of this process that holds the
// file with inode ino, the events that entry is armed for (from
// /proc/self/fdinfo: "tfd: N events: HEX data: HEX pos:0 ino:HEX ...").
func epollEntries(t *testing.T, ino uint64) map[int]uint32 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]uint32{}
	want := "ino:" + strconv.FormatUint(ino, 16)
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 || f[0] != "tfd:" || !strings.Contains(line, want+" ") {
				continue
			}
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "events:" {
					ev, err := strconv.ParseUint(f[i+1], 16, 32)
					if err != nil {
						t.Fatalf("fdinfo line %q: %v", line, err)
					}
					epfd, _ := strconv.Atoi(e.Name())
					found[epfd] = uint32(ev)
				}
			}
		}
	}
	return found
}

// armed reports whether any epoll set watches ino for anything (an entry
// disarmed by its one-shot report keeps only flag bits).
func armed(entries map[int]uint32) bool {
	for _, ev := range entries {
		if ev&(syscall.EPOLLIN|syscall.EPOLLOUT|syscall.EPOLLRDHUP|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
			return true
		}
	}
	return false
}

// The point of the owned socket: once taken over, no epoll set watches it
// while nobody waits (so a segment wakes no thread of the runtime's), and
// a wait that ended, by readiness or by a deadline, leaves it disarmed.
// The check is real: the same scan finds the net package's socket in the
// runtime's set before the take-over.
func TestOwnedSocketLeavesTheRuntimePoller(t *testing.T) {
	c, peer := tcpPair(t)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ino uint64
	_ = rc.Control(func(fd uintptr) { ino = socketIno(t, fd) })
	if !armed(epollEntries(t, ino)) {
		t.Fatal("the scan does not find a net.TCPConn's socket in the runtime's epoll set: it cannot show anything")
	}
	s, err := newOwnedSocket(c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := epollEntries(t, ino); armed(got) {
		t.Fatalf("after the take-over the socket is still watched: %v", got)
	}

	// A read that waits arms its set; the data ends the wait and disarms it.
	done := make(chan error, 1)
	buf := make([]byte, 8)
	go func() {
		n, err := s.Read(buf)
		if err == nil && string(buf[:n]) != "hi" {
			err = fmt.Errorf("read %q", buf[:n])
		}
		done <- err
	}()
	waitFor(t, "the waiting read to arm its set", func() bool { return armed(epollEntries(t, ino)) })
	if _, err := peer.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := epollEntries(t, ino); armed(got) {
		t.Fatalf("after a wait ended by data the socket is still watched: %v", got)
	}

	// A wait ended by its deadline disarms too.
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	if got := epollEntries(t, ino); armed(got) {
		t.Fatalf("after a wait ended by its deadline the socket is still watched: %v", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Deadlines behave as a net.Conn's: a passed one fails the call even with
// bytes ready, a past one set while a read waits ends it (how framed
// interrupts its reader), and clearing it lets reads go on.
func TestOwnedSocketDeadlines(t *testing.T) {
	s, peer := ownedPair(t)
	buf := make([]byte, 8)
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the byte to arrive", func() bool {
		n, _ := peekable(s)
		return n > 0
	})
	_ = s.SetReadDeadline(time.Unix(1, 0))
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a past deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	if n, err := s.TryRead(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("TryRead with a past deadline = %d, %v, want os.ErrDeadlineExceeded", n, err)
	}
	_ = s.SetReadDeadline(time.Time{})
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("read after clearing the deadline = %q, %v", buf[:n], err)
	}

	// Interrupt a waiting read.
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(buf)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = s.SetReadDeadline(time.Unix(1, 0))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("interrupted read = %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a past read deadline did not end a waiting read")
	}
	_ = s.SetReadDeadline(time.Time{})
	if _, err := peer.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "y" {
		t.Fatalf("read after the interrupt = %q, %v", buf[:n], err)
	}

	// A write that finds the socket full waits, and its deadline ends it.
	_ = s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	chunk := make([]byte, 1<<20)
	var err error
	for i := 0; i < 256 && err == nil; i++ { // far more than loopback buffers hold
		_, err = s.Write(chunk)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing to a peer that reads nothing = %v, want os.ErrDeadlineExceeded", err)
	}
}

// peekable reports how many bytes wait in the socket without taking them.
func peekable(s *ownedSocket) (int, error) {
	var b [16]byte
	n, _, e := syscall.Recvfrom(int(s.fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if e != nil {
		return 0, e
	}
	return n, nil
}

// Close ends waits in both directions with net.ErrClosed, later calls fail
// the same way without touching the fd, and a second Close says so.
func TestOwnedSocketClose(t *testing.T) {
	s, _ := ownedPair(t)
	rdone := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 8))
		rdone <- err
	}()
	wdone := make(chan error, 1)
	go func() {
		chunk := make([]byte, 1<<20)
		var err error
		for err == nil {
			_, err = s.Write(chunk)
		}
		wdone <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"read": rdone, "write": wdone} {
		select {
		case err := <-ch:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("a waiting %s ended by Close = %v, want net.ErrClosed", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Close did not end a waiting %s", name)
		}
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close = %v", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close = %v", err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v, want net.ErrClosed", err)
	}
}

// WriteBuffers sends every buffer, in order, empty ones included, across
// partial writes to a slow reader; EOF from the peer reads as io.EOF.
func TestOwnedSocketWriteBuffersAndEOF(t *testing.T) {
	s, peer := ownedPair(t)
	var want bytes.Buffer
	var bufs net.Buffers
	for i := range 200 {
		b := bytes.Repeat([]byte{byte(i)}, (i*7919)%40000)
		bufs = append(bufs, b)
		want.Write(b)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	n, err := s.WriteBuffers(&bufs)
	if err != nil || n != int64(want.Len()) || len(bufs) != 0 {
		t.Fatalf("WriteBuffers = %d, %v with %d buffers left; want %d, nil, 0", n, err, len(bufs), want.Len())
	}
	if err := syscall.Shutdown(int(s.fd), syscall.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("the peer read %d bytes, not the %d written in order", len(b), want.Len())
	}
	_ = peer.Close()
	if _, err := s.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("read after the peer closed = %v, want io.EOF", err)
	}
}
