package mq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// produced is a producer's record (mq/chan/<id>/produced/<producer>): the
// messages it wrote (offsets below Offset) in batches below Batch.
type produced struct {
	Offset uint64 `json:"offset"`
	Batch  uint64 `json:"batch"`
	Closed bool   `json:"closed,omitempty"`
}

// releaseIdle: a producer with nothing queued for this long gives back the
// room it reserved and did not use, so that other producers may have it.
const releaseIdle = 50 * time.Millisecond

// Pending is a message a producer accepted: Wait returns once it is
// written and published (a consumer can get it), or why it was not.
type Pending struct{ p *pending }

type pending struct {
	done chan struct{}
	err  error
	end  uint64 // published once the produced offset reaches end
}

// Wait blocks until the message is published or ctx ends.
func (p Pending) Wait(ctx context.Context) error {
	select {
	case <-p.p.done:
		return p.p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type producer struct {
	c     *Chan
	lease kv.LeaseID // the KV lease of the messages

	room chan struct{} // one holder reserves at a time

	mu       sync.Mutex
	wake     chan struct{}
	queue    []*outMsg
	queued   int    // accepted, not yet written
	written  uint64 // the next offset to write
	batch    uint64 // the next batch seq
	reserved uint64 // may accept while written+queued < reserved
	stopping bool
	stopped  chan struct{}
	lastPut  time.Time

	enc []byte // the flusher's encoding buffer

	pubMu    sync.Mutex
	pubWake  chan struct{}
	unpub    []*pending // written, waiting for the record
	pubState produced
	pubDone  chan struct{}
}

func newProducer(ctx context.Context, c *Chan) (*producer, error) {
	lease, err := c.kv.Grant(ctx, time.Duration(c.rec.TTLms)*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("mq: producer lease: %w", err)
	}
	p := &producer{c: c, lease: lease, room: make(chan struct{}, 1), wake: make(chan struct{}, 1),
		stopped: make(chan struct{}), pubWake: make(chan struct{}, 1), pubDone: make(chan struct{})}
	// A producer that comes back with its id continues its stream.
	if rec, ok, err := c.meta.Get(ctx, c.prefix+"produced/"+c.id); err != nil {
		return nil, fmt.Errorf("mq: reading producer record: %w", err)
	} else if ok {
		var pr produced
		if err := json.Unmarshal(rec.Value, &pr); err != nil {
			return nil, fmt.Errorf("mq: bad producer record: %v", err)
		}
		p.written, p.batch = pr.Offset, pr.Batch
	}
	if rec, ok, err := c.meta.Get(ctx, c.prefix+"reserved/"+c.id); err != nil {
		return nil, fmt.Errorf("mq: reading reservation: %w", err)
	} else if ok {
		p.reserved, _ = strconv.ParseUint(string(rec.Value), 10, 64)
	}
	p.reserved = max(p.reserved, p.written)
	p.pubState = produced{Offset: p.written, Batch: p.batch}
	b, _ := json.Marshal(p.pubState)
	if err := c.meta.PutAll(ctx, map[string][]byte{
		c.prefix + "produced/" + c.id: b,
		c.prefix + "reserved/" + c.id: []byte(strconv.FormatUint(p.reserved, 10)),
	}, c.rec.Lease); err != nil {
		return nil, fmt.Errorf("mq: publishing producer record: %w", err)
	}
	c.wg.Add(2)
	go p.flusher()
	go p.publisher()
	return p, nil
}

// Put writes a message and returns once consumers can get it.
func (c *Chan) Put(ctx context.Context, data []byte, opts ...PutOption) error {
	p, err := c.PutAsync(ctx, data, opts...)
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// PutDict writes a flat dict as a message (see Message.Dict).
func (c *Chan) PutDict(ctx context.Context, d kv.Dict, opts ...PutOption) error {
	b, err := kv.EncodeDict(d)
	if err != nil {
		return err
	}
	p, err := c.accept(ctx, kindDict, b, opts)
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// PutOption changes one Put.
type PutOption func(*putOptions)

type putOptions struct{ fail bool }

// FailWhenFull makes this Put return ErrChannelFull at once when the
// channel is at capacity, whatever the producer's FullPolicy.
func FailWhenFull() PutOption { return func(o *putOptions) { o.fail = true } }

// PutAsync accepts a message (waiting for room under the Block policy) and
// returns without waiting for it to be written: many in flight make big
// batches. data must not change until the Pending completes.
func (c *Chan) PutAsync(ctx context.Context, data []byte, opts ...PutOption) (Pending, error) {
	return c.accept(ctx, kindBytes, data, opts)
}

// Flush waits until every message accepted so far is published.
func (c *Chan) Flush(ctx context.Context) error {
	if c.prod == nil {
		return ErrWrongRole
	}
	p := c.prod
	p.mu.Lock()
	end := p.written + uint64(p.queued)
	p.mu.Unlock()
	for {
		p.pubMu.Lock()
		at := p.pubState.Offset
		p.pubMu.Unlock()
		if at >= end {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.stopped:
			return ErrProducerClosed
		case <-time.After(time.Millisecond):
		}
	}
}

func (c *Chan) accept(ctx context.Context, kind byte, data []byte, opts []PutOption) (Pending, error) {
	var o putOptions
	for _, f := range opts {
		f(&o)
	}
	p := c.prod
	if p == nil {
		return Pending{}, ErrWrongRole
	}
	if len(data) > MaxMessageSize {
		return Pending{}, fmt.Errorf("%w: %d bytes, at most %d", ErrMessageTooLarge, len(data), MaxMessageSize)
	}
	start := time.Now()
	if err := p.takeRoom(ctx, o.fail || c.cfg.FullPolicy == Fail); err != nil {
		return Pending{}, err
	}
	m := &outMsg{kind: kind, at: time.Now(), data: data, done: &pending{done: make(chan struct{})}}
	p.mu.Lock()
	if p.stopping {
		p.queued--
		p.mu.Unlock()
		return Pending{}, c.closedErr()
	}
	p.queue = append(p.queue, m)
	p.lastPut = m.at
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	c.m.put.Inc()
	c.m.putWait.Observe(time.Since(start).Seconds())
	return Pending{m.done}, nil
}

// takeRoom counts one more accepted message against the reservation,
// reserving more in etcd when it is used up.
func (p *producer) takeRoom(ctx context.Context, fail bool) error {
	select {
	case p.room <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.c.ctx.Done():
		return p.c.closedErr()
	}
	defer func() { <-p.room }()
	for {
		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return p.c.closedErr()
		}
		if p.written+uint64(p.queued) < p.reserved {
			p.queued++
			p.mu.Unlock()
			return nil
		}
		want := p.written + uint64(p.queued) + p.chunk() - p.reserved
		p.mu.Unlock()
		got, rev, err := p.reserve(ctx, want)
		if err != nil {
			return err
		}
		if got > 0 {
			continue
		}
		if fail {
			p.c.m.full.Inc()
			return fmt.Errorf("%w: %q holds its capacity of %d unconsumed messages", ErrChannelFull, p.c.rec.UniqueKey, p.c.rec.Capacity)
		}
		if err := p.waitRoom(ctx, rev); err != nil {
			return err
		}
	}
}

// chunk is how much room a producer reserves at once: enough to make etcd
// writes rare, little enough that idle reservations do not starve others.
func (p *producer) chunk() uint64 {
	return uint64(max(1, min(int64(p.c.cfg.MaxBatchMessages), p.c.rec.Capacity/16)))
}

// reserve grows this producer's reservation by up to want, as far as the
// channel's room allows: room = capacity - Σ(reserved - consumed) over all
// producers, read at one revision of the reservations; the write goes
// through only if no reservation changed since (consume offsets only grow,
// so an older read of them errs on the safe side).
func (p *producer) reserve(ctx context.Context, want uint64) (uint64, int64, error) {
	c := p.c
	for {
		res, rev, err := c.meta.List(ctx, c.prefix+"reserved/")
		if err != nil {
			return 0, 0, fmt.Errorf("mq: reserving room: %w", err)
		}
		cons, _, err := c.meta.List(ctx, c.prefix+"consumed/")
		if err != nil {
			return 0, 0, fmt.Errorf("mq: reserving room: %w", err)
		}
		consumed := map[string]uint64{}
		for _, kv := range cons {
			var cur cursor
			if json.Unmarshal(kv.Value, &cur) == nil {
				consumed[lastSegment(kv.Key)] = cur.Offset
			}
		}
		var backlog uint64
		for _, kv := range res {
			r, _ := strconv.ParseUint(string(kv.Value), 10, 64)
			if co := consumed[lastSegment(kv.Key)]; r > co {
				backlog += r - co
			}
		}
		capacity := uint64(c.rec.Capacity)
		if backlog >= capacity {
			return 0, rev, nil
		}
		got := min(want, capacity-backlog)
		p.mu.Lock()
		to := p.reserved + got
		p.mu.Unlock()
		ok, err := c.meta.PutIfUnchanged(ctx, c.prefix+"reserved/", rev, c.prefix+"reserved/"+c.id,
			[]byte(strconv.FormatUint(to, 10)), c.rec.Lease)
		if err != nil {
			return 0, 0, fmt.Errorf("mq: reserving room: %w", err)
		}
		if ok {
			p.mu.Lock()
			p.reserved = to
			p.mu.Unlock()
			return got, rev, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
	}
}

// waitRoom waits for a consumer to commit (or a producer to give room
// back), for ctx, or for the producer to close.
func (p *producer) waitRoom(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := p.c.meta.Watch(wctx, p.c.prefix, rev)
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case evs, ok := <-ch:
			if !ok {
				return ctx.Err()
			}
			for _, e := range evs {
				if hasSegment(e.Key, "consumed/") || hasSegment(e.Key, "reserved/") {
					return nil
				}
			}
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-p.c.ctx.Done():
			return p.c.closedErr()
		}
	}
}

// flusher writes the queue as batch objects, in order.
func (p *producer) flusher() {
	c := p.c
	defer c.wg.Done()
	defer close(p.stopped)
	idle := time.NewTimer(releaseIdle)
	defer idle.Stop()
	for {
		p.mu.Lock()
		for len(p.queue) == 0 {
			if p.stopping {
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			select {
			case <-p.wake:
			case <-idle.C:
				p.releaseRoom(false)
				idle.Reset(time.Hour)
			}
			p.mu.Lock()
		}
		n, size := 0, batchHeader
		for n < len(p.queue) && n < c.cfg.MaxBatchMessages {
			s := msgHeader + len(p.queue[n].data)
			if n > 0 && size+s > c.cfg.MaxBatchBytes {
				break
			}
			size += s
			n++
		}
		msgs := append([]*outMsg(nil), p.queue[:n]...)
		p.queue = p.queue[n:]
		first, seq := p.written, p.batch
		p.mu.Unlock()

		err := p.write(first, seq, msgs)
		p.mu.Lock()
		p.queued -= n
		if err == nil {
			p.written += uint64(n)
			p.batch++
		}
		written, batch := p.written, p.batch
		p.mu.Unlock()
		if err != nil {
			c.log.Warn("mq: writing a batch failed; its messages are refused", "messages", n, "err", err)
			for _, m := range msgs {
				m.done.err = err
				close(m.done.done)
			}
			continue
		}
		p.pubMu.Lock()
		for _, m := range msgs {
			m.done.end = first + uint64(n)
			p.unpub = append(p.unpub, m.done)
		}
		p.pubState.Offset, p.pubState.Batch = written, batch
		p.pubMu.Unlock()
		select {
		case p.pubWake <- struct{}{}:
		default:
		}
		idle.Reset(releaseIdle)
	}
}

// write puts one batch object, retrying while the failure looks passing
// (the owner busy or the cluster changing) for up to a few seconds.
func (p *producer) write(first, seq uint64, msgs []*outMsg) error {
	c := p.c
	key := batchKey(c.rec.ID, c.id, seq)
	put := p.putter(first, msgs)
	var err error
	for attempt := 0; attempt < 40; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = put(ctx, key)
		cancel()
		if err == nil || !errors.Is(err, kv.ErrUnavailable) && !errors.Is(err, kv.ErrInflight) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("mq: writing batch %d of %s: %w", seq, c.id, err)
	}
	if cap(p.enc) > 2*c.cfg.MaxBatchBytes {
		p.enc = nil // a single huge message: do not keep its room
	}
	c.m.batches.Inc()
	return nil
}

// Filler is implemented by KVs that write a value in place (*fluxon.Client
// attached to its owner): a producer encodes its batch straight into the
// pool instead of into a buffer the KV then copies.
type Filler interface {
	PutFill(ctx context.Context, key string, size int, o kv.PutOptions, fill func([]byte)) (uint64, error)
}

// putter returns how to put the batch: encoded in place where the KV can,
// else encoded into one buffer reused by every batch (the KV copies it
// before PutWith returns), which spares an allocation and its page faults
// per batch, megabytes each with large messages.
func (p *producer) putter(first uint64, msgs []*outMsg) func(ctx context.Context, key string) error {
	o := kv.PutOptions{Lease: p.lease}
	if f, ok := p.c.kv.(Filler); ok {
		size := encodedSize(msgs)
		return func(ctx context.Context, key string) error {
			_, err := f.PutFill(ctx, key, size, o, func(b []byte) { encodeBatchInto(b[:0], first, msgs) })
			return err
		}
	}
	p.enc = encodeBatchInto(p.enc, first, msgs)
	return func(ctx context.Context, key string) error {
		_, err := p.c.kv.PutWith(ctx, key, p.enc, o)
		return err
	}
}

// publisher writes the producer record after batches land, one etcd write
// at a time covering whatever was written meanwhile, and completes the
// Pendings it covers.
func (p *producer) publisher() {
	c := p.c
	defer c.wg.Done()
	defer close(p.pubDone)
	var published uint64
	failures := 0
	for {
		p.pubMu.Lock()
		st := p.pubState
		p.pubMu.Unlock()
		if st.Offset == published {
			select {
			case <-p.pubWake:
				continue
			case <-p.stopped:
				p.pubMu.Lock()
				done := p.pubState.Offset == published && len(p.unpub) == 0
				p.pubMu.Unlock()
				if done {
					return
				}
				continue
			}
		}
		b, _ := json.Marshal(st)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.meta.Put(ctx, c.prefix+"produced/"+c.id, b, c.rec.Lease)
		cancel()
		if err != nil {
			failures++
			if failures == 1 || failures%100 == 0 {
				c.log.Warn("mq: publishing the produced offset failed; retrying", "err", err)
			}
			select {
			case <-time.After(min(time.Duration(failures)*10*time.Millisecond, time.Second)):
			case <-c.ctx.Done():
				p.failUnpublished(c.closedErr())
				return
			}
			continue
		}
		failures = 0
		published = st.Offset
		p.pubMu.Lock()
		i := 0
		for ; i < len(p.unpub) && p.unpub[i].end <= published; i++ {
			close(p.unpub[i].done)
		}
		p.unpub = p.unpub[i:]
		p.pubMu.Unlock()
	}
}

func (p *producer) failUnpublished(err error) {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	for _, d := range p.unpub {
		d.err = err
		close(d.done)
	}
	p.unpub = nil
}

// releaseRoom gives back the room reserved beyond what is accepted.
func (p *producer) releaseRoom(force bool) {
	select {
	case p.room <- struct{}{}:
	default:
		if !force {
			return // a Put is reserving: it wants the room
		}
		p.room <- struct{}{}
	}
	defer func() { <-p.room }()
	p.mu.Lock()
	used := p.written + uint64(p.queued)
	if p.reserved <= used || (!force && time.Since(p.lastPut) < releaseIdle) {
		p.mu.Unlock()
		return
	}
	p.reserved = used
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.c.meta.Put(ctx, p.c.prefix+"reserved/"+p.c.id, []byte(strconv.FormatUint(used, 10)), p.c.rec.Lease)
}

// close writes what was accepted (until ctx ends), publishes the record as
// closed and gives back unused room. Messages not written by then fail
// with ErrProducerClosed.
func (p *producer) close(ctx context.Context) error {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	var err error
	select {
	case <-p.stopped:
	case <-ctx.Done():
		err = fmt.Errorf("mq: closing producer %s: %w (messages not yet written are refused)", p.c.id, ctx.Err())
		p.mu.Lock()
		q := p.queue
		p.queue = nil
		p.mu.Unlock()
		for _, m := range q {
			m.done.err = ErrProducerClosed
			close(m.done.done)
		}
		<-p.stopped
	}
	select {
	case <-p.pubDone:
	case <-ctx.Done():
		p.c.cancel() // the publisher gives up and fails what is left
		<-p.pubDone
	}
	p.releaseRoom(true)
	lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.pubMu.Lock()
	st := p.pubState
	p.pubMu.Unlock()
	st.Closed = true
	b, _ := json.Marshal(st)
	_ = p.c.meta.Put(lctx, p.c.prefix+"produced/"+p.c.id, b, p.c.rec.Lease)
	// Revoke the messages' lease only when every message was consumed and
	// none is retained; otherwise they stay for the channel's TTL.
	if p.c.rec.Retain > 0 {
		return err
	}
	if cur, ok, _ := p.c.meta.Get(lctx, p.c.prefix+"consumed/"+p.c.id); ok {
		var cu cursor
		if json.Unmarshal(cur.Value, &cu) == nil && cu.Offset >= p.written {
			_ = p.c.kv.Revoke(lctx, p.lease)
		}
	} else if p.written == 0 {
		_ = p.c.kv.Revoke(lctx, p.lease)
	}
	return err
}
