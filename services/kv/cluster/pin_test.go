package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// The pin reply says where the value's first byte lies in the holder's
// pool: the segment that pool.Segments maps there, and the offset inside
// it, for a small value and for one spanning segments (1 MiB segments).
func TestPinReplyCarriesPoolPosition(t *testing.T) {
	os := startCluster(t, 1, 2*time.Second)
	o := os[0]
	segs, err := o.pool.Segments()
	require.NoError(t, err)
	for key, size := range map[string]int{"small": 1000, "spans": 3<<20 + 777} {
		_, err := o.node.Put(context.Background(), key, bytes.Repeat([]byte{7}, size), kv.PutOptions{})
		require.NoError(t, err)
		pr := pinOf(t, o, key)
		h, err := o.store.Get(key)
		require.NoError(t, err)
		seg, off := h.Offset().In(h.SegmentSize())
		require.Equal(t, poolPos{Segment: seg, Offset: off, SegmentSize: 1 << 20}, *pr.At, key)
		require.Equal(t, uint64(size), pr.Size, key)
		// The position names the value's bytes in this process's mapping.
		require.Less(t, int(pr.At.Segment), len(segs), key)
		at := unsafe.Add(segs[pr.At.Segment].Data, pr.At.Offset)
		require.Equal(t, unsafe.Pointer(unsafe.SliceData(h.Bytes())), at, key)
		require.NoError(t, h.Close())
	}
}

// ServeRead serves segment-absolute ranges inside the pinned value and
// refuses any other range: straddling its start or its end, in another
// segment, across a segment boundary, under an unknown pin, or in the
// object-relative form of readers that predate pool positions.
func TestServeReadTakesPoolPositionsOfThePinnedValueOnly(t *testing.T) {
	os := startCluster(t, 1, 2*time.Second)
	o := os[0]
	val := make([]byte, 1000)
	for i := range val {
		val[i] = byte(i*31 + 1)
	}
	_, err := o.node.Put(context.Background(), "v", val, kv.PutOptions{})
	require.NoError(t, err)
	pr := pinOf(t, o, "v")
	at := *pr.At
	// A value of up to one segment never crosses a segment boundary, and
	// its 64-byte header comes first in the same segment.
	require.GreaterOrEqual(t, at.Offset, uint64(64))
	require.LessOrEqual(t, at.Offset+pr.Size, at.SegmentSize)

	ref := func(seg uint32, off, n uint64) transport.RemoteRef {
		return transport.RemoteRef{Segment: seg, Offset: off, Length: n, Tag: pr.Pin}
	}
	serve := func(r transport.RemoteRef) ([]byte, error) {
		src, release, err := o.node.serveRead(context.Background(), o.peer.ID, r)
		if err != nil {
			return nil, err
		}
		defer release()
		return append([]byte(nil), src...), nil
	}
	refused := func(r transport.RemoteRef, code transport.Code, msg string) {
		t.Helper()
		_, err := serve(r)
		var re *transport.RemoteError
		require.ErrorAs(t, err, &re, "%s", r)
		require.Equal(t, code, re.Code, "%s", r)
		require.ErrorContains(t, err, msg, "%s", r)
	}

	refused(ref(at.Segment, at.Offset-1, 10), transport.CodeInvalid, "outside pinned copy")         // straddles the start
	refused(ref(at.Segment, at.Offset+pr.Size-5, 10), transport.CodeInvalid, "outside pinned copy") // straddles the end
	refused(ref(at.Segment+1, at.Offset, 10), transport.CodeInvalid, "outside pinned copy")         // another segment
	refused(ref(at.Segment, at.SegmentSize-5, 10), transport.CodeInvalid, "not inside one")         // across a boundary
	refused(ref(0, 0, 10), transport.CodeInvalid, "outside pinned copy")                            // object-relative
	bad := ref(at.Segment, at.Offset, 10)
	bad.Tag = pr.Pin + 1000
	refused(bad, transport.CodeNotFound, "no pinned copy")

	got, err := serve(ref(at.Segment, at.Offset+100, 200))
	require.NoError(t, err)
	require.Equal(t, val[100:300], got)
	got, err = serve(ref(at.Segment, at.Offset, 100))
	require.NoError(t, err)
	require.Equal(t, val[:100], got)
	got, err = serve(ref(at.Segment, at.Offset+300, pr.Size-300))
	require.NoError(t, err)
	require.Equal(t, val[300:], got)
	o.node.pinMu.Lock()
	_, held := o.node.pins[pr.Pin]
	o.node.pinMu.Unlock()
	require.False(t, held, "the pin is released once every byte was served")
}

// A reader that predates pool positions (no pool_refs in its pin) gets a
// clear refusal, never a pin it would read the wrong bytes with; a holder
// that predates them (no position in its reply) is not read from.
func TestPinFormsOfOlderPeersAreRefused(t *testing.T) {
	os := startCluster(t, 1, 2*time.Second)
	o := os[0]
	_, err := o.node.Put(context.Background(), "v", []byte("value"), kv.PutOptions{})
	require.NoError(t, err)
	_, err = o.node.pin(pinReq{Key: "v", Version: mustVersion(t, o, "v")})
	var re *transport.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, transport.CodeInvalid, re.Code)
	require.ErrorContains(t, err, "upgrade the reader")
	o.node.pinMu.Lock()
	require.Empty(t, o.node.pins, "nothing pinned")
	o.node.pinMu.Unlock()

	var old pinResp
	require.NoError(t, json.Unmarshal([]byte(`{"status":"ok","pin":3,"size":5}`), &old))
	_, err = readPlan(old)
	require.ErrorIs(t, err, errNoPoolPosition)
	err = o.node.readPinned(context.Background(), o.peer.Name(), old, make([]byte, 5))
	require.ErrorIs(t, err, errNoPoolPosition)
}

// readPlan covers the value exactly, in order, with refs that each lie in
// one segment, one stripe per lane.
func TestReadPlanCutsStripesAtSegmentBoundaries(t *testing.T) {
	const seg = 1 << 20
	for _, c := range []struct {
		name       string
		at         poolPos
		size       uint64
		wantPieces int
	}{
		{"empty", poolPos{Segment: 2, Offset: 4160, SegmentSize: seg}, 0, 1},
		{"inside one segment", poolPos{Segment: 2, Offset: 4160, SegmentSize: seg}, 1000, 1},
		{"ends at a boundary", poolPos{Segment: 0, Offset: seg - 100, SegmentSize: seg}, 100, 1},
		{"spans three", poolPos{Segment: 5, Offset: seg - 100, SegmentSize: seg}, seg + 200, 3},
		// 4 lanes of 4 MiB + 1000 bytes, the first starting 64 bytes into
		// segment 1: each lane crosses 4 boundaries.
		{"striped", poolPos{Segment: 1, Offset: 64, SegmentSize: seg}, 16<<20 + 4000, 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			plan, err := readPlan(pinResp{Status: "ok", Pin: 9, Size: c.size, At: &c.at})
			require.NoError(t, err)
			require.Len(t, plan, c.wantPieces)
			next := uint64(0)
			pos := uint64(c.at.Segment)*seg + c.at.Offset
			lanes := map[int]bool{}
			for _, p := range plan {
				require.Equal(t, next, p.at, "contiguous")
				require.Equal(t, uint64(9), p.ref.Tag)
				require.Less(t, p.ref.Offset, uint64(seg))
				require.LessOrEqual(t, p.ref.Offset+p.ref.Length, uint64(seg), "inside one segment")
				require.Equal(t, pos+p.at, uint64(p.ref.Segment)*seg+p.ref.Offset, "at the value's bytes")
				lanes[p.lane] = true
				next += p.ref.Length
			}
			require.Equal(t, c.size, next, "covers the value")
			require.Len(t, lanes, stripesFor(c.size))
		})
	}
}

// A reader ends its pin when done (one-sided reads never reach serveRead,
// which releases a pin after its last byte): at once when nothing is being
// sent, otherwise when the last read in flight is released.
func TestUnpinReleasesThePin(t *testing.T) {
	os := startCluster(t, 1, 2*time.Second)
	o := os[0]
	_, err := o.node.Put(context.Background(), "v", []byte("some value"), kv.PutOptions{})
	require.NoError(t, err)
	held := func(pin uint64) bool {
		o.node.pinMu.Lock()
		defer o.node.pinMu.Unlock()
		_, ok := o.node.pins[pin]
		return ok
	}
	unpin := func(pin uint64) {
		b, err := json.Marshal(unpinReq{Pin: pin})
		require.NoError(t, err)
		_, err = o.node.handle(context.Background(), o.peer.ID, pathUnpin, b)
		require.NoError(t, err)
	}

	idle := pinOf(t, o, "v")
	require.True(t, held(idle.Pin))
	unpin(idle.Pin)
	require.False(t, held(idle.Pin), "released at once")
	unpin(idle.Pin) // gone already: nothing to do

	busy := pinOf(t, o, "v")
	_, release, err := o.node.serveRead(context.Background(), o.peer.ID, transport.RemoteRef{Segment: busy.At.Segment, Offset: busy.At.Offset, Length: 4, Tag: busy.Pin})
	require.NoError(t, err)
	unpin(busy.Pin)
	require.True(t, held(busy.Pin), "kept while its bytes are being sent")
	release()
	require.False(t, held(busy.Pin), "released with the last read")
}
