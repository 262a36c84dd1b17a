//go:build unix

package tcp

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// tcpPair is a connected pair over loopback: the dialed side and the
// accepted side.
func tcpPair(t *testing.T) (*net.TCPConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-acc
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = peer.Close() })
	return c.(*net.TCPConn), peer
}

func rawPair(t *testing.T) (*rawSocket, net.Conn) {
	t.Helper()
	c, peer := tcpPair(t)
	s, err := newRawSocket(c)
	if err != nil {
		t.Fatal(err)
	}
	return s, peer
}

// The raw calls read and write the socket without waiting, honour the
// past-deadline interrupt framed uses, and once Close returned they fail
// with net.ErrClosed instead of touching an fd number that may name
// another file by then, even with calls racing Close (run with -race).
func TestRawSocket(t *testing.T) {
	s, peer := rawPair(t)
	buf := make([]byte, 16)
	if n, err := s.TryRead(buf); n != 0 || err != nil {
		t.Fatalf("TryRead on an empty socket = %d, %v", n, err)
	}
	if n, err := s.TryWrite([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("TryWrite = %d, %v", n, err)
	}
	if _, err := io.ReadFull(peer, buf[:4]); err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("the peer read %q, %v", buf[:4], err)
	}
	if _, err := peer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	got := 0
	for deadline := time.Now().Add(5 * time.Second); got < 4 && time.Now().Before(deadline); {
		n, err := s.TryRead(buf[got:4])
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if string(buf[:4]) != "pong" {
		t.Fatalf("TryRead got %q", buf[:got])
	}

	_ = s.SetReadDeadline(time.Unix(1, 0))
	if _, err := s.TryRead(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("TryRead past the read deadline = %v", err)
	}
	_ = s.SetReadDeadline(time.Time{})
	if n, err := s.TryRead(buf); n != 0 || err != nil {
		t.Fatalf("TryRead with the deadline cleared = %d, %v", n, err)
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			b := make([]byte, 64)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.TryRead(b); errors.Is(err, net.ErrClosed) {
					return
				}
				if _, err := s.TryWrite(b[:1]); errors.Is(err, net.ErrClosed) {
					return
				}
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryRead(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryRead after Close = %v", err)
	}
	if _, err := s.TryWrite(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryWrite after Close = %v", err)
	}
	close(stop)
	wg.Wait()
	// The embedded connection closed too.
	if _, err := s.TCPConn.Write(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on the closed connection = %v", err)
	}
}
