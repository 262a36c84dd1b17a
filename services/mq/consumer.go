package mq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// cursor is a stream's consume record (mq/chan/<id>/consumed/<producer>):
// the first message not acknowledged (Offset, at Index of batch Batch), the
// first batch still stored, and how far the committing consumer delivered.
type cursor struct {
	Offset         uint64 `json:"offset"`
	Batch          uint64 `json:"batch"`
	Index          uint32 `json:"index"`
	Earliest       uint64 `json:"earliest"`
	EarliestOffset uint64 `json:"earliest_offset"`
	Delivered      uint64 `json:"delivered"`
	By             string `json:"by,omitempty"`
}

// allStreams is the claim an MPSC consumer holds on every stream at once.
const allStreams = "_all"

// fetchParallel is how many batches a consumer reads at once, each of
// another stream (a stream's batches are read one after another, in
// order): one read's round trip to the owner no longer waits for another's.
const fetchParallel = 4

// commitEvery spaces a consumer's etcd commits: acknowledgements that come
// meanwhile go in the next one.
const commitEvery = 5 * time.Millisecond

// pos is a place in a stream.
type pos struct {
	batch  uint64
	index  uint32
	offset uint64
}

type batchInfo struct {
	seq, first uint64
	count      uint32
}

// stream is one producer's stream as a consumer sees it.
type stream struct {
	prod     string
	produced produced
	claim    string // the consumer holding it (MPMC), from etcd
	claimRev int64  // etcd revision of our last claim: older claim events are stale
	mine     bool
	draining bool
	fetching bool // a fetcher is reading its next batch
	gen      int  // bumped whenever fetched messages are dropped
	epoch    int  // bumped whenever the stream is taken or lost

	fetch      pos        // next message to fetch
	window     []*Message // fetched and not acknowledged, in order
	delivered  int        // window[:delivered] went to the application
	acked      int        // acknowledged within window[:delivered], not yet popped
	committed  cursor     // last known in etcd
	deliverTo  uint64     // offsets below were delivered
	redeliver  uint64     // offsets below this were delivered by a previous owner
	dirty      bool       // committed is behind
	earliest   pos        // first batch not deleted
	known      []batchInfo
	started    bool
	retryAfter time.Time
}

type consumer struct {
	c *Chan

	commitMu  sync.Mutex // one commit at a time
	mu        sync.Mutex
	streams   map[string]*stream
	weights   map[string]int      // live producers' weights
	consumers map[string]struct{} // live consumers
	holdAll   bool                // MPSC: we hold the claim on every stream
	allClaim  string              // MPSC: who holds it
	ready     []*Message
	prefetch  int
	last      []*Message // AutoAck: the previous Get's messages
	closed    bool
	rr        int

	getWake   chan struct{}
	fetchWake chan struct{}
	ctlWake   chan struct{}
	comWake   chan struct{}
}

func newConsumer(c *Chan) *consumer {
	return &consumer{c: c, streams: map[string]*stream{}, weights: map[string]int{}, consumers: map[string]struct{}{},
		prefetch: c.cfg.Prefetch, getWake: make(chan struct{}, 1), fetchWake: make(chan struct{}, 1),
		ctlWake: make(chan struct{}, 1), comWake: make(chan struct{}, 1)}
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (k *consumer) start() {
	k.c.wg.Add(2 + fetchParallel)
	go k.control()
	for range fetchParallel {
		go k.fetcher()
	}
	go k.committer()
}

func lastSegment(key string) string { return key[strings.LastIndexByte(key, '/')+1:] }

func hasSegment(key, seg string) bool { return strings.Contains(key, "/"+seg) }

// control follows the channel's state in etcd and takes and gives up
// streams.
func (k *consumer) control() {
	c := k.c
	defer c.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for c.ctx.Err() == nil {
		kvs, rev, err := c.meta.List(c.ctx, c.prefix)
		if err != nil {
			select {
			case <-c.ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		k.mu.Lock()
		k.weights, k.consumers = map[string]int{}, map[string]struct{}{}
		k.allClaim = ""
		for _, s := range k.streams {
			s.claim = ""
		}
		for _, kv := range kvs {
			k.apply(meta.Event{KV: kv})
		}
		k.mu.Unlock()
		k.rebalance()
		wctx, cancel := context.WithCancel(c.ctx)
		ch := c.meta.Watch(wctx, c.prefix, rev)
	watch:
		for {
			select {
			case evs, ok := <-ch:
				if !ok {
					break watch
				}
				k.mu.Lock()
				for _, e := range evs {
					k.apply(e)
				}
				k.mu.Unlock()
			case <-k.ctlWake:
			case <-tick.C:
			case <-c.ctx.Done():
				break watch
			}
			k.rebalance()
		}
		cancel()
	}
}

// apply folds one etcd change into the view; k.mu held.
func (k *consumer) apply(e meta.Event) {
	rel := strings.TrimPrefix(e.Key, k.c.prefix)
	name := lastSegment(rel)
	switch {
	case strings.HasPrefix(rel, "members/consumer/"):
		if e.Deleted {
			delete(k.consumers, name)
		} else {
			k.consumers[name] = struct{}{}
		}
	case strings.HasPrefix(rel, "members/producer/"):
		if e.Deleted {
			delete(k.weights, name)
		} else {
			var m memberRec
			if json.Unmarshal(e.Value, &m) == nil {
				k.weights[name] = m.Weight
			}
		}
	case strings.HasPrefix(rel, "produced/"):
		s := k.stream(name)
		var p produced
		if !e.Deleted && json.Unmarshal(e.Value, &p) == nil && p.Batch >= s.produced.Batch {
			s.produced = p
			if s.mine {
				kick(k.fetchWake)
			}
		}
	case strings.HasPrefix(rel, "claims/"):
		v := string(e.Value)
		if e.Deleted {
			v = ""
		}
		if name == allStreams {
			k.allClaim = v
		} else if s := k.stream(name); e.Mod >= s.claimRev {
			// An event from before our own claim (still queued when we
			// made it) would make us think another consumer holds it.
			s.claim = v
		}
	}
}

func (k *consumer) stream(prod string) *stream {
	s := k.streams[prod]
	if s == nil {
		s = &stream{prod: prod}
		k.streams[prod] = s
	}
	return s
}

// assign shares streams among consumers: heaviest first, each to the
// consumer with the least weight so far (ties to the first by id). Every
// consumer computes the same from the same view.
func assign(streams []string, weights map[string]int, consumers []string) map[string]string {
	out := map[string]string{}
	if len(consumers) == 0 {
		return out
	}
	w := func(s string) int {
		if v, ok := weights[s]; ok {
			return max(v, 1)
		}
		return 1
	}
	sorted := slices.Clone(streams)
	sort.Slice(sorted, func(i, j int) bool {
		if w(sorted[i]) != w(sorted[j]) {
			return w(sorted[i]) > w(sorted[j])
		}
		return sorted[i] < sorted[j]
	})
	load := make([]int, len(consumers))
	for _, s := range sorted {
		best := 0
		for i := range consumers {
			if load[i] < load[best] {
				best = i
			}
		}
		load[best] += w(s)
		out[s] = consumers[best]
	}
	return out
}

// rebalance takes the streams this consumer should have and gives up the
// ones it should not.
func (k *consumer) rebalance() {
	c := k.c
	if c.ctx.Err() != nil {
		return
	}
	me := c.id
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	var take, commitThenRelease []*stream
	if c.rec.Type == MPSC {
		if k.holdAll && k.allClaim != me && k.allClaim != "" {
			// Someone else holds it: our lease ended.
			k.holdAll = false
			for _, s := range k.streams {
				k.lose(s)
			}
		}
		wantAll := !k.holdAll && k.allClaim == ""
		k.mu.Unlock()
		if wantAll {
			_, made, err := c.meta.Create(c.ctx, c.prefix+"claims/"+allStreams, []byte(me), c.member)
			if err == nil && made {
				k.mu.Lock()
				k.holdAll, k.allClaim = true, me
				k.mu.Unlock()
			}
		}
		k.mu.Lock()
		if k.holdAll {
			for _, s := range k.streams {
				if !s.mine {
					take = append(take, s)
				}
			}
		}
	} else {
		consumers := make([]string, 0, len(k.consumers)+1)
		for id := range k.consumers {
			consumers = append(consumers, id)
		}
		if _, ok := k.consumers[me]; !ok {
			consumers = append(consumers, me)
		}
		sort.Strings(consumers)
		names := make([]string, 0, len(k.streams))
		for n := range k.streams {
			names = append(names, n)
		}
		target := assign(names, k.weights, consumers)
		for _, s := range k.streams {
			switch {
			case s.mine && s.claim != me && s.claim != "":
				k.lose(s) // our lease ended and someone took it
			case s.mine && target[s.prod] != me && !s.draining:
				k.drain(s)
				fallthrough
			case s.mine && s.draining:
				if s.delivered == s.acked {
					commitThenRelease = append(commitThenRelease, s)
				}
			case !s.mine && target[s.prod] == me && s.claim == "":
				take = append(take, s)
			}
		}
	}
	k.mu.Unlock()
	for _, s := range commitThenRelease {
		k.commitNow()
		k.mu.Lock()
		done := s.mine && s.draining && !s.dirty
		if done {
			s.mine, s.draining = false, false
			s.gen++
		}
		k.mu.Unlock()
		if done {
			_ = c.meta.Delete(c.ctx, c.prefix+"claims/"+s.prod, []byte(me))
		}
	}
	for _, s := range take {
		k.take(s)
	}
}

// take claims a stream (MPMC) and starts fetching it where Config.Start says.
func (k *consumer) take(s *stream) {
	c := k.c
	var claimRev int64
	if c.rec.Type == MPMC {
		cl, made, err := c.meta.Create(c.ctx, c.prefix+"claims/"+s.prod, []byte(c.id), c.member)
		if err != nil || !made {
			return
		}
		claimRev = cl.Mod
	}
	rec, ok, err := c.meta.Get(c.ctx, c.prefix+"consumed/"+s.prod)
	if err != nil {
		if c.rec.Type == MPMC {
			_ = c.meta.Delete(c.ctx, c.prefix+"claims/"+s.prod, []byte(c.id))
		}
		return
	}
	var cur cursor
	if ok {
		if err := json.Unmarshal(rec.Value, &cur); err != nil {
			c.log.Error("mq: bad consume record; starting the stream from its start", "producer", s.prod, "err", err)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	s.mine, s.draining = true, false
	s.gen++
	s.epoch++
	s.claim = c.id
	s.claimRev = max(s.claimRev, claimRev)
	s.committed = cur
	s.window, s.delivered, s.acked, s.known = nil, 0, 0, nil
	s.earliest = pos{batch: cur.Earliest, offset: cur.EarliestOffset}
	s.fetch = pos{batch: cur.Batch, index: cur.Index, offset: cur.Offset}
	s.redeliver = cur.Delivered
	s.deliverTo = max(cur.Delivered, cur.Offset)
	first := !s.started
	s.started = true
	if first {
		switch c.cfg.Start {
		case StartEarliest:
			s.fetch = s.earliest
		case StartTail:
			s.fetch = pos{batch: s.produced.Batch, offset: s.produced.Offset}
			if s.fetch.offset > cur.Offset {
				s.dirty = true
				kick(k.comWake)
			}
		}
	}
	kick(k.fetchWake)
}

// lose forgets a stream someone else now holds; k.mu held.
func (k *consumer) lose(s *stream) {
	if !s.mine {
		return
	}
	k.c.log.Warn("mq: lost a stream to another consumer (this member's lease ended); its unacknowledged messages go to them", "producer", s.prod)
	k.dropUndelivered(s)
	s.mine, s.draining, s.dirty = false, false, false
	s.window, s.delivered, s.acked = nil, 0, 0
	s.gen++
	s.epoch++
}

// drain stops fetching a stream this consumer is to give up; what was
// fetched and not delivered is dropped; k.mu held.
func (k *consumer) drain(s *stream) {
	s.draining = true
	k.dropUndelivered(s)
}

func (k *consumer) dropUndelivered(s *stream) {
	if len(s.window) > s.delivered {
		m := s.window[s.delivered]
		s.fetch = pos{batch: m.batch, index: m.index, offset: m.Offset}
		s.window = s.window[:s.delivered]
	}
	k.ready = slices.DeleteFunc(k.ready, func(m *Message) bool { return m.st == s })
	s.gen++
	k.c.m.prefetch.Set(float64(len(k.ready)))
}

// fetcher reads batches of the streams this consumer holds, round robin,
// while the prefetch buffer has room; fetchParallel of them run, each on a
// stream no other is reading.
func (k *consumer) fetcher() {
	c := k.c
	defer c.wg.Done()
	for {
		k.mu.Lock()
		var s *stream
		if !k.closed && len(k.ready) < k.prefetch {
			s = k.next()
		}
		if s == nil {
			k.mu.Unlock()
			select {
			case <-k.fetchWake:
			case <-c.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		seq, gen := s.fetch.batch, s.gen
		s.fetching = true
		k.mu.Unlock()
		kick(k.fetchWake) // another fetcher may take another stream

		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		b, _, err := c.kv.GetCopy(ctx, batchKey(c.rec.ID, s.prod, seq))
		cancel()
		var first uint64
		var msgs []Message
		if err == nil {
			first, msgs, err = decodeBatch(b, s.prod, seq)
		}
		k.mu.Lock()
		s.fetching = false
		if s.gen != gen || !s.mine || s.draining || s.fetch.batch != seq {
			k.mu.Unlock()
			kick(k.fetchWake)
			continue
		}
		switch {
		case err == nil:
			k.deliverable(s, seq, first, msgs)
		case errors.Is(err, kv.ErrNotFound) || errors.Is(err, ErrBadBatch):
			// Gone (its producer's lease ended, or retention removed it)
			// or unreadable: nothing can bring it back. Move on.
			c.log.Error("mq: a batch of messages is lost", "producer", s.prod, "batch", seq, "err", err)
			c.m.lost.Inc()
			s.fetch = pos{batch: seq + 1, offset: s.fetch.offset}
			s.dirty = true
			kick(k.comWake)
		default:
			if c.ctx.Err() == nil {
				c.log.Warn("mq: reading a batch failed; retrying", "producer", s.prod, "batch", seq, "err", err)
			}
			s.retryAfter = time.Now().Add(100 * time.Millisecond)
		}
		k.mu.Unlock()
	}
}

// next picks the next stream to fetch from, round robin; k.mu held.
func (k *consumer) next() *stream {
	names := make([]string, 0, len(k.streams))
	for n, s := range k.streams {
		if s.mine && !s.draining && !s.fetching && s.fetch.batch < s.produced.Batch && time.Now().After(s.retryAfter) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	k.rr++
	return k.streams[names[k.rr%len(names)]]
}

// deliverable appends a fetched batch to the stream's window and the ready
// queue; k.mu held.
func (k *consumer) deliverable(s *stream, seq, first uint64, msgs []Message) {
	skip := int(s.fetch.index)
	s.known = append(s.known, batchInfo{seq: seq, first: first, count: uint32(len(msgs))})
	for i := skip; i < len(msgs); i++ {
		m := &msgs[i]
		m.st, m.epoch = s, s.epoch
		if m.Offset < s.redeliver && m.Offset >= s.committed.Offset {
			m.Redelivered = true
		}
		s.window = append(s.window, m)
		k.ready = append(k.ready, m)
	}
	s.fetch = pos{batch: seq + 1, offset: first + uint64(len(msgs))}
	k.c.m.prefetch.Set(float64(len(k.ready)))
	kick(k.getWake)
}

// Get returns up to batch messages, waiting up to wait for the first (0:
// not at all). prefetch > 0 sets how many messages the consumer reads
// ahead. An empty result with no error means none came in time. With
// AutoAck, Get first acknowledges the previous Get's messages.
func (c *Chan) Get(ctx context.Context, batch int, wait time.Duration, prefetch int) ([]*Message, error) {
	k := c.cons
	if k == nil {
		return nil, ErrWrongRole
	}
	if batch <= 0 {
		batch = 1
	}
	start := time.Now()
	k.mu.Lock()
	if prefetch > 0 {
		k.prefetch = prefetch
	}
	last := k.last
	k.last = nil
	k.mu.Unlock()
	if c.cfg.AutoAck && len(last) > 0 {
		if err := c.Ack(last...); err != nil {
			return nil, err
		}
	}
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	for {
		k.mu.Lock()
		if k.closed || c.ctx.Err() != nil {
			k.mu.Unlock()
			return nil, ErrChannelClosed
		}
		if n := min(batch, len(k.ready)); n > 0 {
			out := slices.Clone(k.ready[:n])
			k.ready = k.ready[n:]
			now := time.Now()
			for _, m := range out {
				s := m.st
				s.delivered++
				if m.Offset+1 > s.deliverTo {
					s.deliverTo = m.Offset + 1
					s.dirty = true
				}
				if m.Redelivered {
					c.m.redelivered.Inc()
				}
				c.m.latency.Observe(now.Sub(m.ProducedAt).Seconds())
			}
			if c.cfg.AutoAck {
				k.last = out
			}
			c.m.prefetch.Set(float64(len(k.ready)))
			k.mu.Unlock()
			kick(k.fetchWake)
			kick(k.comWake)
			c.m.get.Add(float64(n))
			c.m.getWait.Observe(time.Since(start).Seconds())
			return out, nil
		}
		k.mu.Unlock()
		if timer == nil {
			return nil, nil
		}
		select {
		case <-k.getWake:
		case <-timer:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
		}
	}
}

// Ack acknowledges delivered messages: once every earlier message of the
// same producer is acknowledged too, the consume offset moves past them
// (committed to etcd within a few milliseconds, many at a time). Messages
// of a stream this consumer lost meanwhile are ignored: they go to its new
// holder again.
func (c *Chan) Ack(msgs ...*Message) error {
	k := c.cons
	if k == nil {
		return ErrWrongRole
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	dirty := false
	for _, m := range msgs {
		s := m.st
		if s == nil || k.streams[s.prod] != s {
			return fmt.Errorf("%w (%s/%d)", ErrUnknownMessage, m.Producer, m.Offset)
		}
		if m.acked() || !s.mine {
			continue
		}
		if m.epoch != s.epoch {
			continue // delivered before the stream was lost and taken again
		}
		m.index |= ackedBit
		s.acked++
		// Pop the acknowledged prefix.
		n := 0
		for n < s.delivered && s.window[n].index&ackedBit != 0 {
			n++
		}
		if n > 0 {
			last := s.window[n-1]
			s.window = s.window[n:]
			s.delivered -= n
			s.acked -= n
			if len(s.window) > 0 {
				f := s.window[0]
				s.committed.Offset = max(s.committed.Offset, f.Offset)
				s.committed.Batch, s.committed.Index = f.batch, f.index&^ackedBit
			} else {
				nextIdx := last.index&^ackedBit + 1
				s.committed.Offset = max(s.committed.Offset, last.Offset+1)
				s.committed.Batch, s.committed.Index = last.batch, nextIdx
				if info := s.batchOf(last.batch); info != nil && nextIdx >= info.count {
					s.committed.Batch, s.committed.Index = last.batch+1, 0
				}
			}
			s.dirty, dirty = true, true
		}
		if s.draining && s.delivered == s.acked {
			kick(k.ctlWake)
		}
	}
	if dirty {
		kick(k.comWake)
	}
	return nil
}

const ackedBit = 1 << 31

func (m *Message) acked() bool { return m.index&ackedBit != 0 }

func (s *stream) batchOf(seq uint64) *batchInfo {
	for i := len(s.known) - 1; i >= 0; i-- {
		if s.known[i].seq == seq {
			return &s.known[i]
		}
	}
	return nil
}

// committer writes consume records, at most every commitEvery, and then
// deletes the batches wholly consumed (beyond what Retain keeps).
func (k *consumer) committer() {
	c := k.c
	defer c.wg.Done()
	for {
		select {
		case <-k.comWake:
		case <-c.ctx.Done():
			return
		}
		k.commitNow()
		select {
		case <-time.After(commitEvery):
		case <-c.ctx.Done():
			return
		}
	}
}

// commitNow writes every dirty stream's record, guarded by this consumer's
// claim, then deletes consumed batches.
func (k *consumer) commitNow() {
	c := k.c
	k.commitMu.Lock()
	defer k.commitMu.Unlock()
	k.mu.Lock()
	guards := map[string]string{}
	puts := map[string][]byte{}
	var done []*stream
	for _, s := range k.streams {
		if !s.mine || !s.dirty {
			continue
		}
		if s.fetch.offset > s.committed.Offset && len(s.window) == 0 {
			// Nothing fetched is pending: the fetch position (a skipped
			// tail or a lost batch) is the consume position.
			s.committed.Offset, s.committed.Batch, s.committed.Index = s.fetch.offset, s.fetch.batch, s.fetch.index
		}
		cur := s.committed
		cur.Earliest, cur.EarliestOffset = s.earliest.batch, s.earliest.offset
		cur.Delivered = max(s.deliverTo, cur.Offset)
		cur.By = c.id
		b, _ := json.Marshal(cur)
		puts[c.prefix+"consumed/"+s.prod] = b
		if c.rec.Type == MPSC {
			guards[c.prefix+"claims/"+allStreams] = c.id
		} else {
			guards[c.prefix+"claims/"+s.prod] = c.id
		}
		s.dirty = false
		done = append(done, s)
	}
	k.mu.Unlock()
	if len(puts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := c.meta.PutAllIfValues(ctx, guards, puts, c.rec.Lease)
	if err != nil || !ok {
		if err != nil && c.ctx.Err() == nil {
			c.log.Warn("mq: committing consume offsets failed; retrying", "err", err)
		}
		// A claim is gone (handled by control) or etcd failed: try again
		// later for the streams still ours.
		k.mu.Lock()
		for _, s := range done {
			s.dirty = s.mine
		}
		k.mu.Unlock()
		kick(k.ctlWake)
		if err != nil {
			time.AfterFunc(50*time.Millisecond, func() { kick(k.comWake) })
		}
		return
	}
	c.m.commits.Inc()
	k.deleteConsumed(done)
	k.updateBacklog()
}

// deleteConsumed removes the batch objects no message of which is still
// needed: wholly before the consume position, and beyond Retain.
func (k *consumer) deleteConsumed(streams []*stream) {
	c := k.c
	for _, s := range streams {
		k.mu.Lock()
		from, upto := s.earliest.batch, s.committed.Batch
		var keepFrom uint64
		if c.rec.Retain > 0 {
			keepFrom = 0
			if s.committed.Offset > uint64(c.rec.Retain) {
				keepFrom = s.committed.Offset - uint64(c.rec.Retain)
			}
			// Delete only batches known to end at or before keepFrom.
			upto = from
			for _, b := range s.known {
				if b.seq == upto && b.first+uint64(b.count) <= keepFrom {
					upto++
				}
			}
		}
		k.mu.Unlock()
		if upto <= from {
			continue
		}
		for seq := from; seq < upto; seq++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := c.kv.Remove(ctx, batchKey(c.rec.ID, s.prod, seq)); err != nil && !errors.Is(err, kv.ErrNotFound) {
				c.log.Debug("mq: deleting a consumed batch failed (its lease removes it later)", "producer", s.prod, "batch", seq, "err", err)
			}
			cancel()
		}
		k.mu.Lock()
		next := pos{batch: upto}
		if info := s.batchOf(upto); info != nil {
			next.offset = info.first
		} else if upto == s.committed.Batch {
			next.offset = s.committed.Offset - uint64(s.committed.Index)
		}
		s.earliest = next
		s.known = slices.DeleteFunc(s.known, func(b batchInfo) bool { return b.seq < upto })
		if s.mine {
			s.dirty = true
		}
		k.mu.Unlock()
		kick(k.comWake)
	}
}

// updateBacklog sets the backlog gauge: messages produced and not yet
// consumed on the streams this consumer holds.
func (k *consumer) updateBacklog() {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b uint64
	for _, s := range k.streams {
		if s.mine && s.produced.Offset > s.committed.Offset {
			b += s.produced.Offset - s.committed.Offset
		}
	}
	k.c.m.backlog.Set(float64(b))
}

// close commits what was acknowledged and gives the streams up; messages
// delivered and not acknowledged go to whoever takes the streams next.
func (k *consumer) close(ctx context.Context) {
	k.mu.Lock()
	k.closed = true
	for _, s := range k.streams {
		if s.mine {
			k.dropUndelivered(s)
		}
	}
	k.mu.Unlock()
	k.commitNow()
	c := k.c
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	k.mu.Lock()
	var claims []string
	if k.holdAll {
		claims = append(claims, allStreams)
	}
	for _, s := range k.streams {
		if s.mine && c.rec.Type == MPMC {
			claims = append(claims, s.prod)
		}
		s.mine = false
	}
	k.mu.Unlock()
	for _, p := range claims {
		_ = c.meta.Delete(dctx, c.prefix+"claims/"+p, []byte(c.id))
	}
	kick(k.getWake)
}
