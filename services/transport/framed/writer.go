package framed

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// outFrame is one frame waiting to be written: head holds the frame header
// (and any small payload copied after it), body is written straight from
// the caller's memory.
type outFrame struct {
	head  []byte
	body  []byte
	group *outGroup
	// keepalive frames (ping, pong) do not count as progress: writing
	// them proves nothing about the peer.
	keepalive bool
	// started: part of this frame is on the wire already, so it is written
	// to the end even if its group is cancelled.
	started bool
}

func (f *outFrame) size() int { return len(f.head) + len(f.body) }

// outGroup ties the frames of one message or range together: cancelling it
// skips the frames not yet handed to the socket, and done runs once every
// frame is written or skipped (that is when ServeRead's release runs).
type outGroup struct {
	canceled atomic.Bool
	// started is set before a writer checks canceled, so that whoever
	// cancels after a frame went out sees it (and sends a CANCEL).
	started atomic.Bool
	pending atomic.Int32
	done    func()
}

func (g *outGroup) frameDone() {
	if g != nil && g.pending.Add(-1) == 0 && g.done != nil {
		g.done()
	}
}

func releaseFrames(frames []outFrame) {
	for i := range frames {
		frames[i].group.frameDone()
	}
}

// inlineMax bounds a frame written by its producer directly (see push).
const inlineMax = 64 << 10

// writeQueue is one connection's outgoing frames. A producer that finds
// the socket idle (nothing queued, nothing being written) tries its frame
// with one non-blocking write of its own and skips the hand-off to the
// writer goroutine; whatever that write does not take is queued first.
// Otherwise producers append and the writer goroutine takes everything
// queued at once and writes it with writev (net.Buffers), so frames from
// many requests share a syscall.
type writeQueue struct {
	mu     sync.Mutex
	frames []outFrame
	bytes  int
	max    int
	closed bool
	drain  bool
	// busy: the writer goroutine or an inline producer is writing.
	busy bool
	// space, when not nil, is closed when the writer frees bytes; made by
	// the first producer that waits for room.
	space chan struct{}
	wake  chan struct{}

	// tryWrite writes without blocking (nil: no inline writes).
	tryWrite   func([]byte) (int, error)
	txProgress *atomic.Uint64
}

func newWriteQueue(max int, tryWrite func([]byte) (int, error), txProgress *atomic.Uint64) *writeQueue {
	return &writeQueue{max: max, wake: make(chan struct{}, 1), tryWrite: tryWrite, txProgress: txProgress}
}

func (q *writeQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push queues frames. A control push never waits (the reader goroutine
// must never block on the writer, or two peers whose writers are both
// stuck would deadlock); others wait while the queue is over its bound,
// unless it is empty. On failure the frames count as done.
func (q *writeQueue) push(ctx context.Context, done <-chan struct{}, frames []outFrame, control bool) error {
	_, err := q.pushSent(ctx, done, frames, control)
	return err
}

// pushSent is push, and reports whether the frames are finished with
// (written or skipped) when it returns: then the queue keeps no reference
// to their memory.
func (q *writeQueue) pushSent(ctx context.Context, done <-chan struct{}, frames []outFrame, control bool) (bool, error) {
	n := 0
	for i := range frames {
		n += frames[i].size()
	}
	for {
		q.mu.Lock()
		if q.closed || q.drain {
			q.mu.Unlock()
			releaseFrames(frames)
			return true, errQueueClosed
		}
		if control || q.bytes == 0 || q.bytes+n <= q.max {
			if q.tryWrite != nil && !q.busy && len(q.frames) == 0 && len(frames) == 1 &&
				frames[0].body == nil && len(frames[0].head) <= inlineMax {
				q.busy = true
				q.mu.Unlock()
				return q.inline(frames[0]), nil
			}
			q.frames = append(q.frames, frames...)
			q.bytes += n
			q.mu.Unlock()
			q.signal()
			return false, nil
		}
		if q.space == nil {
			q.space = make(chan struct{})
		}
		space := q.space
		q.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			releaseFrames(frames)
			return true, ctx.Err()
		case <-done:
			releaseFrames(frames)
			return true, errQueueClosed
		}
	}
}

// inline writes f from its producer's goroutine; the caller set busy.
// True when f is finished with: written whole, or skipped.
func (q *writeQueue) inline(f outFrame) bool {
	g := f.group
	written := 0
	if g != nil {
		g.started.Store(true)
	}
	if g == nil || !g.canceled.Load() {
		n, err := q.tryWrite(f.head)
		if n > 0 && !f.keepalive {
			q.txProgress.Add(1)
		}
		written = n
		if err != nil && n == 0 {
			written = 0 // the writer goroutine retries and meets the error
		}
	} else {
		written = -1 // skipped: cancelled before a byte went out
	}
	q.mu.Lock()
	q.busy = false
	finished := written < 0 || written == len(f.head)
	if !finished {
		if q.closed {
			finished = true // nobody will write it: release it
		} else {
			rest := f
			rest.head = f.head[written:]
			rest.started = written > 0
			q.frames = slices.Insert(q.frames, 0, rest)
			q.bytes += len(rest.head)
		}
	}
	pending := len(q.frames) > 0 || q.drain || q.closed
	q.mu.Unlock()
	if pending {
		q.signal()
	}
	if finished {
		g.frameDone()
	}
	return finished
}

// take hands the writer everything queued (swapped for spare) unless an
// inline write is in progress, and says whether the writer should exit.
func (q *writeQueue) take(spare []outFrame) (batch []outFrame, exit bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, true
	}
	if q.busy {
		return nil, false // the inline writer signals when done
	}
	if len(q.frames) == 0 {
		return nil, q.drain
	}
	batch, q.frames = q.frames, spare[:0]
	q.busy = true
	return batch, false
}

// written returns n bytes of room after the writer wrote a batch.
func (q *writeQueue) written(n int) {
	q.mu.Lock()
	q.bytes -= n
	q.busy = false
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	q.mu.Unlock()
}

// close stops the queue and returns what was left, for the caller to
// release.
func (q *writeQueue) close() []outFrame {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	left := q.frames
	q.frames = nil
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	q.signal()
	return left
}

// startDrain lets the writer finish what is queued, then exit.
func (q *writeQueue) startDrain() {
	q.mu.Lock()
	q.drain = true
	q.mu.Unlock()
	q.signal()
}

// writeLoop is the connection's writer goroutine.
func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	var spare []outFrame
	var bufs net.Buffers
	for {
		select {
		case <-c.wq.wake:
		case <-c.done:
		}
		for {
			batch, exit := c.wq.take(spare)
			if exit {
				releaseFrames(c.wq.close())
				return
			}
			if batch == nil {
				break
			}
			bufs = bufs[:0]
			n := 0
			progress := false
			for i := range batch {
				f := &batch[i]
				n += f.size()
				progress = progress || !f.keepalive
				if g := f.group; g != nil && !f.started {
					g.started.Store(true)
					if g.canceled.Load() {
						continue // skipped
					}
				}
				bufs = append(bufs, f.head)
				if len(f.body) > 0 {
					bufs = append(bufs, f.body)
				}
			}
			err := c.writeBufs(bufs, progress)
			clear(bufs) // drop references to written payloads
			releaseFrames(batch)
			clear(batch)
			spare = batch
			c.wq.written(n)
			if err != nil {
				c.fail(peerGone("write", err))
				releaseFrames(c.wq.close())
				return
			}
		}
	}
}

// buffersWriter is a Stream.Conn with a writev of its own (net.Buffers
// gives writev only to the net package's types).
type buffersWriter interface {
	WriteBuffers(bufs *net.Buffers) (int64, error)
}

// writeChunk bounds one write call, so that a long transfer shows progress
// (txProgress) while it goes out: keepalive counts a peer that takes our
// bytes as alive even when it has nothing to say.
const writeChunk = 4 << 20

// writeBufs writes bufs in calls of at most writeChunk bytes, counting
// each as progress if asked.
func (c *Conn) writeBufs(bufs net.Buffers, progress bool) error {
	for len(bufs) > 0 {
		c.wv = c.wv[:0]
		n := 0
		for len(bufs) > 0 && n < writeChunk {
			b := bufs[0]
			if k := writeChunk - n; len(b) > k {
				c.wv = append(c.wv, b[:k])
				bufs[0] = b[k:]
				n += k
				break
			}
			c.wv = append(c.wv, b)
			n += len(b)
			bufs = bufs[1:]
		}
		c.wvCur = c.wv // WriteTo consumes its receiver
		var err error
		if bw, ok := c.s.Conn.(buffersWriter); ok {
			_, err = bw.WriteBuffers(&c.wvCur)
		} else {
			_, err = c.wvCur.WriteTo(c.s.Conn)
		}
		clear(c.wv)
		if err != nil {
			return err
		}
		if progress {
			c.txProgress.Add(1)
		}
	}
	return nil
}
