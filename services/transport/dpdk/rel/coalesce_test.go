package rel

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

// capture is an Output that keeps every datagram, and a Kick that counts.
type capture struct {
	mu    sync.Mutex
	out   [][]byte
	kicks int
}

func (c *capture) output(b []byte) error {
	c.mu.Lock()
	c.out = append(c.out, append([]byte(nil), b...))
	c.mu.Unlock()
	return nil
}

func (c *capture) kick() { c.kicks++ } // runs under the Conn's lock

// take returns the datagrams sent since the last take.
func (c *capture) take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.out
	c.out = nil
	return o
}

// deferred makes a Conn whose output waits for Flush, its datagrams kept
// by the returned capture.
func deferred(t *testing.T, mod func(*Config)) (*Conn, *capture) {
	t.Helper()
	cp := &capture{}
	cfg := Config{MTU: 1500, Output: cp.output, Kick: cp.kick}
	if mod != nil {
		mod(&cfg)
	}
	c := New(cfg)
	t.Cleanup(func() { c.Abort(nil) })
	return c, cp
}

func mustParse(t *testing.T, b []byte) packet {
	t.Helper()
	p, err := parsePacket(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readN(t *testing.T, c *Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testLimit))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

// frames returns n small writes (framed frames, say) of size bytes each.
func frames(n, size int) [][]byte {
	var w [][]byte
	for i := range n {
		f := make([]byte, size)
		for j := range f {
			f[j] = byte(i*7 + j)
		}
		w = append(w, f)
	}
	return w
}

// TestCoalescePacksWrites: writes queued before a Flush leave as one
// datagram holding all of them, the receiver reads them back in order, and
// its acks for everything received before its own Flush are one datagram.
func TestCoalescePacksWrites(t *testing.T) {
	a, ao := deferred(t, nil)
	b, bo := deferred(t, func(c *Config) { c.AckDelay = time.Hour })
	ws := frames(20, 64)
	for _, w := range ws {
		if _, err := a.Write(w); err != nil {
			t.Fatal(err)
		}
	}
	if got := ao.take(); len(got) != 0 {
		t.Fatalf("%d datagrams sent before Flush", len(got))
	}
	if ao.kicks != 1 {
		t.Fatalf("Kick ran %d times for 20 writes between flushes, want 1", ao.kicks)
	}
	a.Flush()
	out := ao.take()
	if len(out) != 1 {
		t.Fatalf("20 writes of 64 bytes left as %d datagrams, want 1", len(out))
	}
	want := bytes.Join(ws, nil)
	if p := mustParse(t, out[0]); !bytes.Equal(p.payload, want) {
		t.Fatalf("the coalesced datagram holds %d bytes, want the 20 writes (%d)", len(p.payload), len(want))
	}
	b.Input(out[0])
	checkSame(t, "coalesced", readN(t, b, len(want)), want)
	// One segment in order: its ack waits for a reply to ride on.
	b.Flush()
	if got := bo.take(); len(got) != 0 {
		t.Fatalf("the receiver sent %d datagrams with no reply to carry its ack", len(got))
	}
	if _, err := b.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	b.Flush()
	acks := bo.take()
	if len(acks) != 1 || mustParse(t, acks[0]).kind != kindData || mustParse(t, acks[0]).ack != 1 {
		t.Fatalf("the receiver's flush sent %d datagrams, want its reply acking segment 0", len(acks))
	}
	a.Input(acks[0])
	a.mu.Lock()
	left := len(a.segs)
	a.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d segments still unacked", left)
	}
}

// TestDelayedAck: with no reply to carry it, the ack of one segment goes
// alone after AckDelay; two segments, or one out of order, are acked at
// the next Flush.
func TestDelayedAck(t *testing.T) {
	a, ao := deferred(t, nil)
	b, bo := deferred(t, nil)
	a.Write([]byte("one"))
	a.Flush()
	a.Write([]byte("two"))
	a.Flush()
	a.Write([]byte("three"))
	a.Flush()
	out := ao.take()
	if len(out) != 3 {
		t.Fatalf("3 flushed writes left as %d datagrams", len(out))
	}
	b.Input(out[0])
	b.Flush()
	var acks [][]byte
	deadline := time.Now().Add(testLimit)
	for len(acks) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a delayed ack never left")
		}
		time.Sleep(time.Millisecond)
		acks = bo.take()
	}
	if p := mustParse(t, acks[0]); len(acks) != 1 || p.kind != kindAck || p.ack != 1 {
		t.Fatalf("%d datagrams, want one ack of segment 0", len(acks))
	}
	b.Input(out[2]) // out of order: at once
	b.Flush()
	if acks = bo.take(); len(acks) != 1 || mustParse(t, acks[0]).sack != 1 {
		t.Fatalf("a segment out of order: %d datagrams at the flush, want one ack with a sack", len(acks))
	}
	b.Input(out[1])
	b.Flush()
	if acks = bo.take(); len(acks) != 1 || mustParse(t, acks[0]).ack != 3 {
		t.Fatalf("the hole filled: %d datagrams at the flush, want one ack of everything", len(acks))
	}
}

// TestCoalesceSplitsAcrossDatagrams: a write that does not fit the room
// left in the last segment continues in the next datagram, and the
// receiver joins the halves.
func TestCoalesceSplitsAcrossDatagrams(t *testing.T) {
	a, ao := deferred(t, nil)
	b, _ := deferred(t, nil)
	ws := frames(3, 1000) // 3000 bytes: 1472 + 1472 + 56 with MTU 1500
	for _, w := range ws {
		if _, err := a.Write(w); err != nil {
			t.Fatal(err)
		}
	}
	a.Flush()
	out := ao.take()
	if len(out) != 3 {
		t.Fatalf("3000 bytes left as %d datagrams, want 3", len(out))
	}
	payload := 1500 - HeaderSize
	for i, d := range out {
		p := mustParse(t, d)
		if want := min(payload, 3000-i*payload); len(p.payload) != want || p.seq != uint32(i) {
			t.Fatalf("datagram %d: seq %d with %d bytes, want seq %d with %d", i, p.seq, len(p.payload), i, want)
		}
	}
	// Delivered out of order: the split write is joined only once both
	// halves are in.
	b.Input(out[1])
	b.Input(out[2])
	b.Input(out[0])
	checkSame(t, "split", readN(t, b, 3000), bytes.Join(ws, nil))
}

// TestCoalesceRetransmitsSameBytes: a coalesced datagram that is lost is
// sent again with exactly the bytes it first carried, even though writes
// made after it went out are queued (they start a new segment).
func TestCoalesceRetransmitsSameBytes(t *testing.T) {
	a, ao := deferred(t, func(c *Config) { c.InitialRTO = 10 * time.Millisecond; c.MinRTO = 10 * time.Millisecond })
	b, _ := deferred(t, nil)
	ws := frames(10, 64)
	for _, w := range ws[:5] {
		_, _ = a.Write(w)
	}
	a.Flush()
	first := ao.take() // lost
	if len(first) != 1 {
		t.Fatalf("%d datagrams, want 1", len(first))
	}
	for _, w := range ws[5:] {
		_, _ = a.Write(w)
	}
	var again [][]byte
	deadline := time.Now().Add(testLimit)
	for len(again) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the lost datagram was never retransmitted")
		}
		time.Sleep(5 * time.Millisecond)
		again = ao.take()
	}
	p0, p1 := mustParse(t, first[0]), mustParse(t, again[0])
	if p1.seq != p0.seq || !bytes.Equal(p1.payload, p0.payload) {
		t.Fatalf("retransmission: seq %d with %d bytes, first sent as seq %d with %d", p1.seq, len(p1.payload), p0.seq, len(p0.payload))
	}
	if a.Stats().Retransmitted == 0 {
		t.Fatal("Retransmitted not counted")
	}
	a.Flush()
	rest := ao.take()
	if len(rest) != 1 || mustParse(t, rest[0]).seq != 1 {
		t.Fatalf("the writes after the first datagram left as %d datagrams, want one segment 1", len(rest))
	}
	b.Input(again[0])
	b.Input(rest[0])
	checkSame(t, "retransmitted", readN(t, b, 640), bytes.Join(ws, nil))
}

// TestCoalesceDropsDuplicates: a coalesced datagram that arrives twice is
// delivered once.
func TestCoalesceDropsDuplicates(t *testing.T) {
	a, ao := deferred(t, nil)
	b, _ := deferred(t, nil)
	ws := frames(8, 64)
	for _, w := range ws {
		_, _ = a.Write(w)
	}
	a.Flush()
	out := ao.take()
	for range 3 {
		b.Input(out[0])
	}
	checkSame(t, "deduplicated", readN(t, b, 512), bytes.Join(ws, nil))
	if d := b.Stats().Duplicate; d != 2 {
		t.Fatalf("Duplicate = %d, want 2", d)
	}
	_ = b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := b.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("a duplicate was delivered again: %d bytes", n)
	}
}

// TestExactlyOnceCoalesced runs the exactly-once property with deferred
// output: each side's Flush runs on a goroutine of its own when kicked (as
// a link's transmit loop would), small writes over a faulty link.
func TestExactlyOnceCoalesced(t *testing.T) {
	type kicker struct {
		ch chan struct{}
		c  *Conn
	}
	var ks []*kicker
	a, b, _, _ := pair(t, Faults{Loss: 0.05, Duplicate: 0.05, Reorder: 0.1, Corrupt: 0.02, Seed: 77}, func(c *Config) {
		k := &kicker{ch: make(chan struct{}, 1)}
		ks = append(ks, k)
		c.Kick = func() {
			select {
			case k.ch <- struct{}{}:
			default:
			}
		}
	})
	ks[0].c, ks[1].c = a, b
	for _, k := range ks {
		go func() {
			for {
				select {
				case <-k.ch:
					k.c.Flush()
				case <-k.c.Done():
					return
				}
			}
		}()
	}
	exchange(t, a, b, stream(5, 1<<20), stream(6, 200<<10), 1, 100)
	// How much coalesces depends on scheduling, so it is only logged
	// (about 21000 writes made 1 MiB).
	t.Logf("a: %+v", a.Stats())
}

// TestTryWriteNeverWaits: TryWrite takes what the send buffer has room
// for and returns at once when it is full.
func TestTryWriteNeverWaits(t *testing.T) {
	a, _ := deferred(t, func(c *Config) { c.Window = 2 })
	payload := 1500 - HeaderSize
	if n, err := a.TryWrite(make([]byte, 10*payload)); n != 4*payload || err != nil {
		t.Fatalf("TryWrite into an empty buffer of 4 segments = %d, %v; want %d", n, err, 4*payload)
	}
	if n, err := a.TryWrite([]byte{1}); n != 0 || err != nil {
		t.Fatalf("TryWrite into a full buffer = %d, %v; want 0, nil", n, err)
	}
	_ = a.Close()
	if _, err := a.TryWrite([]byte{1}); err == nil {
		t.Fatal("TryWrite after Close succeeded")
	}
}
