package rel

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

// The tests run rel over an in-memory datagram link whose faults (loss,
// duplication, reordering, corruption) are injected in-process by Faults
// with a fixed seed: this host's kernel has no sch_netem, so tc netem is not
// available, and a seeded injector replays a failure exactly anyway.

const testLimit = 60 * time.Second

// link delivers datagrams to a Conn's Input from a goroutine, like a NIC's
// receive path; a full queue drops (the link is unreliable).
type link struct {
	q    chan []byte
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	to   *Conn
	down bool
}

func newLink() *link {
	l := &link{q: make(chan []byte, 4096), stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case b := <-l.q:
				l.mu.Lock()
				to, down := l.to, l.down
				l.mu.Unlock()
				if to != nil && !down {
					to.Input(b)
				}
			case <-l.stop:
				return
			}
		}
	}()
	return l
}

func (l *link) send(b []byte) error {
	select {
	case l.q <- append([]byte(nil), b...):
	default:
	}
	return nil
}

func (l *link) setDown(d bool) {
	l.mu.Lock()
	l.down = d
	l.mu.Unlock()
}

func (l *link) close() {
	close(l.stop)
	l.wg.Wait()
}

// pair connects two Conns over two links with the given faults.
func pair(t *testing.T, f Faults, mod func(*Config)) (a, b *Conn, ab, ba *link) {
	t.Helper()
	ab, ba = newLink(), newLink()
	cfg := func(out *link, seed uint64) Config {
		ff := f
		ff.Seed = f.Seed + seed
		c := Config{MTU: 1200, Output: ff.Wrap(out.send)}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	a = New(cfg(ab, 1))
	b = New(cfg(ba, 2))
	ab.mu.Lock()
	ab.to = b
	ab.mu.Unlock()
	ba.mu.Lock()
	ba.to = a
	ba.mu.Unlock()
	t.Cleanup(func() {
		a.Abort(nil)
		b.Abort(nil)
		ab.close()
		ba.close()
	})
	return a, b, ab, ba
}

// stream is deterministic content: the same seed gives the same bytes.
func stream(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// send writes data in random-sized writes and closes.
func send(c *Conn, data []byte, seed uint64, maxWrite int) error {
	r := rand.New(rand.NewPCG(seed, 3))
	for len(data) > 0 {
		n := min(len(data), 1+r.IntN(maxWrite))
		if _, err := c.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return c.CloseWrite()
}

// recvAll reads until EOF with random-sized reads.
func recvAll(c *Conn, seed uint64) ([]byte, error) {
	r := rand.New(rand.NewPCG(seed, 5))
	var out []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := c.Read(buf[:1+r.IntN(len(buf))])
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func checkSame(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if crc32.ChecksumIEEE(got) != crc32.ChecksumIEEE(want) || !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at %d", what, len(got), len(want), i)
	}
}

// TestExactlyOnceInOrder is the property the transport rests on: over a
// link that loses, duplicates, reorders and corrupts datagrams, both
// directions at once, every byte arrives exactly once, in order, intact,
// whatever the write sizes.
func TestExactlyOnceInOrder(t *testing.T) {
	cases := []struct {
		name     string
		f        Faults
		size     int
		maxWrite int
	}{
		{"clean", Faults{}, 1 << 20, 64 << 10},
		{"loss", Faults{Loss: 0.1}, 1 << 20, 8 << 10},
		{"reorder-dup", Faults{Reorder: 0.2, Duplicate: 0.2}, 1 << 20, 100},
		{"everything", Faults{Loss: 0.05, Duplicate: 0.05, Reorder: 0.1, Corrupt: 0.02}, 2 << 20, 256 << 10},
		{"16MiB-writes", Faults{Loss: 0.02, Duplicate: 0.02, Reorder: 0.05, Corrupt: 0.01}, 16 << 20, 16 << 20},
	}
	if testing.Short() {
		cases = cases[:4]
	}
	for ci, tc := range cases {
		for seed := uint64(1); seed <= 2; seed++ {
			tc.f.Seed = seed * 1000
			t.Run(tc.name, func(t *testing.T) {
				a, b, _, _ := pair(t, tc.f, nil)
				exchange(t, a, b, stream(uint64(ci)*10+seed, tc.size), stream(uint64(ci)*10+seed+100, tc.size/3), seed, tc.maxWrite)
				st := a.Stats()
				t.Logf("a: %+v", st)
				if tc.f.Loss > 0 && st.Retransmitted == 0 {
					t.Error("loss injected but nothing was retransmitted")
				}
				if tc.f.Corrupt > 0 && a.Stats().Corrupt+b.Stats().Corrupt == 0 {
					t.Error("corruption injected but no datagram failed its checksum")
				}
			})
		}
	}
}

// exchange sends ab from a to b and ba from b to a at once, in random-sized
// writes of at most maxWrite, and checks each side reads exactly what the
// other wrote.
func exchange(t *testing.T, a, b *Conn, ab, ba []byte, seed uint64, maxWrite int) {
	t.Helper()
	type res struct {
		got []byte
		err error
	}
	gotB, gotA := make(chan res, 1), make(chan res, 1)
	errs := make(chan error, 2)
	go func() { g, err := recvAll(b, seed); gotB <- res{g, err} }()
	go func() { g, err := recvAll(a, seed+1); gotA <- res{g, err} }()
	go func() { errs <- send(a, ab, seed, maxWrite) }()
	go func() { errs <- send(b, ba, seed+1, maxWrite) }()
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(testLimit):
			t.Fatal("writes hung")
		}
	}
	for _, r := range []struct {
		ch   chan res
		want []byte
		name string
	}{{gotB, ab, "a->b"}, {gotA, ba, "b->a"}} {
		select {
		case x := <-r.ch:
			if x.err != nil && !errors.Is(x.err, ErrReset) {
				t.Fatalf("%s: %v", r.name, x.err)
			}
			checkSame(t, r.name, x.got, r.want)
		case <-time.After(testLimit):
			t.Fatalf("%s: reads hung", r.name)
		}
	}
}

// TestFlowControl: a reader that does not read stops the writer after the
// window plus the send buffer, and nothing is lost when it catches up.
func TestFlowControl(t *testing.T) {
	const window = 16
	a, b, _, _ := pair(t, Faults{Loss: 0.05, Seed: 9}, func(c *Config) { c.Window = window })
	data := stream(42, 1<<20)
	wrote := make(chan error, 1)
	go func() { wrote <- send(a, data, 1, 4096) }()
	// The writer must stall: the receiver buffers at most one window.
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-wrote:
		t.Fatalf("a 1 MiB write through a %d-segment window finished without a reader: %v", window, err)
	default:
	}
	b.mu.Lock()
	buffered := b.readLen + len(b.ooo)*b.payload
	b.mu.Unlock()
	if buffered > window*b.payload {
		t.Fatalf("receiver buffers %d bytes, over its window of %d", buffered, window*b.payload)
	}
	if a.Stats().Probes == 0 {
		t.Error("a sender stalled on a closed window never probed it (a lost window update would hang it)")
	}
	got, err := recvAll(b, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	checkSame(t, "flow-controlled", got, data)
}

// TestReadDeadlineResumes: a Read cut short by its deadline leaves the
// stream intact for the next Read (framed relies on it).
func TestReadDeadlineResumes(t *testing.T) {
	a, b, _, _ := pair(t, Faults{}, nil)
	_ = b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	_ = b.SetReadDeadline(time.Time{})
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("after a deadline: %q, %v", buf, err)
	}
}

// TestPeerDead: a peer that stops answering fails the writer with
// ErrPeerDead after DeadAfter.
func TestPeerDead(t *testing.T) {
	a, _, ab, _ := pair(t, Faults{}, func(c *Config) { c.DeadAfter = 100 * time.Millisecond })
	ab.setDown(true)
	if _, err := a.Write(make([]byte, 10000)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testLimit)
	for {
		_, err := a.Write([]byte{1})
		if errors.Is(err, ErrPeerDead) {
			break
		}
		if err != nil {
			t.Fatalf("Write to a silent peer = %v, want ErrPeerDead", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("a silent peer was never declared dead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-a.Done():
	case <-time.After(testLimit):
		t.Fatal("a dead connection did not finish")
	}
}

// TestReset: aborting one side fails the other's reads with ErrReset.
func TestReset(t *testing.T) {
	a, b, _, _ := pair(t, Faults{}, nil)
	a.Abort(nil)
	_, err := b.Read(make([]byte, 1))
	if !errors.Is(err, ErrReset) {
		t.Fatalf("Read after the peer's reset = %v, want ErrReset", err)
	}
}

// TestChecksum: flipping any single byte of a datagram is detected.
func TestChecksum(t *testing.T) {
	b := appendPacket(nil, &packet{kind: kindData, flags: flagAckReq, seq: 7, ack: 3, wnd: 9, sack: 5, payload: []byte("payload")})
	if _, err := parsePacket(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x10
		if _, err := parsePacket(c); err == nil {
			t.Fatalf("a flipped byte %d went undetected", i)
		}
	}
	if _, err := parsePacket(b[:HeaderSize-1]); err == nil {
		t.Fatal("a short datagram parsed")
	}
}
