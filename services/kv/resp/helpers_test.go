package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/services/kv"
)

const (
	mib = 1 << 20
	// testPoolSize is each test store's pool: 64 MiB is plenty.
	testPoolSize = 64 * mib
	// waitLimit bounds waitFor and test clients' reads: a safety net against
	// hangs, never a timing assertion.
	waitLimit = 30 * time.Second
)

var poolSeq atomic.Int64

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newStore returns a kv store over a fresh pool on /dev/shm, destroyed when
// the test ends. now may be nil for the real clock.
func newStore(t testing.TB, now func() time.Time) *kv.Store {
	t.Helper()
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm on this host")
	}
	path := fmt.Sprintf("/dev/shm/flx-resp-test-%d-%d", os.Getpid(), poolSeq.Add(1))
	p, err := pool.CreateWith(path, testPoolSize, 0, pool.Options{Replace: true})
	if errors.Is(err, pool.ErrNotSupported) {
		t.Skipf("no shared-memory pool in this build: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.New(p, kv.Options{Now: now, Log: quietLog()})
	if err != nil {
		p.Destroy()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Every reference the server took must have been dropped: once all
		// keys are removed, no object may stay behind in the pool.
		for cursor := uint64(0); ; {
			keys, next := st.Scan(cursor, 1024, nil)
			for _, k := range keys {
				_ = st.Remove(k)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		if used := st.Stats().Used; used != 0 {
			t.Errorf("%d bytes still held in the pool after removing every key: a leaked holder or reservation", used)
		}
		st.Close()
		if err := p.Check(); err != nil {
			t.Errorf("pool check after the test: %v", err)
		}
		if err := p.Destroy(); err != nil {
			t.Errorf("destroying the test pool: %v", err)
		}
	})
	return st
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// startServer serves st on a loopback port until the test ends.
func startServer(t testing.TB, st kv.Backend, o Options) *Server {
	t.Helper()
	if o.Log == nil {
		o.Log = quietLog()
	}
	s := NewServer(st, o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	waitFor(t, func() bool { return s.Addr() != nil })
	return s
}

// waitFor polls cond until it holds; it fails the test after waitLimit.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v", waitLimit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// reply is a decoded RESP2 reply.
type reply struct {
	kind byte // '+', '-', ':', '$', '*'
	str  string
	n    int64
	arr  []reply
	null bool
}

func (r reply) String() string {
	switch r.kind {
	case '+', '-':
		return string(r.kind) + r.str
	case ':':
		return strconv.FormatInt(r.n, 10)
	case '$':
		if r.null {
			return "(nil)"
		}
		return strconv.Quote(r.str)
	case '*':
		if r.null {
			return "(nil array)"
		}
		return fmt.Sprint(r.arr)
	}
	return "?"
}

// client is a minimal RESP2 client for tests and benchmarks.
type client struct {
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func dial(t testing.TB, addr net.Addr) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriterSize(nc, 64<<10)}
}

// send buffers one command; flush sends what is buffered.
func (c *client) send(args ...string) {
	fmt.Fprintf(c.bw, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.bw, "$%d\r\n%s\r\n", len(a), a)
	}
}

func (c *client) flush() error { return c.bw.Flush() }

func (c *client) do(args ...string) (reply, error) {
	c.send(args...)
	if err := c.flush(); err != nil {
		return reply{}, err
	}
	return c.read()
}

// must runs a command and fails the test on a transport error.
func (c *client) must(t testing.TB, args ...string) reply {
	t.Helper()
	r, err := c.do(args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return r
}

func (c *client) read() (reply, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(waitLimit))
	line, err := c.br.ReadString('\n')
	if err != nil {
		return reply{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return reply{}, fmt.Errorf("bad reply line %q", line)
	}
	r := reply{kind: line[0]}
	body := line[1 : len(line)-2]
	switch r.kind {
	case '+', '-':
		r.str = body
	case ':':
		r.n, err = strconv.ParseInt(body, 10, 64)
	case '$':
		n, perr := strconv.Atoi(body)
		if perr != nil {
			return r, perr
		}
		if n < 0 {
			r.null = true
			return r, nil
		}
		b := make([]byte, n+2)
		if _, err = io.ReadFull(c.br, b); err != nil {
			return r, err
		}
		r.str = string(b[:n])
	case '*':
		n, perr := strconv.Atoi(body)
		if perr != nil {
			return r, perr
		}
		if n < 0 {
			r.null = true
			return r, nil
		}
		for range n {
			e, err := c.read()
			if err != nil {
				return r, err
			}
			r.arr = append(r.arr, e)
		}
	default:
		return r, fmt.Errorf("bad reply type in %q", line)
	}
	return r, err
}
