package rdma

import (
	"context"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
)

// A bulk read is cut into READs of at most readChunk bytes with up to
// readDepth of them in flight, so the NIC streams while completed chunks
// land: one READ at a time would leave the link idle for a round trip and
// a copy per chunk. Through the bounce buffer each READ in flight has a
// slot of its own (readDepth slots of readChunk bytes).
const (
	readChunk = 1 << 20
	readDepth = bounceSize / readChunk
)

// readOps are what pipelineRead drives: the device in ReadRemote, an
// in-memory NIC in the tests.
type readOps struct {
	// post starts the READ of [off, off+n) of the range into slot's buffer
	// (0 <= slot < depth) and returns the channel its completion comes on.
	post func(slot int, off, n uint64) (<-chan cgordma.Completion, error)
	// settle runs after every completion, failed or not (a credit back).
	settle func()
	// land takes a completed READ's bytes out of slot, in range order, as
	// long as nothing failed before it.
	land func(slot int, off, n uint64)
}

type readInFlight struct {
	slot   int
	off, n uint64
	done   <-chan cgordma.Completion
}

// pipelineRead moves total bytes in READs of at most chunk bytes, up to
// depth in flight, and lands them in order; a slot is posted again only
// after its READ landed. It returns only once every READ it posted has
// completed, whatever happened, since the NIC writes into the slots until
// then: after a failed post, a failed READ or a done ctx it posts nothing
// more, waits for the rest and returns the first error.
func pipelineRead(ctx context.Context, total, chunk uint64, depth int, ops readOps) error {
	free := make([]int, depth)
	for i := range free {
		free[i] = depth - 1 - i
	}
	fifo := make([]readInFlight, 0, depth)
	var next uint64
	var firstErr error
	for {
		for firstErr == nil && next < total && len(free) > 0 {
			if err := ctx.Err(); err != nil {
				firstErr = err
				break
			}
			n := min(chunk, total-next)
			slot := free[len(free)-1]
			ch, err := ops.post(slot, next, n)
			if err != nil {
				firstErr = err
				break
			}
			free = free[:len(free)-1]
			fifo = append(fifo, readInFlight{slot: slot, off: next, n: n, done: ch})
			next += n
		}
		if len(fifo) == 0 {
			return firstErr
		}
		op := fifo[0]
		fifo = fifo[1:]
		wc := <-op.done
		ops.settle()
		switch {
		case wc.Status != cgordma.WCSuccess:
			if firstErr == nil {
				firstErr = &cgordma.WCError{Op: "read", Status: wc.Status, VendorErr: wc.VendorErr}
			}
		case firstErr == nil:
			ops.land(op.slot, op.off, op.n)
		}
		free = append(free, op.slot)
	}
}
