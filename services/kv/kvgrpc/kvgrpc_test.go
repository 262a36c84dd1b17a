//go:build linux && cgo

package kvgrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/services/kv"
)

func (e *env) stub() fluxonv1.KVClient { return fluxonv1.NewKVClient(e.client.conn) }

func TestPutGetStatExistsRemove(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx, c := ctxT(t), e.client

	v1, err := c.Put(ctx, "k", []byte("hello"), kv.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, info, err := c.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" || info.Size != 5 || info.Version != v1 || info.Key != "k" || info.Kind != kv.KindBytes {
		t.Fatalf("Get = %q %+v, want hello at version %d", got, info, v1)
	}

	dict, err := kv.EncodeDict(kv.Dict{kv.Int("n", 7), kv.String("s", "x")})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := c.Put(ctx, "k", dict, kv.PutOptions{Kind: kv.KindDict, IfPresent: true})
	if err != nil {
		t.Fatal(err)
	}
	if v2 <= v1 {
		t.Fatalf("overwrite version %d not above %d", v2, v1)
	}
	st, err := c.Stat(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != uint64(len(dict)) || st.Version != v2 || st.Kind != kv.KindDict || st.Lease != 0 || st.TTL != 0 {
		t.Fatalf("Stat = %+v", st)
	}
	if local, _ := e.store.Stat("k"); local.Version != st.Version || local.Kind != st.Kind {
		t.Fatalf("remote Stat %+v differs from the store's %+v", st, local)
	}

	// Binary keys and an empty value survive the trip.
	bin := string([]byte{0xff, 0, 0xfe})
	if _, err := c.Put(ctx, bin, nil, kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, info, err := c.Get(ctx, bin); err != nil || len(got) != 0 || got == nil || info.Size != 0 {
		t.Fatalf("Get(binary key) = %q, %+v, %v; want an empty, non-nil value", got, info, err)
	}

	for _, k := range []string{"k", bin} {
		if ok, err := c.Exists(ctx, k); err != nil || !ok {
			t.Fatalf("Exists(%q) = %v, %v", k, ok, err)
		}
		if err := c.Remove(ctx, k); err != nil {
			t.Fatal(err)
		}
		if ok, err := c.Exists(ctx, k); err != nil || ok {
			t.Fatalf("Exists(%q) after Remove = %v, %v", k, ok, err)
		}
	}
	_, _, err = c.Get(ctx, "k")
	wantErr(t, err, kv.ErrNotFound)
	wantErr(t, c.Remove(ctx, "k"), kv.ErrNotFound)
	_, err = c.Stat(ctx, "k")
	wantErr(t, err, kv.ErrNotFound)
	_, err = c.Exists(ctx, "")
	wantErr(t, err, kv.ErrEmptyKey) // a malformed key is an error, not "absent"

	var buf bytes.Buffer
	_, _ = c.Put(ctx, "w", []byte("to a writer"), kv.PutOptions{})
	if info, err := c.GetTo(ctx, "w", &buf); err != nil || buf.String() != "to a writer" || info.Size != 11 {
		t.Fatalf("GetTo = %q, %+v, %v", buf.String(), info, err)
	}
}

// A 64 MiB value goes through PutStream and comes back through Get and
// GetTo byte for byte; the store holds it whole.
func TestLargeValue64MiB(t *testing.T) {
	e := newEnv(t, 256*mib)
	ctx, c := ctxT(t), e.client
	want := randomBytes(64*mib, 1)

	v, err := c.Put(ctx, "big", want, kv.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, info, err := c.Get(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != uint64(len(want)) || info.Version != v || !bytes.Equal(got, want) {
		t.Fatalf("Get returned %d bytes (info %+v), equal=%v; want the %d bytes put at version %d", len(got), info, bytes.Equal(got, want), len(want), v)
	}
	h, err := e.store.Get("big")
	if err != nil {
		t.Fatal(err)
	}
	inPool := bytes.Equal(h.Bytes(), want)
	_ = h.Close()
	if !inPool {
		t.Fatal("the pool does not hold the value PutStream sent")
	}
	var buf bytes.Buffer
	if _, err := c.GetTo(ctx, "big", &buf); err != nil || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("GetTo: %v, equal=%v", err, bytes.Equal(buf.Bytes(), want))
	}

	// PutReader streams from a reader without the value in one buffer.
	want2 := randomBytes(64*mib+12345, 2)
	if _, err := c.PutReader(ctx, "big", bytes.NewReader(want2), uint64(len(want2)), kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.Get(ctx, "big"); err != nil || !bytes.Equal(got, want2) {
		t.Fatalf("after PutReader: %v, equal=%v", err, bytes.Equal(got, want2))
	}
}

func TestUnaryPutLimit(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx := ctxT(t)

	// Exactly MaxUnaryValue still goes in one message.
	atLimit := randomBytes(MaxUnaryValue, 3)
	if _, err := e.stub().Put(ctx, &fluxonv1.PutRequest{Key: []byte("k"), Value: atLimit}); err != nil {
		t.Fatalf("unary Put of MaxUnaryValue bytes: %v", err)
	}
	_, err := e.stub().Put(ctx, &fluxonv1.PutRequest{Key: []byte("k"), Value: make([]byte, MaxUnaryValue+1)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "PutStream") {
		t.Fatalf("unary Put above the limit: %v, want InvalidArgument naming PutStream", err)
	}
	wantErr(t, fromStatus(err), ErrUsePutStream)

	// The client switches to PutStream by itself.
	over := randomBytes(MaxUnaryValue+1, 4)
	if _, err := e.client.Put(ctx, "k", over, kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _, err := e.client.Get(ctx, "k"); err != nil || !bytes.Equal(got, over) {
		t.Fatalf("Get after a streamed Put: %v, equal=%v", err, bytes.Equal(got, over))
	}
}

// Every way a PutStream can go wrong leaves no key (or the old value) and no
// reservation: the pool's objects and bytes are back where they were, and no
// put of the key is left in flight.
func TestPutStreamFailuresLeaveNothing(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx, c := ctxT(t), e.client
	old := []byte("the old value")
	if _, err := c.Put(ctx, "old", old, kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	base := e.use(t)

	header := func(key string, size uint64) *fluxonv1.PutStreamRequest {
		return &fluxonv1.PutStreamRequest{Msg: &fluxonv1.PutStreamRequest_Header{Header: &fluxonv1.PutStreamHeader{Key: []byte(key), Size: size}}}
	}
	chunk := func(n int) *fluxonv1.PutStreamRequest {
		return &fluxonv1.PutStreamRequest{Msg: &fluxonv1.PutStreamRequest_Chunk{Chunk: make([]byte, n)}}
	}

	cases := []struct {
		name    string
		key     string
		msgs    []*fluxonv1.PutStreamRequest
		cut     bool  // cancel the stream instead of closing it
		wantErr error // for a closed stream
	}{
		{"cut midway", "new", []*fluxonv1.PutStreamRequest{header("new", 8*mib), chunk(mib), chunk(mib)}, true, nil},
		{"cut midway over an old value", "old", []*fluxonv1.PutStreamRequest{header("old", 8*mib), chunk(mib)}, true, nil},
		{"cut after the header", "new", []*fluxonv1.PutStreamRequest{header("new", 8*mib)}, true, nil},
		{"too few bytes", "new", []*fluxonv1.PutStreamRequest{header("new", 3*mib), chunk(mib), chunk(mib)}, false, ErrSizeMismatch},
		{"too many bytes", "old", []*fluxonv1.PutStreamRequest{header("old", mib), chunk(mib), chunk(1)}, false, ErrSizeMismatch},
		{"chunk too big", "new", []*fluxonv1.PutStreamRequest{header("new", 4*mib), chunk(ChunkSize + 1)}, false, ErrBadRequest},
		{"second header", "new", []*fluxonv1.PutStreamRequest{header("new", 4*mib), chunk(10), header("new", 4*mib)}, false, ErrBadRequest},
		{"no header", "new", []*fluxonv1.PutStreamRequest{chunk(10)}, false, ErrBadRequest},
		{"empty stream", "new", nil, false, ErrBadRequest},
		{"bigger than the pool", "new", []*fluxonv1.PutStreamRequest{header("new", 1<<40)}, false, kv.ErrValueTooLarge},
		{"empty key", "", []*fluxonv1.PutStreamRequest{header("", 10), chunk(10)}, false, kv.ErrEmptyKey},
		{"malformed dict", "new", []*fluxonv1.PutStreamRequest{{Msg: &fluxonv1.PutStreamRequest_Header{Header: &fluxonv1.PutStreamHeader{
			Key: []byte("new"), Size: 2 * mib, Kind: fluxonv1.ValueKind_VALUE_KIND_DICT}}}, chunk(mib), chunk(mib)}, false, kv.ErrBadValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			st, err := e.stub().PutStream(sctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.msgs {
				if err := st.Send(m); err != nil {
					break // the server gave up already; CloseAndRecv says why
				}
			}
			if tc.cut {
				// Let the server reserve before cutting, so there is something to give back.
				waitFor(t, "the reservation", func() bool { return e.use(t).objects > base.objects })
				cancel()
			} else {
				_, err := st.CloseAndRecv()
				wantErr(t, fromStatus(err), tc.wantErr)
			}
			waitFor(t, "the pool to be back where it was", func() bool { return e.use(t) == base })
			if tc.key == "new" {
				if e.store.Exists("new") {
					t.Fatal("a failed PutStream left the key behind")
				}
			}
			if got, _, err := e.store.GetCopy("old", nil); err != nil || !bytes.Equal(got, old) {
				t.Fatalf("old value after a failed PutStream: %q, %v", got, err)
			}
			// Nothing is left in flight: a put that refuses to race one succeeds.
			if _, err := c.Put(ctx, "probe", []byte("x"), kv.PutOptions{RejectInflight: true}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Put(ctx, tc.key+"x", []byte("x"), kv.PutOptions{RejectInflight: true}); err != nil {
				t.Fatal(err)
			}
			_ = c.Remove(ctx, "probe")
			_ = c.Remove(ctx, tc.key+"x")
			waitFor(t, "the probes to go", func() bool { return e.use(t) == base })
		})
	}

	// A reader that fails midway: the client cuts the stream.
	failing := io.MultiReader(bytes.NewReader(make([]byte, 3*mib)), errReader{})
	_, err := c.PutReader(ctx, "new", failing, 8*mib, kv.PutOptions{})
	wantErr(t, err, errBroken)
	waitFor(t, "the pool after a failed PutReader", func() bool { return e.use(t) == base })
	if e.store.Exists("new") {
		t.Fatal("a failed PutReader left the key behind")
	}
}

var errBroken = errors.New("broken reader")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

// A Get in flight keeps returning the value it started with while the key is
// overwritten and removed: the server's holder keeps the old bytes alive
// until the stream ends.
func TestGetHoldsValueAcrossOverwrite(t *testing.T) {
	// A small fixed flow-control window keeps the server from sending the
	// whole value into buffers before the overwrite.
	e := newEnv(t, 128*mib, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, c := ctxT(t), e.client
	oldVal, newVal := randomBytes(16*mib, 5), randomBytes(16*mib, 6)
	oldVer, err := c.Put(ctx, "k", oldVal, kv.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := e.use(t)

	st, err := e.stub().Get(ctx, &fluxonv1.GetRequest{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetInfo().GetVersion() != oldVer || first.GetInfo().GetSize() != uint64(len(oldVal)) {
		t.Fatalf("first message info %+v", first.GetInfo())
	}
	if len(first.GetChunk()) != ChunkSize {
		t.Fatalf("first chunk is %d bytes, want %d", len(first.GetChunk()), ChunkSize)
	}
	if _, err := c.Put(ctx, "k", newVal, kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if u := e.use(t); u.objects != base.objects+1 {
		t.Fatalf("after the overwrite the pool has %d objects, want %d (old value held by the stream, new value)", u.objects, base.objects+1)
	}
	got := slices.Clone(first.GetChunk())
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.GetInfo() != nil || len(m.GetChunk()) > ChunkSize {
			t.Fatalf("later message with info %v and a %d-byte chunk", m.GetInfo(), len(m.GetChunk()))
		}
		got = append(got, m.GetChunk()...)
	}
	if !bytes.Equal(got, oldVal) {
		t.Fatalf("the stream returned %d bytes that are not the old value", len(got))
	}
	waitFor(t, "the old value to be freed", func() bool { return e.use(t) == base })
	if cur, _, err := c.Get(ctx, "k"); err != nil || !bytes.Equal(cur, newVal) {
		t.Fatalf("Get after the overwrite: %v, equal=%v", err, bytes.Equal(cur, newVal))
	}
}

// A Get cancelled midway lets go of the value.
func TestGetCancelClosesHolder(t *testing.T) {
	e := newEnv(t, 128*mib, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx := ctxT(t)
	empty := e.use(t)
	if _, err := e.client.Put(ctx, "k", randomBytes(16*mib, 7), kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	st, err := e.stub().Get(sctx, &fluxonv1.GetRequest{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Remove(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if u := e.use(t); u == empty {
		t.Fatal("the value was freed while a Get stream held it")
	}
	cancel()
	waitFor(t, "the cancelled Get to let go", func() bool { return e.use(t) == empty })

	// GetTo whose writer fails cancels the stream the same way.
	if _, err := e.client.Put(ctx, "k", randomBytes(16*mib, 8), kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.GetTo(ctx, "k", failWriter{})
	wantErr(t, err, errBroken)
	if err := e.client.Remove(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed GetTo to let go", func() bool { return e.use(t) == empty })
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errBroken }

// Errors keep their identity across the wire: errors.Is against kv's
// sentinels, the documented status code, and the reason that tells a
// missing lease from a missing key.
func TestErrorsAcrossTheWire(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx, c := ctxT(t), e.client
	if _, err := c.Put(ctx, "exists", []byte("v"), kv.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	// Hold a put of "busy" in flight for the ErrInflight case.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ps, err := e.stub().PutStream(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Send(&fluxonv1.PutStreamRequest{Msg: &fluxonv1.PutStreamRequest_Header{Header: &fluxonv1.PutStreamHeader{Key: []byte("busy"), Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the in-flight put", func() bool { return e.use(t).objects == 2 })

	put := func(key string, o kv.PutOptions) func() error {
		return func() error { _, err := c.Put(ctx, key, []byte("v"), o); return err }
	}
	cases := []struct {
		name   string
		call   func() error
		target error
		code   codes.Code
		reason fluxonv1.ErrorReason
	}{
		{"get missing", func() error { _, _, err := c.Get(ctx, "nope"); return err }, kv.ErrNotFound, codes.NotFound, fluxonv1.ErrorReason_KEY_NOT_FOUND},
		{"stat missing", func() error { _, err := c.Stat(ctx, "nope"); return err }, kv.ErrNotFound, codes.NotFound, fluxonv1.ErrorReason_KEY_NOT_FOUND},
		{"if_present missing", put("nope", kv.PutOptions{IfPresent: true}), kv.ErrNotFound, codes.NotFound, fluxonv1.ErrorReason_KEY_NOT_FOUND},
		{"if_absent existing", put("exists", kv.PutOptions{IfAbsent: true}), kv.ErrExists, codes.AlreadyExists, fluxonv1.ErrorReason_KEY_EXISTS},
		{"reject_inflight", put("busy", kv.PutOptions{RejectInflight: true}), kv.ErrInflight, codes.Aborted, fluxonv1.ErrorReason_PUT_INFLIGHT},
		{"empty key", put("", kv.PutOptions{}), kv.ErrEmptyKey, codes.InvalidArgument, fluxonv1.ErrorReason_EMPTY_KEY},
		{"key too long", put(strings.Repeat("k", kv.MaxKeyLen+1), kv.PutOptions{}), kv.ErrKeyTooLong, codes.InvalidArgument, fluxonv1.ErrorReason_KEY_TOO_LONG},
		{"value too large", func() error {
			_, err := c.PutReader(ctx, "huge", zeros{}, 1<<40, kv.PutOptions{})
			return err
		}, kv.ErrValueTooLarge, codes.InvalidArgument, fluxonv1.ErrorReason_VALUE_TOO_LARGE},
		{"put with a missing lease", put("k", kv.PutOptions{Lease: 424242}), kv.ErrLeaseNotFound, codes.NotFound, fluxonv1.ErrorReason_LEASE_NOT_FOUND},
		{"keepalive of a missing lease", func() error { _, err := c.KeepAlive(ctx, 424242); return err }, kv.ErrLeaseNotFound, codes.NotFound, fluxonv1.ErrorReason_LEASE_NOT_FOUND},
		{"revoke of a missing lease", func() error { return c.Revoke(ctx, 424242) }, kv.ErrLeaseNotFound, codes.NotFound, fluxonv1.ErrorReason_LEASE_NOT_FOUND},
		{"ttl of a missing lease", func() error { _, err := c.LeaseTTL(ctx, 424242); return err }, kv.ErrLeaseNotFound, codes.NotFound, fluxonv1.ErrorReason_LEASE_NOT_FOUND},
		{"grant too short", func() error { _, err := c.Grant(ctx, 10*time.Millisecond); return err }, kv.ErrLeaseTTL, codes.InvalidArgument, fluxonv1.ErrorReason_LEASE_TTL_OUT_OF_RANGE},
		{"put ttl too long", put("k", kv.PutOptions{TTL: kv.MaxLeaseTTL + time.Hour}), kv.ErrLeaseTTL, codes.InvalidArgument, fluxonv1.ErrorReason_LEASE_TTL_OUT_OF_RANGE},
		{"malformed dict", put("k", kv.PutOptions{Kind: kv.KindDict}), kv.ErrBadValue, codes.InvalidArgument, fluxonv1.ErrorReason_BAD_VALUE},
		{"malformed streamed dict", func() error {
			_, err := c.Put(ctx, "k", make([]byte, MaxUnaryValue+1), kv.PutOptions{Kind: kv.KindDict})
			return err
		}, kv.ErrBadValue, codes.InvalidArgument, fluxonv1.ErrorReason_BAD_VALUE},
		{"unknown kind", put("k", kv.PutOptions{Kind: 7}), ErrBadRequest, codes.InvalidArgument, fluxonv1.ErrorReason_BAD_REQUEST},
		{"lease and ttl", put("k", kv.PutOptions{Lease: 1, TTL: time.Minute}), ErrBadRequest, codes.InvalidArgument, fluxonv1.ErrorReason_BAD_REQUEST},
		{"if_absent and if_present", put("k", kv.PutOptions{IfAbsent: true, IfPresent: true}), ErrBadRequest, codes.InvalidArgument, fluxonv1.ErrorReason_BAD_REQUEST},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			wantErr(t, err, tc.target)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("status code %v, want %v (%v)", got, tc.code, err)
			}
			var ge *Error
			if !errors.As(err, &ge) || ge.Reason != tc.reason.String() {
				t.Fatalf("error %v has reason %q, want %s", err, ge.Reason, tc.reason)
			}
			if tc.target == kv.ErrLeaseNotFound && errors.Is(err, kv.ErrNotFound) {
				t.Fatal("a missing lease reads as a missing key")
			}
			if ge.Message == "" {
				t.Fatal("no message")
			}
		})
	}
	cancel()

	// A pool full of leased values refuses with ResourceExhausted.
	id, err := c.Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_, err = c.Put(ctx, fmt.Sprintf("fill-%d", i), make([]byte, 4*mib), kv.PutOptions{Lease: id})
		if err != nil || i > 64 {
			break
		}
	}
	wantErr(t, err, kv.ErrPoolFull)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("pool full: code %v", status.Code(err))
	}
	if err := c.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}

	// A closed store is Unavailable.
	_ = e.store.Close()
	_, err = c.Put(ctx, "k", []byte("v"), kv.PutOptions{})
	wantErr(t, err, kv.ErrClosed)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("closed store: code %v", status.Code(err))
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func TestLeases(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx, c := ctxT(t), e.client

	id, err := c.Grant(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if _, err := c.Put(ctx, k, []byte(k), kv.PutOptions{Lease: id}); err != nil {
			t.Fatal(err)
		}
	}
	info, err := c.Stat(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if info.Lease != id || info.TTL <= 0 || info.TTL > 30*time.Second {
		t.Fatalf("Stat of a leased key: %+v", info)
	}
	if _, info, err := c.Get(ctx, "b"); err != nil || info.Lease != id || info.TTL <= 0 {
		t.Fatalf("Get of a leased key: %+v, %v", info, err)
	}
	if ttl, err := c.LeaseTTL(ctx, id); err != nil || ttl <= 0 || ttl > 30*time.Second {
		t.Fatalf("LeaseTTL = %v, %v", ttl, err)
	}
	if ttl, err := c.KeepAlive(ctx, id); err != nil || ttl != 30*time.Second {
		t.Fatalf("KeepAlive = %v, %v", ttl, err)
	}
	if st, err := c.Stats(ctx); err != nil || st.Leases != 1 {
		t.Fatalf("Stats.Leases = %d, %v", st.Leases, err)
	}
	if err := c.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if ok, err := c.Exists(ctx, k); err != nil || ok {
			t.Fatalf("%q after Revoke: exists=%v, %v", k, ok, err)
		}
	}
	_, err = c.LeaseTTL(ctx, id)
	wantErr(t, err, kv.ErrLeaseNotFound)

	// A TTL of its own.
	if _, err := c.Put(ctx, "t", []byte("v"), kv.PutOptions{TTL: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if info, err := c.Stat(ctx, "t"); err != nil || info.Lease == 0 || info.TTL <= 0 || info.TTL > 20*time.Second {
		t.Fatalf("Stat of a key with a TTL: %+v, %v", info, err)
	}
}

func TestBatches(t *testing.T) {
	e := newEnv(t, 128*mib)
	ctx, c := ctxT(t), e.client

	big := randomBytes(MaxBatchBytes+1, 9) // put on its own, through PutStream
	dict, err := kv.EncodeDict(kv.Dict{kv.Bool("b", true)})
	if err != nil {
		t.Fatal(err)
	}
	items := []PutItem{
		{Key: "a", Value: []byte("1")},
		{Key: "", Value: []byte("bad key")},
		{Key: "big", Value: big},
		{Key: "d", Value: dict, Options: kv.PutOptions{Kind: kv.KindDict}},
		{Key: "a", Value: []byte("2"), Options: kv.PutOptions{IfAbsent: true}},
		{Key: "e", Value: []byte("not a dict"), Options: kv.PutOptions{Kind: kv.KindDict}},
	}
	res, err := c.BatchPut(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	if e.store.Exists("e") {
		t.Fatal("a malformed dict was stored")
	}
	if res[0].Err != nil || res[2].Err != nil || res[3].Err != nil {
		t.Fatalf("BatchPut results %+v", res)
	}
	wantErr(t, res[1].Err, kv.ErrEmptyKey)
	wantErr(t, res[4].Err, kv.ErrExists)
	wantErr(t, res[5].Err, kv.ErrBadValue)
	if !(res[0].Version < res[2].Version && res[2].Version < res[3].Version) {
		t.Fatalf("BatchPut did not apply items in order: versions %d, %d, %d", res[0].Version, res[2].Version, res[3].Version)
	}

	got, err := c.BatchGet(ctx, []string{"a", "missing", "big", "d"})
	if err != nil {
		t.Fatal(err)
	}
	if string(got[0].Value) != "1" || got[0].Info.Version != res[0].Version || got[0].Info.Key != "a" {
		t.Fatalf("BatchGet a = %+v", got[0])
	}
	wantErr(t, got[1].Err, kv.ErrNotFound)
	if !bytes.Equal(got[2].Value, big) || got[2].Err != nil {
		t.Fatalf("BatchGet big: %v, equal=%v (the client should fall back to Get)", got[2].Err, bytes.Equal(got[2].Value, big))
	}
	if got[3].Info.Kind != kv.KindDict || !bytes.Equal(got[3].Value, dict) {
		t.Fatalf("BatchGet d = %+v", got[3])
	}

	// The server fills a response up to MaxBatchBytes and sends the rest back
	// as USE_GET.
	three := randomBytes(3*mib, 10)
	for _, k := range []string{"m1", "m2", "m3"} {
		if _, err := c.Put(ctx, k, three, kv.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := e.stub().BatchGet(ctx, &fluxonv1.BatchGetRequest{Keys: [][]byte{[]byte("m1"), []byte("m2"), []byte("a")}})
	if err != nil {
		t.Fatal(err)
	}
	if r := raw.GetResults(); codes.Code(r[0].GetStatus().GetCode()) != codes.OK || !bytes.Equal(r[0].GetValue(), three) ||
		r[1].GetStatus().GetReason() != fluxonv1.ErrorReason_USE_GET.String() || codes.Code(r[1].GetStatus().GetCode()) != codes.ResourceExhausted ||
		string(r[2].GetValue()) != "1" {
		t.Fatalf("raw BatchGet statuses: %v / %v / %v", r[0].GetStatus(), r[1].GetStatus(), r[2].GetStatus())
	}
	all, err := c.BatchGet(ctx, []string{"m1", "m2", "m3"})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range all {
		if r.Err != nil || !bytes.Equal(r.Value, three) {
			t.Fatalf("BatchGet m%d: %v", i+1, r.Err)
		}
	}

	errs, err := c.BatchRemove(ctx, []string{"a", "missing", "d", ""})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("BatchRemove: %v", errs)
	}
	wantErr(t, errs[1], kv.ErrNotFound)
	wantErr(t, errs[3], kv.ErrEmptyKey)
	if e.store.Exists("a") || e.store.Exists("d") {
		t.Fatal("BatchRemove left keys")
	}

	// More items than one batch carries: the client splits, the server
	// refuses an oversized batch outright.
	many := make([]PutItem, 2*MaxBatchItems+7)
	keys := make([]string, len(many))
	for i := range many {
		keys[i] = fmt.Sprintf("many-%05d", i)
		many[i] = PutItem{Key: keys[i], Value: []byte(keys[i])}
	}
	if res, err := c.BatchPut(ctx, many); err != nil || slices.ContainsFunc(res, func(r PutResult) bool { return r.Err != nil }) {
		t.Fatalf("BatchPut of %d items: %v", len(many), err)
	}
	gotMany, err := c.BatchGet(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range gotMany {
		if r.Err != nil || string(r.Value) != keys[i] {
			t.Fatalf("BatchGet item %d = %q, %v", i, r.Value, r.Err)
		}
	}
	tooMany := make([][]byte, MaxBatchItems+1)
	for i := range tooMany {
		tooMany[i] = []byte(keys[i])
	}
	_, err = e.stub().BatchRemove(ctx, &fluxonv1.BatchRemoveRequest{Keys: tooMany})
	wantErr(t, fromStatus(err), ErrBatchTooLarge)
	if errs, err := c.BatchRemove(ctx, keys); err != nil || slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		t.Fatalf("BatchRemove of %d keys: %v", len(keys), err)
	}
}

func TestScan(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx, c := ctxT(t), e.client
	want := map[string]bool{}
	var items []PutItem
	for i := range 500 {
		k := fmt.Sprintf("a/%d", i)
		want[k] = true
		items = append(items, PutItem{Key: k, Value: []byte("v")})
	}
	for i := range 300 {
		items = append(items, PutItem{Key: fmt.Sprintf("b/%d", i), Value: []byte("v")})
	}
	if _, err := c.BatchPut(ctx, items); err != nil {
		t.Fatal(err)
	}
	walk := func(count int, prefix string) map[string]int {
		seen := map[string]int{}
		var cursor uint64
		for calls := 0; ; calls++ {
			keys, next, err := c.Scan(ctx, cursor, count, prefix)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				seen[k]++
			}
			if cursor = next; cursor == 0 {
				return seen
			}
			if calls > 10000 {
				t.Fatal("Scan never ended")
			}
		}
	}
	seen := walk(50, "a/")
	if len(seen) != len(want) {
		t.Fatalf("prefix scan saw %d keys, want %d", len(seen), len(want))
	}
	for k, n := range seen {
		if !want[k] || n != 1 {
			t.Fatalf("prefix scan saw %q %d times", k, n)
		}
	}
	if all := walk(0, ""); len(all) != 800 {
		t.Fatalf("full scan saw %d keys, want 800", len(all))
	}
	if all := walk(MaxScanCount*2, ""); len(all) != 800 {
		t.Fatalf("full scan with a large count saw %d keys, want 800", len(all))
	}
}

// Keys near MaxKeyLen: a Scan response stops early instead of outgrowing a
// message, and the walk still sees every key once.
func TestScanLongKeys(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx, c := ctxT(t), e.client
	const n = 200 // 200 * 60 KiB = 12 MiB of keys, more than one message
	for i := range n {
		k := fmt.Sprintf("%05d", i) + strings.Repeat("x", 60<<10)
		if _, err := c.Put(ctx, k, nil, kv.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	var cursor uint64
	for calls := 0; ; calls++ {
		keys, next, err := c.Scan(ctx, cursor, MaxScanCount, "")
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, k := range keys {
			size += len(k)
			if seen[k] {
				t.Fatalf("key %.5s seen twice", k)
			}
			seen[k] = true
		}
		if size > scanBudget+scanStep*kv.MaxKeyLen {
			t.Fatalf("one Scan response carried %d bytes of keys", size)
		}
		if cursor = next; cursor == 0 {
			break
		}
		if calls > n {
			t.Fatal("Scan never ended")
		}
	}
	if len(seen) != n {
		t.Fatalf("saw %d keys, want %d", len(seen), n)
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t, 64*mib)
	ctx, c := ctxT(t), e.client
	_, _ = c.Put(ctx, "a", []byte("1"), kv.PutOptions{})
	_, _ = c.Put(ctx, "b", []byte("2"), kv.PutOptions{})
	_, _, _ = c.Get(ctx, "a")
	_, _, _ = c.Get(ctx, "missing")
	_ = c.Remove(ctx, "b")
	got, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := e.store.Stats(); got != want {
		t.Fatalf("Stats over gRPC %+v, the store's %+v", got, want)
	}
	if got.Objects != 1 || got.Puts != 2 || got.Hits != 1 || got.Misses != 1 || got.Removes != 1 || got.PoolCapacity == 0 {
		t.Fatalf("Stats %+v", got)
	}
}

// Several clients on their own connections write and read their own keys,
// small and streamed, while all of them overwrite one shared key: every read
// of it returns one writer's value whole.
func TestConcurrentClients(t *testing.T) {
	e := newEnv(t, 256*mib)
	ctx := ctxT(t)
	const clients, rounds = 6, 12
	value := func(id, round, size int) []byte {
		b := bytes.Repeat([]byte{byte(id*rounds + round)}, size)
		return b
	}
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for id := range clients {
		c := e.dial(t)
		wg.Go(func() {
			for r := range rounds {
				size := 1000 + r
				if r%4 == 3 {
					size = MaxUnaryValue + mib + r // through PutStream
				}
				mine := fmt.Sprintf("c%d", id)
				v := value(id, r, size)
				if _, err := c.Put(ctx, mine, v, kv.PutOptions{}); err != nil {
					errc <- err
					return
				}
				got, _, err := c.Get(ctx, mine)
				if err != nil || !bytes.Equal(got, v) {
					errc <- fmt.Errorf("client %d round %d: own key read back wrong (%v)", id, r, err)
					return
				}
				if _, err := c.Put(ctx, "shared", v, kv.PutOptions{}); err != nil {
					errc <- err
					return
				}
				got, info, err := c.Get(ctx, "shared")
				if err != nil {
					errc <- err
					return
				}
				if len(got) == 0 || uint64(len(got)) != info.Size || bytes.Count(got, got[:1]) != len(got) {
					errc <- fmt.Errorf("client %d round %d: shared key read torn (%d bytes)", id, r, len(got))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestDialFailsFast(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if c, err := Dial(ctx, addr); err == nil {
		_ = c.Close()
		t.Fatal("Dial to a closed port succeeded")
	}
	if time.Since(start) > 20*time.Second {
		t.Fatal("Dial to a closed port waited for the context instead of failing")
	}
}
