package transporttest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// Paths the suite's handler serves.
const (
	pathEcho   = "/echo"   // returns the payload
	pathInline = "/inline" // returns the payload, served on the reader (InlineHandler)
	pathWhoAmI = "/whoami" // returns the caller's identity as the handler saw it
	pathSeq    = "/seq"    // one-way: records an 8-byte sequence number per caller
	pathFail   = "/fail"   // returns a plain error
	pathCode   = "/code"   // returns a RemoteError with CodeNotFound
	pathPanic  = "/panic"  // panics
	pathBlock  = "/block"  // waits for its context to end
	// pathInlineBlock is pathBlock served on the reader (InlineHandler).
	pathInlineBlock = "/inline-block"
	// pathInlineKeep is pathInline that also keeps the payload (in kept),
	// as a handler that stores what it was sent does.
	pathInlineKeep = "/inline-keep"
	pathOrdered    = "/ordered" // waits for all of a batch, answers in reverse
	pathGrow       = "/grow"    // returns as many bytes as the decimal payload says
)

// Segments the suite's handler serves bulk reads from.
const (
	segPool   uint32 = 0 // the handler's pool
	segBlock  uint32 = 1 // never answers; waits for its context to end
	segShort  uint32 = 2 // returns one byte too few (a broken owner)
	segPanic  uint32 = 3 // panics
	segSignal uint32 = 4 // the pool, telling readStarted first
)

// orderedBatch is how many requests pathOrdered holds at once.
const orderedBatch = 64

// handler is the suite's transport.Handler.
type handler struct {
	pool []byte

	mu   sync.Mutex
	seqs map[string][]uint64 // one-way sequence numbers per caller instance key
	// wrongMode counts one-way messages not marked IsOneWay (or requests
	// marked so).
	wrongMode atomic.Int64

	// blocked receives a pathBlock call or segBlock read when it starts;
	// blockEnded its context's error when it ends.
	blocked    chan blockedCall
	blockEnded chan error

	readStarted chan struct{}
	kept        [][]byte // pathInlineKeep's payloads, as received (under mu)
	served      atomic.Int64
	released    atomic.Int64
	// doubleRelease counts release functions called more than once.
	doubleRelease atomic.Int64

	ordered struct {
		sync.Mutex
		arrived int
		allIn   chan struct{}
		turns   [orderedBatch]chan struct{}
		order   []int
	}
}

type blockedCall struct {
	hadDeadline bool
}

var (
	poolOnce sync.Once
	pool     []byte
)

// sharedPool is the read-only pool every handler serves, made once.
func sharedPool() []byte {
	poolOnce.Do(func() { pool = randomBytes(poolSize, 1) })
	return pool
}

func newHandler() *handler {
	h := &handler{
		pool:        sharedPool(),
		seqs:        make(map[string][]uint64),
		blocked:     make(chan blockedCall, 64),
		blockEnded:  make(chan error, 64),
		readStarted: make(chan struct{}, 64),
	}
	h.ordered.allIn = make(chan struct{})
	for i := range h.ordered.turns {
		h.ordered.turns[i] = make(chan struct{})
	}
	return h
}

func (h *handler) HandleRequest(ctx context.Context, peer transport.Identity, path string, payload []byte) ([]byte, error) {
	if transport.IsOneWay(ctx) != (path == pathSeq) {
		h.wrongMode.Add(1)
	}
	switch path {
	case pathEcho, pathInline:
		return payload, nil
	case pathInlineKeep:
		h.mu.Lock()
		h.kept = append(h.kept, payload)
		h.mu.Unlock()
		return payload, nil
	case pathWhoAmI:
		return fmt.Appendf(nil, "%s|%s|%s|%d", peer.Incarnation(), peer.ClusterName, peer.Role, peer.Protocol), nil
	case pathSeq:
		if len(payload) != 8 {
			return nil, fmt.Errorf("seq payload of %d bytes", len(payload))
		}
		h.mu.Lock()
		h.seqs[peer.InstanceKey] = append(h.seqs[peer.InstanceKey], binary.BigEndian.Uint64(payload))
		h.mu.Unlock()
		return nil, nil
	case pathFail:
		return nil, errors.New("boom: " + string(payload))
	case pathCode:
		return nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: "no key " + string(payload)}
	case pathPanic:
		panic("kaboom")
	case pathBlock, pathInlineBlock:
		_, dl := ctx.Deadline()
		h.blocked <- blockedCall{hadDeadline: dl}
		<-ctx.Done()
		h.blockEnded <- ctx.Err()
		return nil, ctx.Err()
	case pathOrdered:
		return h.orderedCall(ctx, payload)
	case pathGrow:
		n, err := strconv.Atoi(string(payload))
		if err != nil {
			return nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: err.Error()}
		}
		return make([]byte, n), nil
	}
	return nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: "no handler for " + path}
}

// orderedCall holds each request until the whole batch has arrived (all
// of them in flight on one connection at once), then lets them answer
// from the last to the first.
func (h *handler) orderedCall(ctx context.Context, payload []byte) ([]byte, error) {
	if len(payload) != 1 || int(payload[0]) >= orderedBatch {
		return nil, fmt.Errorf("ordered payload %v", payload)
	}
	i := int(payload[0])
	o := &h.ordered
	o.Lock()
	o.arrived++
	if o.arrived == orderedBatch {
		close(o.allIn)
		close(o.turns[orderedBatch-1])
	}
	o.Unlock()
	select {
	case <-o.turns[i]:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	o.Lock()
	o.order = append(o.order, i)
	o.Unlock()
	if i > 0 {
		close(o.turns[i-1])
	}
	return []byte{byte(i), 0xA5}, nil
}

// ServesInline implements transport.InlineHandler.
func (h *handler) ServesInline(path string) bool {
	return path == pathInline || path == pathInlineBlock || path == pathInlineKeep
}

func (h *handler) ServeRead(ctx context.Context, peer transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
	switch ref.Segment {
	case segPool, segSignal:
		if ref.Offset > uint64(len(h.pool)) || ref.Length > uint64(len(h.pool))-ref.Offset {
			return nil, nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: fmt.Sprintf("%s is outside the %d-byte pool", ref, len(h.pool))}
		}
		if ref.Segment == segSignal {
			h.readStarted <- struct{}{}
		}
		return h.pool[ref.Offset : ref.Offset+ref.Length], h.releaser(), nil
	case segBlock:
		_, dl := ctx.Deadline()
		h.blocked <- blockedCall{hadDeadline: dl}
		<-ctx.Done()
		h.blockEnded <- ctx.Err()
		return nil, nil, ctx.Err()
	case segShort:
		return h.pool[:ref.Length-1], h.releaser(), nil
	case segPanic:
		panic("kaboom in ServeRead")
	}
	return nil, nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: fmt.Sprintf("no segment %d", ref.Segment)}
}

// releaser counts a serve and returns its release, which counts itself
// (twice is a bug the suite reports).
func (h *handler) releaser() func() {
	h.served.Add(1)
	var once atomic.Bool
	return func() {
		if !once.CompareAndSwap(false, true) {
			h.doubleRelease.Add(1)
			return
		}
		h.released.Add(1)
	}
}

func (h *handler) seqsOf(key string) []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]uint64(nil), h.seqs[key]...)
}
