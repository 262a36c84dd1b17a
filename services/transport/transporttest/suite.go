package transporttest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Run runs the whole suite against the transport f builds.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f Factory)
	}{
		{"Handshake", testHandshake},
		{"SmallPayloads", testSmallPayloads},
		{"LargePayloads", testLargePayloads},
		{"OneWayOrder", testOneWayOrder},
		{"ConcurrentOutOfOrder", testConcurrentOutOfOrder},
		{"Cancel", testCancel},
		{"Deadline", testDeadline},
		{"InlineContext", testInlineContext},
		{"KeptMessages", testKeptMessages},
		{"HandlerErrors", testHandlerErrors},
		{"BulkRead", testBulkRead},
		{"BulkReadErrors", testBulkReadErrors},
		{"BulkReadCancel", testBulkReadCancel},
		{"TooLarge", testTooLarge},
		{"Close", testClose},
		{"PeerDeath", testPeerDeath},
		{"PeerDeathRaw", testPeerDeathRaw},
		{"HalfOpen", testHalfOpen},
		{"QuietPeerStaysUp", testQuietPeerStaysUp},
		{"SilentDialer", testSilentDialer},
		{"MalformedFrames", testMalformedFrames},
		{"MalformedResponses", testMalformedResponses},
		{"HandshakeRefusals", testHandshakeRefusals},
		{"HandshakeRaw", testHandshakeRaw},
		{"DialClosedPort", testDialClosedPort},
		{"Stress", testStress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, f) })
	}
}

func ctxLimit() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), waitLimit)
}

func request(t testing.TB, c transport.Conn, path string, payload []byte) ([]byte, error) {
	t.Helper()
	ctx, cancel := ctxLimit()
	defer cancel()
	return c.Request(ctx, path, payload)
}

func mustEcho(t testing.TB, c transport.Conn, payload []byte) {
	t.Helper()
	got, err := request(t, c, pathEcho, payload)
	if err != nil {
		t.Fatalf("echo of %d bytes: %v", len(payload), err)
	}
	if i := firstDiff(got, payload); i >= 0 {
		t.Fatalf("echo of %d bytes came back as %d bytes, first difference at byte %d", len(payload), len(got), i)
	}
}

func testHandshake(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	_, _, c := e.pair()
	p := c.Peer()
	if p.ClusterName != serverID.ClusterName || p.InstanceKey != serverID.InstanceKey || p.Role != serverID.Role ||
		!p.StartTime.Equal(serverID.StartTime) || p.Protocol != transport.ProtocolVersion {
		t.Fatalf("Peer() = %+v, want %+v with protocol %d", p, serverID, transport.ProtocolVersion)
	}
	got, err := request(t, c, pathWhoAmI, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s|%s|%s|%d", clientID.Incarnation(), clientID.ClusterName, clientID.Role, transport.ProtocolVersion)
	if string(got) != want {
		t.Fatalf("the handler saw the caller as %q, want %q", got, want)
	}
	if c.RemoteAddr() == "" {
		t.Error("RemoteAddr() is empty")
	}
	if c.Err() != nil || closed(c.Done()) {
		t.Fatalf("a fresh connection reports Err()=%v, Done closed=%v", c.Err(), closed(c.Done()))
	}
}

func testSmallPayloads(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	_, _, c := e.pair()
	for _, n := range []int{0, 1, 2, 63, 64, 4095, 32 * kib, 32*kib + 1, 1 * mib} {
		mustEcho(t, c, randomBytes(n, uint64(n)))
	}
	// The same through a handler served on the reader (InlineHandler),
	// mixed with concurrent ordinary ones.
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := pathEcho
			if i%2 == 0 {
				path = pathInline
			}
			want := randomBytes(i*997, uint64(i))
			got, err := request(t, c, path, want)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s of %d bytes: %d bytes back, %v", path, len(want), len(got), err)
			}
		}()
	}
	wg.Wait()
	// A nil payload is an empty one.
	got, err := request(t, c, pathEcho, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("echo of nil = %d bytes, %v", len(got), err)
	}
}

func testLargePayloads(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	_, _, c := e.pair()
	// 16 MiB fits no single frame once the request head is added; 64 MiB
	// and an odd size take several frames each way.
	for _, n := range []int{16 * mib, 16*mib + 1, 64 * mib, 40*mib + 12345} {
		mustEcho(t, c, randomBytes(n, uint64(n)))
	}
	want := randomBytes(20*mib, 7)
	got, err := request(t, c, pathInline, want)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("inline echo of %d bytes: %d bytes back, %v", len(want), len(got), err)
	}
}

func testOneWayOrder(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h := newHandler()
	l := e.listen(h, nil)
	const conns, msgs = 4, 2000
	var wg sync.WaitGroup
	for i := range conns {
		id := clientID
		id.InstanceKey = fmt.Sprintf("sender-%d", i)
		c, err := e.dialAs(l.Addr(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := ctxLimit()
			defer cancel()
			for s := range uint64(msgs) {
				if err := c.Send(ctx, pathSeq, binary.BigEndian.AppendUint64(nil, s)); err != nil {
					t.Errorf("Send %d on %s: %v", s, id.InstanceKey, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range conns {
		key := fmt.Sprintf("sender-%d", i)
		waitFor(t, key+"'s one-way messages", func() bool { return len(h.seqsOf(key)) >= msgs })
		for j, s := range h.seqsOf(key) {
			if s != uint64(j) {
				t.Fatalf("%s: message %d handled as number %d: one-way messages out of order", key, s, j)
			}
		}
	}
	if n := h.wrongMode.Load(); n != 0 {
		t.Errorf("%d handler calls saw the wrong IsOneWay", n)
	}
}

func testConcurrentOutOfOrder(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()
	var wg sync.WaitGroup
	errs := make([]error, orderedBatch)
	for i := range orderedBatch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := request(t, c, pathOrdered, []byte{byte(i)})
			if err == nil && !bytes.Equal(got, []byte{byte(i), 0xA5}) {
				err = fmt.Errorf("got reply %v", got)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d of %d: %v", i, orderedBatch, err)
		}
	}
	h.ordered.Lock()
	defer h.ordered.Unlock()
	for k, i := range h.ordered.order {
		if i != orderedBatch-1-k {
			t.Fatalf("handlers answered in order %v, want the reverse of arrival", h.ordered.order)
		}
	}
}

func testCancel(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 1)
		go func() {
			_, err := c.Request(ctx, pathBlock, []byte("x"))
			res <- err
		}()
		within(t, "the blocking handler starting", func() blockedCall { return <-h.blocked })
		cancel()
		err := within(t, "a cancelled request", func() error { return <-res })
		wantErr(t, err, context.Canceled)
		if errors.Is(err, transport.ErrTimeout) {
			t.Fatalf("a cancelled request reported a timeout: %v", err)
		}
		// The peer's handler is told: its context ends.
		herr := within(t, "the handler's context ending", func() error { return <-h.blockEnded })
		wantErr(t, herr, context.Canceled)
		mustEcho(t, c, []byte("still usable"))
	}
	// A context already done sends nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Request(ctx, pathEcho, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("request with a done context: %v", err)
	}
}

func testDeadline(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()
	calls := []struct {
		what string
		call func(ctx context.Context) error
	}{
		{"request", func(ctx context.Context) error { _, err := c.Request(ctx, pathBlock, nil); return err }},
		{"bulk read", func(ctx context.Context) error {
			return c.ReadRemote(ctx, transport.RemoteRef{Segment: segBlock, Length: 4}, make([]byte, 4))
		}},
	}
	for _, k := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := within(t, "a "+k.what+" past its deadline", func() error { return k.call(ctx) })
		cancel()
		wantErr(t, err, transport.ErrTimeout, context.DeadlineExceeded)
		bc := within(t, "the blocking handler starting", func() blockedCall { return <-h.blocked })
		if !bc.hadDeadline {
			t.Fatalf("%s: the handler's context had no deadline: the caller's deadline did not travel", k.what)
		}
		within(t, "the handler's context ending", func() error { return <-h.blockEnded })
		mustEcho(t, c, []byte("still usable"))
	}
}

// keptPayload is caller g's i-th payload in testKeptMessages: its own
// prefix, then a fill byte, 0 to 299 bytes in all (a request frame of the
// smallest ones fits a transport's small in-record buffers, the largest
// do not).
func keptPayload(g, i int) []byte {
	p := fmt.Appendf(nil, "%d/%d/", g, i)
	n := max(i%300, len(p))
	return append(p, bytes.Repeat([]byte{byte(g*31 + i)}, n-len(p))...)
}

// testKeptMessages: a request body a handler keeps, and a reply its caller
// keeps, stay as they were while later messages come and go on the same
// connection (a transport that reuses its per-message records must never
// hand out their memory). Several callers at once, on a handler served on
// the reader.
func testKeptMessages(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()
	const callers, each = 4, 300
	replies := make([][][]byte, callers)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				got, err := request(t, c, pathInlineKeep, keptPayload(g, i))
				if err != nil {
					t.Errorf("caller %d, request %d: %v", g, i, err)
					return
				}
				replies[g] = append(replies[g], got)
			}
		}()
	}
	wg.Wait()
	for g := range callers {
		for i, got := range replies[g] {
			if want := keptPayload(g, i); !bytes.Equal(got, want) {
				t.Fatalf("caller %d kept reply %d: %q, want %q", g, i, got, want)
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.kept) != callers*each {
		t.Fatalf("the handler kept %d payloads, want %d", len(h.kept), callers*each)
	}
	for _, p := range h.kept {
		var g, i int
		if _, err := fmt.Sscanf(string(p), "%d/%d/", &g, &i); err != nil || !bytes.Equal(p, keptPayload(g, i)) {
			t.Fatalf("a payload the handler kept changed afterwards: %q", p)
		}
	}
}

// testInlineContext: a handler served on the reader (InlineHandler) gets
// the caller's deadline, and without one a context that ends with the
// connection, like any other handler.
func testInlineContext(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, l, c := e.pair()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := within(t, "an inline request past its deadline", func() error {
		_, err := c.Request(ctx, pathInlineBlock, nil)
		return err
	})
	cancel()
	wantErr(t, err, transport.ErrTimeout, context.DeadlineExceeded)
	if bc := within(t, "the inline handler starting", func() blockedCall { return <-h.blocked }); !bc.hadDeadline {
		t.Fatal("the inline handler's context had no deadline: the caller's deadline did not travel")
	}
	wantErr(t, within(t, "the inline handler's context ending", func() error { return <-h.blockEnded }), context.DeadlineExceeded)
	mustEcho(t, c, []byte("still usable"))

	res := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), pathInlineBlock, nil)
		res <- err
	}()
	if bc := within(t, "the inline handler starting", func() blockedCall { return <-h.blocked }); bc.hadDeadline {
		t.Fatal("an inline handler got a deadline its caller never set")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("listener Close: %v", err)
	}
	wantErr(t, within(t, "the inline handler's context ending", func() error { return <-h.blockEnded }), context.Canceled)
	if err := within(t, "the request whose connection closed", func() error { return <-res }); err == nil {
		t.Fatal("a request whose connection closed under its handler succeeded")
	}
}

func testHandlerErrors(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	_, _, c := e.pair()
	var re *transport.RemoteError

	_, err := request(t, c, pathFail, []byte("xyz"))
	wantErr(t, err, transport.ErrRemote)
	if !errors.As(err, &re) || re.Code != transport.CodeHandler || !strings.Contains(re.Message, "boom: xyz") {
		t.Fatalf("plain handler error came back as %#v", err)
	}

	_, err = request(t, c, pathCode, []byte("k1"))
	wantErr(t, err, transport.ErrRemote)
	if !errors.As(err, &re) || re.Code != transport.CodeNotFound || re.Message != "no key k1" {
		t.Fatalf("coded handler error came back as %#v", err)
	}

	for range 3 {
		_, err = request(t, c, pathPanic, nil)
		wantErr(t, err, transport.ErrRemote)
		if !errors.As(err, &re) || re.Code != transport.CodePanic || !strings.Contains(re.Message, "kaboom") {
			t.Fatalf("panic came back as %#v", err)
		}
		mustEcho(t, c, []byte("survived"))
	}
	_, err = request(t, c, "/no/such/path", nil)
	if !errors.As(err, &re) || re.Code != transport.CodeNotFound {
		t.Fatalf("unknown path came back as %#v", err)
	}
	waitFor(t, "the handler's panic in the log", func() bool { return e.logged("panicked") })
}

// logged reports whether a record's message contains s.
func (e *env) logged(s string) bool {
	e.log.store.mu.Lock()
	defer e.log.store.mu.Unlock()
	for _, r := range e.log.store.recs {
		if strings.Contains(r.msg, s) {
			return true
		}
	}
	return false
}

func readRemote(t testing.TB, c transport.Conn, ref transport.RemoteRef, dst []byte) error {
	t.Helper()
	ctx, cancel := ctxLimit()
	defer cancel()
	return c.ReadRemote(ctx, ref, dst)
}

func testBulkRead(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()
	for _, r := range []struct{ off, n uint64 }{
		{0, 0}, {7, 1}, {1, 4095}, {0, 16 * mib}, {3, 16*mib + 5}, {12345, 64 * mib}, {poolSize - 1, 1},
	} {
		dst := make([]byte, r.n)
		ref := transport.RemoteRef{Segment: segPool, Offset: r.off, Length: r.n, Tag: 9}
		if err := readRemote(t, c, ref, dst); err != nil {
			t.Fatalf("ReadRemote(%s): %v", ref, err)
		}
		if i := firstDiff(dst, h.pool[r.off:r.off+r.n]); i >= 0 {
			t.Fatalf("ReadRemote(%s): first wrong byte at %d", ref, i)
		}
	}
	// Concurrent reads into disjoint parts of one buffer.
	dst := make([]byte, 32*mib)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := dst[i*4*mib : (i+1)*4*mib]
			ref := transport.RemoteRef{Segment: segPool, Offset: uint64(i) * 5 * mib, Length: uint64(len(part))}
			if err := readRemote(t, c, ref, part); err != nil {
				t.Errorf("concurrent ReadRemote(%s): %v", ref, err)
			}
		}()
	}
	wg.Wait()
	for i := range 8 {
		if j := firstDiff(dst[i*4*mib:(i+1)*4*mib], h.pool[i*5*mib:i*5*mib+4*mib]); j >= 0 {
			t.Fatalf("concurrent read %d: first wrong byte at %d", i, j)
		}
	}
	waitFor(t, "every served range released", func() bool { return h.released.Load() == h.served.Load() })
	if n := h.doubleRelease.Load(); n != 0 {
		t.Fatalf("%d release functions called twice", n)
	}
}

func testBulkReadErrors(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()
	var re *transport.RemoteError

	err := readRemote(t, c, transport.RemoteRef{Segment: segPool, Offset: poolSize, Length: 10}, make([]byte, 10))
	wantErr(t, err, transport.ErrRemote)
	if !errors.As(err, &re) || re.Code != transport.CodeNotFound {
		t.Fatalf("read outside the pool came back as %#v", err)
	}
	err = readRemote(t, c, transport.RemoteRef{Segment: segPool, Length: 10}, make([]byte, 9))
	wantErr(t, err, transport.ErrInvalid)

	err = readRemote(t, c, transport.RemoteRef{Segment: segShort, Length: 100}, make([]byte, 100))
	if !errors.As(err, &re) || re.Code != transport.CodeInternal {
		t.Fatalf("a ServeRead of the wrong length came back as %#v", err)
	}
	err = readRemote(t, c, transport.RemoteRef{Segment: segPanic, Length: 100}, make([]byte, 100))
	if !errors.As(err, &re) || re.Code != transport.CodePanic {
		t.Fatalf("a ServeRead panic came back as %#v", err)
	}
	mustEcho(t, c, []byte("survived"))
	waitFor(t, "every served range released", func() bool { return h.released.Load() == h.served.Load() })
}

func testBulkReadCancel(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()

	// Cancelled before the owner answers.
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- c.ReadRemote(ctx, transport.RemoteRef{Segment: segBlock, Length: 10}, make([]byte, 10)) }()
	within(t, "ServeRead starting", func() blockedCall { return <-h.blocked })
	cancel()
	wantErr(t, within(t, "a cancelled bulk read", func() error { return <-res }), context.Canceled)
	wantErr(t, within(t, "ServeRead's context ending", func() error { return <-h.blockEnded }), context.Canceled)

	// Cancelled while the bytes stream in: once ReadRemote has returned,
	// dst must never change again, and the connection keeps working.
	const n = 32 * mib // two frames
	for i := range 8 {
		dst := make([]byte, n)
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 1)
		ref := transport.RemoteRef{Segment: segSignal, Offset: uint64(i), Length: n}
		go func() { res <- c.ReadRemote(ctx, ref, dst) }()
		within(t, "ServeRead starting", func() struct{} { return <-h.readStarted })
		cancel()
		err := within(t, "a bulk read cancelled mid-transfer", func() error { return <-res })
		if err == nil {
			if j := firstDiff(dst, h.pool[i:i+n]); j >= 0 {
				t.Fatalf("a read that succeeded despite its cancel has a wrong byte at %d", j)
			}
		} else {
			wantErr(t, err, context.Canceled)
		}
		snapshot := bytes.Clone(dst)
		// Traffic after the cancel, including a read of the same range
		// into another buffer, must leave dst alone.
		other := make([]byte, n)
		if err := readRemote(t, c, transport.RemoteRef{Segment: segPool, Offset: uint64(i), Length: n}, other); err != nil {
			t.Fatalf("read after a cancelled read: %v", err)
		}
		mustEcho(t, c, []byte("after cancel"))
		if j := firstDiff(dst, snapshot); j >= 0 {
			t.Fatalf("dst changed at byte %d after ReadRemote returned", j)
		}
	}
	waitFor(t, "every served range released", func() bool { return h.released.Load() == h.served.Load() })
	if n := h.doubleRelease.Load(); n != 0 {
		t.Fatalf("%d release functions called twice", n)
	}
}

func testTooLarge(t *testing.T, f Factory) {
	const limit = 1 * mib
	e := newEnv(t, f, func(o *transport.Options) { o.MaxMessageSize = limit })
	_, _, c := e.pair()
	_, err := request(t, c, pathEcho, make([]byte, limit+1))
	wantErr(t, err, transport.ErrFrameTooLarge)
	if errors.Is(err, transport.ErrRemote) {
		t.Fatalf("an oversize request was sent: %v", err)
	}
	mustEcho(t, c, make([]byte, limit))

	_, err = request(t, c, pathGrow, []byte(fmt.Sprint(limit+1)))
	wantErr(t, err, transport.ErrRemote, transport.ErrFrameTooLarge)
	mustEcho(t, c, []byte("still usable"))

	// Bulk reads land in the caller's buffer: no message limit applies.
	dst := make([]byte, 4*limit)
	if err := readRemote(t, c, transport.RemoteRef{Segment: segPool, Length: uint64(len(dst))}, dst); err != nil {
		t.Fatalf("a bulk read above the message limit: %v", err)
	}
}

func testClose(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, _, c := e.pair()
	res := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), pathBlock, nil)
		res <- err
	}()
	within(t, "the blocking handler starting", func() blockedCall { return <-h.blocked })
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantErr(t, within(t, "a request in flight at Close", func() error { return <-res }), transport.ErrClosed)
	if !closed(c.Done()) {
		t.Fatal("Done is open after Close")
	}
	wantErr(t, c.Err(), transport.ErrClosed)
	_, err := request(t, c, pathEcho, nil)
	wantErr(t, err, transport.ErrClosed)
	wantErr(t, c.Send(context.Background(), pathSeq, make([]byte, 8)), transport.ErrClosed)
	wantErr(t, readRemote(t, c, transport.RemoteRef{Length: 1}, make([]byte, 1)), transport.ErrClosed)
	// The listener's handler is told.
	wantErr(t, within(t, "the handler's context ending", func() error { return <-h.blockEnded }), context.Canceled)
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func testPeerDeath(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h, l, c := e.pair()
	other := e.dial(l.Addr())
	res := make(chan error, 2)
	go func() {
		_, err := c.Request(context.Background(), pathBlock, nil)
		res <- err
	}()
	go func() {
		res <- c.ReadRemote(context.Background(), transport.RemoteRef{Segment: segBlock, Length: 1}, make([]byte, 1))
	}()
	for range 2 {
		within(t, "the blocking handlers starting", func() blockedCall { return <-h.blocked })
	}
	if err := l.Close(); err != nil {
		t.Fatalf("listener Close: %v", err)
	}
	for range 2 {
		err := within(t, "a call whose peer went away", func() error { return <-res })
		wantErr(t, err, transport.ErrPeerGone)
		if errors.Is(err, transport.ErrClosed) {
			t.Fatalf("the peer's close came back as a local one: %v", err)
		}
	}
	for _, conn := range []transport.Conn{c, other} {
		within(t, "Done after the peer closed", func() struct{} { <-conn.Done(); return struct{}{} })
		wantErr(t, conn.Err(), transport.ErrPeerGone)
	}
	_, err := request(t, c, pathEcho, nil)
	wantErr(t, err, transport.ErrPeerGone)
}

func testPeerDeathRaw(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	e.needRawListen()

	// The peer reads the request, then its connection is torn down.
	addr := e.rawServer(func(p *rawPeer) {
		if err := p.handshakeAsListener(); err != nil {
			t.Errorf("raw listener: %v", err)
			return
		}
		_, _, _ = p.readFrame()
	})
	c := e.dial(addr)
	err := within(t, "a request whose peer died", func() error {
		_, err := c.Request(context.Background(), pathEcho, []byte("hi"))
		return err
	})
	wantErr(t, err, transport.ErrPeerGone)

	// The peer dies in the middle of a bulk transfer streamed over the
	// connection. A one-sided transport's bulk bytes do not travel there.
	if why := e.setup.OneSidedBulk; why != "" {
		t.Logf("not run: the peer dying mid bulk-read stream: %s", why)
		return
	}
	addr = e.rawServer(func(p *rawPeer) {
		if err := p.handshakeAsListener(); err != nil {
			t.Errorf("raw listener: %v", err)
			return
		}
		h, _, err := p.readFrame()
		if err != nil || h.Type != transport.FrameBulkRead {
			t.Errorf("raw listener: got %v, %v; want a bulk-read", h, err)
			return
		}
		hdr := transport.AppendHeader(nil, transport.Header{Type: transport.FrameBulkData, Stream: h.Stream, Length: 1000})
		_ = p.write(append(hdr, make([]byte, 400)...))
	})
	c = e.dial(addr)
	dst := make([]byte, 1000)
	err = within(t, "a bulk read whose peer died", func() error {
		return c.ReadRemote(context.Background(), transport.RemoteRef{Length: 1000}, dst)
	})
	wantErr(t, err, transport.ErrPeerGone, transport.ErrTruncated)
}

// testMalformedResponses: a listener answers a pending request with a
// response frame that breaks the protocol. The call must end with the
// connection's error (ErrPeerGone, saying ErrProtocol), whichever way the
// dialer's reader holds the call when it finds the fault (a whole frame
// in its buffer is taken out of the call table before it is checked),
// and never hang.
func testMalformedResponses(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	e.needRawListen()
	cases := []struct {
		name  string
		reply func(stream uint64) []byte
	}{
		{"body short of its total", func(s uint64) []byte {
			return frameBytes(transport.FrameResponse, 0, s, append(transport.AppendResponseHead(nil, 10), "abcde"...))
		}},
		{"body beyond its total", func(s uint64) []byte {
			return frameBytes(transport.FrameResponse, 0, s, append(transport.AppendResponseHead(nil, 2), "abcde"...))
		}},
		{"a second response", func(s uint64) []byte {
			ok := frameBytes(transport.FrameResponse, transport.FlagMore, s, append(transport.AppendResponseHead(nil, 10), "abcde"...))
			return append(ok, frameBytes(transport.FrameResponse, 0, s, append(transport.AppendResponseHead(nil, 5), "abcde"...))...)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := e.rawServer(func(p *rawPeer) {
				if err := p.handshakeAsListener(); err != nil {
					t.Errorf("raw listener: %v", err)
					return
				}
				h, _, err := p.readFrame()
				if err != nil || h.Type != transport.FrameRequest {
					t.Errorf("raw listener: got %v, %v; want a request", h, err)
					return
				}
				_ = p.write(tc.reply(h.Stream))
				_, _, _ = p.drain()
			})
			c := e.dial(addr)
			err := within(t, "a request answered by a malformed response", func() error {
				_, err := c.Request(context.Background(), pathEcho, []byte("hi"))
				return err
			})
			wantErr(t, err, transport.ErrPeerGone, transport.ErrProtocol)
		})
	}
}

// testHalfOpen: the peer completes the handshake and then neither reads
// nor answers. Requests end by their context; keepalive declares the
// peer dead after at most KeepaliveTimeout/KeepaliveInterval unanswered
// pings, failing what is still in flight with ErrPeerGone.
func testHalfOpen(t *testing.T, f Factory) {
	e := newEnv(t, f, fastKeepalive)
	e.needRawListen()
	var pings atomic.Int64
	addr := e.rawServer(func(p *rawPeer) {
		if err := p.handshakeAsListener(); err != nil {
			t.Errorf("raw listener: %v", err)
			return
		}
		for {
			h, _, err := p.readFrame()
			if err != nil {
				return
			}
			if h.Type == transport.FramePing {
				pings.Add(1)
			}
		}
	})
	c := e.dial(addr)
	start := time.Now()
	pending := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), pathEcho, []byte("no deadline"))
		pending <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.Request(ctx, pathEcho, []byte("with deadline"))
	wantErr(t, err, transport.ErrTimeout, context.DeadlineExceeded)

	err = within(t, "a request to a silent peer", func() error { return <-pending })
	wantErr(t, err, transport.ErrPeerGone)
	within(t, "Done for a silent peer", func() struct{} { <-c.Done(); return struct{}{} })
	wantErr(t, c.Err(), transport.ErrPeerGone)
	if !strings.Contains(c.Err().Error(), "keepalive") {
		t.Errorf("a silent peer's end does not mention keepalive: %v", c.Err())
	}
	maxPings := int64(keepaliveTimeout / keepaliveInterval)
	if n := pings.Load(); n < 1 || n > maxPings {
		t.Errorf("the peer was declared dead after %d unanswered pings, want 1..%d", n, maxPings)
	}
	t.Logf("silent peer detected after %v (bound: keepalive timeout %v + interval %v)", time.Since(start).Round(time.Millisecond), keepaliveTimeout, keepaliveInterval)
}

// testQuietPeerStaysUp: a peer that answers pings but takes its time is
// alive, however long past the keepalive timeout.
func testQuietPeerStaysUp(t *testing.T, f Factory) {
	e := newEnv(t, f, fastKeepalive)
	e.needRawListen()
	var pings atomic.Int64
	release := make(chan struct{})
	addr := e.rawServer(func(p *rawPeer) {
		if err := p.handshakeAsListener(); err != nil {
			t.Errorf("raw listener: %v", err)
			return
		}
		var req transport.Header
		for req.Type != transport.FrameRequest {
			h, payload, err := p.readFrame()
			if err != nil {
				return
			}
			switch h.Type {
			case transport.FramePing:
				pings.Add(1)
				_ = p.write(frameBytes(transport.FramePong, 0, 0, payload))
			case transport.FrameRequest:
				req = h
			}
		}
		go func() {
			<-release
			_ = p.write(frameBytes(transport.FrameResponse, 0, req.Stream, transport.AppendResponseHead(nil, 0)))
		}()
		for {
			h, payload, err := p.readFrame()
			if err != nil {
				return
			}
			if h.Type == transport.FramePing {
				pings.Add(1)
				_ = p.write(frameBytes(transport.FramePong, 0, 0, payload))
			}
		}
	})
	c := e.dial(addr)
	res := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), pathEcho, nil)
		res <- err
	}()
	// Enough answered pings to span twice the keepalive timeout.
	want := 2 * int64(keepaliveTimeout/keepaliveInterval)
	waitFor(t, fmt.Sprintf("%d pings", want), func() bool { return pings.Load() >= want })
	if closed(c.Done()) {
		t.Fatalf("a peer that answers pings was declared dead: %v", c.Err())
	}
	close(release)
	if err := within(t, "a slow reply", func() error { return <-res }); err != nil {
		t.Fatalf("slow reply: %v", err)
	}
}

// testSilentDialer: a dialer that completes the handshake and goes silent
// is pinged, then dropped by the listener.
func testSilentDialer(t *testing.T, f Factory) {
	e := newEnv(t, f, fastKeepalive)
	e.needRaw()
	_, l, good := e.pair()
	p := e.rawDial(t, l.Addr())
	p.handshakeAsDialer()
	hs, _, err := p.drain()
	if !endedByPeer(err) {
		t.Fatalf("a silent dialer's connection ended with %v, want the listener to close it", err)
	}
	pings := 0
	for _, h := range hs {
		if h.Type == transport.FramePing {
			pings++
		}
	}
	if pings < 1 || pings > int(keepaliveTimeout/keepaliveInterval) {
		t.Errorf("the listener sent %d pings before giving up, want 1..%d", pings, keepaliveTimeout/keepaliveInterval)
	}
	waitFor(t, "a keepalive log record", func() bool { return e.logged("keepalive") })
	mustEcho(t, good, []byte("others unaffected"))
}

func testMalformedFrames(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	e.needRaw()
	_, l, good := e.pair()
	const s = 1
	valid := func(typ transport.FrameType, fl transport.Flags, stream uint64, length uint32, payload []byte) []byte {
		return rawFrame(transport.Magic, transport.FrameVersion, uint8(typ), uint16(fl), 0, stream, length, payload)
	}
	cases := []struct {
		name  string
		bytes []byte
		// truncated: the stream just ends; no error frame is owed.
		truncated bool
	}{
		{name: "bad magic", bytes: rawFrame(0x4859, 1, uint8(transport.FramePing), 0, 0, 0, 8, make([]byte, 8))},
		{name: "http", bytes: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{name: "bad version", bytes: rawFrame(transport.Magic, 9, uint8(transport.FramePing), 0, 0, 0, 8, make([]byte, 8))},
		{name: "unknown type", bytes: valid(99, 0, s, 0, nil)},
		{name: "reserved bits", bytes: rawFrame(transport.Magic, 1, uint8(transport.FramePing), 0, 1, 0, 8, make([]byte, 8))},
		{name: "unknown flag", bytes: valid(transport.FrameRequest, 0x80, s, 18, make([]byte, 18))},
		{name: "oversize length", bytes: valid(transport.FrameRequest, 0, s, 0xFFFFFFFF, nil)},
		{name: "oversize bulk data", bytes: valid(transport.FrameBulkData, 0, s, transport.MaxFramePayload+1, nil)},
		{name: "ping of wrong size", bytes: valid(transport.FramePing, 0, 0, 9, make([]byte, 9))},
		{name: "request on stream 0", bytes: requestBytes(0, 0, pathEcho, nil)},
		{name: "continuation of nothing", bytes: valid(transport.FrameRequest, transport.FlagCont, s, 3, []byte("abc"))},
		{name: "hello after handshake", bytes: helloBytes(transport.FrameHello, clientID)},
		{name: "response from the dialer", bytes: valid(transport.FrameResponse, 0, s, 8, make([]byte, 8))},
		{name: "path overruns frame", bytes: valid(transport.FrameRequest, 0, s, 18, binary.BigEndian.AppendUint16(make([]byte, 16), 500))},
		{name: "body above total", bytes: valid(transport.FrameRequest, 0, s, 21, append(transport.AppendRequestHead(nil, transport.RequestHead{Total: 1}), "abc"...))},
		{name: "total above limit", bytes: valid(transport.FrameRequest, transport.FlagMore, s, 18,
			transport.AppendRequestHead(nil, transport.RequestHead{Total: transport.DefaultMaxMessageSize + 1}))},
		{name: "duplicate stream", bytes: append(valid(transport.FrameRequest, transport.FlagMore, s, 19,
			append(transport.AppendRequestHead(nil, transport.RequestHead{Total: 2}), 'a')),
			valid(transport.FrameRequest, transport.FlagMore, s, 19, append(transport.AppendRequestHead(nil, transport.RequestHead{Total: 2}), 'a'))...)},
		{name: "truncated header", bytes: valid(transport.FrameRequest, 0, s, 18, nil)[:7], truncated: true},
		{name: "truncated payload", bytes: requestBytes(s, 0, pathEcho, []byte("hello"))[:30], truncated: true},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			p := e.rawDial(t, l.Addr())
			p.handshakeAsDialer()
			if err := p.write(tc.bytes); err != nil {
				t.Fatalf("write: %v", err)
			}
			if tc.truncated {
				if cw, ok := p.c.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				} else {
					_ = p.c.Close()
					mustEcho(t, good, []byte("others unaffected"))
					return
				}
			}
			_, errs, err := p.drain()
			if !endedByPeer(err) {
				t.Fatalf("after a malformed frame the connection ended with %v, want the listener to close it", err)
			}
			if !tc.truncated {
				if len(errs) == 0 || errs[len(errs)-1].Code != transport.CodeProtocol {
					t.Fatalf("the listener closed without an error frame of code %s (got %v)", transport.CodeProtocol, errs)
				}
				waitFor(t, "a protocol error in the log", func() bool { return e.log.loggedErr(transport.ErrProtocol) })
			} else {
				waitFor(t, "a truncated frame in the log", func() bool { return e.log.loggedErr(transport.ErrTruncated) })
			}
			mustEcho(t, good, []byte("others unaffected"))
		})
	}
}

func testHandshakeRefusals(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h := newHandler()

	// Default verify: same cluster only.
	l := e.listen(h, nil)
	other := clientID
	other.ClusterName = "elsewhere"
	_, err := e.dialAs(l.Addr(), other, func(transport.Identity) error { return nil })
	wantErr(t, err, transport.ErrWrongCluster, transport.ErrRefused)
	if !strings.Contains(err.Error(), "elsewhere") || !strings.Contains(err.Error(), "suite") {
		t.Errorf("a wrong-cluster refusal does not name both clusters: %v", err)
	}

	// A Verify that knows the caller's current incarnation.
	current := clientID.StartTime
	l2 := e.listen(h, func(p transport.Identity) error {
		if p.ClusterName != serverID.ClusterName {
			return fmt.Errorf("%w: %q", transport.ErrWrongCluster, p.ClusterName)
		}
		if !p.StartTime.Equal(current) {
			return fmt.Errorf("%w: %s started at %d, the routing table has %d", transport.ErrStaleMember, p.InstanceKey, p.StartTime.UnixNano(), current.UnixNano())
		}
		return nil
	})
	stale := clientID
	stale.StartTime = current.Add(-time.Hour)
	_, err = e.dialAs(l2.Addr(), stale, nil)
	wantErr(t, err, transport.ErrStaleMember)
	if c, err := e.dialAs(l2.Addr(), clientID, nil); err != nil {
		t.Fatalf("the current incarnation was refused: %v", err)
	} else {
		mustEcho(t, c, []byte("ok"))
	}

	// Any other Verify error is a plain refusal, its message intact.
	l3 := e.listen(h, func(transport.Identity) error { return errors.New("not today") })
	_, err = e.dialAs(l3.Addr(), clientID, nil)
	wantErr(t, err, transport.ErrRefused)
	if !strings.Contains(err.Error(), "not today") {
		t.Errorf("the refusal lost its message: %v", err)
	}

	// The dialer refuses the listener: a restarted owner at an old address.
	_, err = e.dialAs(l.Addr(), clientID, func(p transport.Identity) error {
		return fmt.Errorf("%w: %s is not the incarnation the routing table lists", transport.ErrStaleMember, p.Incarnation())
	})
	wantErr(t, err, transport.ErrStaleMember)
	// The listener keeps serving.
	c := e.dial(l.Addr())
	mustEcho(t, c, []byte("ok"))
}

func testHandshakeRaw(t *testing.T, f Factory) {
	e := newEnv(t, f, func(o *transport.Options) { o.HandshakeTimeout = 200 * time.Millisecond })
	e.needRaw()
	_, l, good := e.pair()

	// An old protocol version is refused with its code.
	old := clientID
	p := e.rawDial(t, l.Addr())
	hello, _ := transport.AppendHello(nil, transport.Hello{Identity: old})
	if err := p.write(frameBytes(transport.FrameHello, 0, 0, hello)); err != nil {
		t.Fatal(err)
	}
	_, errs, err := p.drain()
	if !endedByPeer(err) || len(errs) != 1 || errs[0].Code != transport.CodeVersionMismatch {
		t.Fatalf("protocol 0 hello: got errors %v, end %v; want one %s then close", errs, err, transport.CodeVersionMismatch)
	}

	// Anything but a hello first is a protocol error.
	p = e.rawDial(t, l.Addr())
	if err := p.write(requestBytes(1, 0, pathEcho, nil)); err != nil {
		t.Fatal(err)
	}
	_, errs, err = p.drain()
	if !endedByPeer(err) || len(errs) != 1 || errs[0].Code != transport.CodeProtocol {
		t.Fatalf("request before hello: got errors %v, end %v", errs, err)
	}

	// Before the handshake, frames are bounded small: nothing big is
	// allocated for a stranger.
	p = e.rawDial(t, l.Addr())
	if err := p.write(rawFrame(transport.Magic, 1, uint8(transport.FrameRequest), 0, 0, 1, transport.MaxFramePayload, nil)); err != nil {
		t.Fatal(err)
	}
	_, errs, err = p.drain()
	if !endedByPeer(err) || len(errs) != 1 || errs[0].Code != transport.CodeProtocol {
		t.Fatalf("big frame before hello: got errors %v, end %v", errs, err)
	}

	// A dialer that says nothing is dropped after the handshake timeout.
	p = e.rawDial(t, l.Addr())
	if _, _, err := p.drain(); !endedByPeer(err) {
		t.Fatalf("a dialer silent through the handshake ended with %v, want the listener to close it", err)
	}
	mustEcho(t, good, []byte("others unaffected"))
}

func testDialClosedPort(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	l := e.listen(newHandler(), nil)
	addr := l.Addr()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	err := within(t, "dialing a closed port", func() error {
		_, err := e.dialAs(addr, clientID, nil)
		return err
	})
	wantErr(t, err, transport.ErrUnreachable)
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("the dial error does not name the address %s: %v", addr, err)
	}
}

// testStress mixes every call kind on several connections at once, with
// some cancelled, and checks every byte that comes back.
func testStress(t *testing.T, f Factory) {
	e := newEnv(t, f, nil)
	h := newHandler()
	l := e.listen(h, nil)
	const conns, workers, iters = 3, 8, 40
	var wg sync.WaitGroup
	for ci := range conns {
		id := clientID
		id.InstanceKey = fmt.Sprintf("stress-%d", ci)
		c, err := e.dialAs(l.Addr(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seed := uint64(ci*workers + w)
				for i := range iters {
					n := int((seed*7919 + uint64(i)*104729) % (3 * mib))
					ctx, cancel := ctxLimit()
					cancelEarly := i%7 == 3
					if cancelEarly {
						cancel()
					}
					switch i % 3 {
					case 0:
						want := randomBytes(n%(256*kib), seed+uint64(i))
						got, err := c.Request(ctx, pathEcho, want)
						if err == nil && !bytes.Equal(got, want) {
							t.Errorf("stress echo of %d bytes came back wrong", len(want))
						} else if err != nil && !(cancelEarly && errors.Is(err, context.Canceled)) {
							t.Errorf("stress echo: %v", err)
						}
					case 1:
						dst := make([]byte, n)
						ref := transport.RemoteRef{Segment: segPool, Offset: uint64(i), Length: uint64(n)}
						err := c.ReadRemote(ctx, ref, dst)
						if err == nil && firstDiff(dst, h.pool[i:i+n]) >= 0 {
							t.Errorf("stress read %s came back wrong", ref)
						} else if err != nil && !(cancelEarly && errors.Is(err, context.Canceled)) {
							t.Errorf("stress read: %v", err)
						}
					case 2:
						_, err := c.Request(ctx, pathFail, []byte("s"))
						if !errors.Is(err, transport.ErrRemote) && !(cancelEarly && errors.Is(err, context.Canceled)) {
							t.Errorf("stress fail: %v", err)
						}
					}
					cancel()
				}
			}()
		}
	}
	wg.Wait()
	waitFor(t, "every served range released", func() bool { return h.released.Load() == h.served.Load() })
}
