// Package mqgrpc serves services/mq over gRPC (fluxon.v1.MQ, see
// api/proto/fluxon/v1/mq.proto) from an owner, and is its Go client (what
// `fluxon mq` uses).
package mqgrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/mq"
)

// Server limits and defaults.
const (
	// DefaultIdle: a handle nobody called for this long is closed.
	DefaultIdle = 60 * time.Second
	// MaxIdle bounds idle_ms.
	MaxIdle = time.Hour
	// MaxWait bounds wait_ms.
	MaxWait = 5 * time.Minute
	// MaxBatch bounds a Get's batch.
	MaxBatch = 10000
)

// Server is the MQ service of one owner.
type Server struct {
	fluxonv1.UnimplementedMQServer
	kv    mq.KV
	store *meta.Store
	owner string
	log   *slog.Logger
	reg   prometheus.Registerer

	mu      sync.Mutex
	handles map[string]*handle
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

// handle is a producer or consumer the server holds between calls.
type handle struct {
	mu        sync.Mutex // one call at a time
	ch        *mq.Chan
	last      time.Time
	idle      time.Duration
	delivered map[ref]*mq.Message
	typ       mq.Type
}

func handleKey(role mq.Role, uk, id string) string { return string(role) + "\x00" + uk + "\x00" + id }

func (s *Server) lookup(key string) *handle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handles[key]
}

type ref struct {
	producer string
	offset   uint64
}

// NewServer serves channels on kv (the owner's store) with etcd store.
func NewServer(kv mq.KV, store *meta.Store, owner string, log *slog.Logger, reg prometheus.Registerer) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{kv: kv, store: store, owner: owner, log: log, reg: reg, handles: map[string]*handle{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.reap()
	return s
}

// Register adds the service to gs.
func (s *Server) Register(gs *grpc.Server) { fluxonv1.RegisterMQServer(gs, s) }

// Close closes every handle: consumers' unacknowledged messages go to the
// channels' next consumers.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	hs := s.handles
	s.handles = map[string]*handle{}
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.ch.Close(ctx))
	}
	return errors.Join(errs...)
}

func (s *Server) reap() {
	defer close(s.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		var idle []*handle
		s.mu.Lock()
		for k, h := range s.handles {
			if h.mu.TryLock() {
				if now.Sub(h.last) > h.idle {
					idle = append(idle, h)
					delete(s.handles, k)
				}
				h.mu.Unlock()
			}
		}
		s.mu.Unlock()
		for _, h := range idle {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := h.ch.Close(ctx); err != nil {
				s.log.Warn("mq: closing an idle gRPC handle", "channel", h.ch.UniqueKey(), "id", h.ch.MemberID(), "err", err)
			}
			cancel()
		}
	}
}

func (s *Server) cfg(c *fluxonv1.MQChannelConfig) mq.Config {
	return mq.Config{Capacity: c.GetCapacity(), TTL: time.Duration(c.GetTtlMs()) * time.Millisecond, Retain: c.GetRetain(),
		Store: s.store, Owner: s.owner, Logger: s.log, Registerer: s.reg}
}

func typeOf(c *fluxonv1.MQChannelConfig) mq.Type {
	if c.GetType() == "" {
		return mq.MPMC
	}
	return mq.Type(c.GetType())
}

func idleOf(ms int64) (time.Duration, error) {
	switch {
	case ms < 0 || time.Duration(ms)*time.Millisecond > MaxIdle:
		return 0, fmt.Errorf("%w: idle_ms %d out of range (0..%d)", errBadRequest, ms, MaxIdle.Milliseconds())
	case ms == 0:
		return DefaultIdle, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// acquire returns the handle of (role, channel, id), binding it if needed,
// locked for the caller.
func (s *Server) acquire(ctx context.Context, role mq.Role, c *fluxonv1.MQChannelConfig, id string, idleMS int64,
	tune func(*mq.Config)) (*handle, error) {
	idle, err := idleOf(idleMS)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("%w: no channel", errBadRequest)
	}
	key := handleKey(role, c.GetUniqueKey(), id)
	if h := s.lookup(key); h != nil && h.typ != typeOf(c) {
		return nil, fmt.Errorf("%w: %q is %s, asked for %s", mq.ErrTypeMismatch, c.GetUniqueKey(), h.typ, typeOf(c))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, mq.ErrChannelClosed
	}
	h := s.handles[key]
	if h == nil {
		h = &handle{delivered: map[ref]*mq.Message{}, typ: typeOf(c)}
		s.handles[key] = h
	}
	s.mu.Unlock()
	h.mu.Lock()
	h.last, h.idle = time.Now(), idle
	if h.ch == nil {
		cfg := s.cfg(c)
		cfg.ID = id
		if tune != nil {
			tune(&cfg)
		}
		ch, err := mq.NewOrBind(ctx, s.kv, c.GetUniqueKey(), cfg, typeOf(c), role)
		if err != nil {
			h.mu.Unlock()
			s.mu.Lock()
			if s.handles[key] == h {
				delete(s.handles, key)
			}
			s.mu.Unlock()
			return nil, err
		}
		h.ch = ch
	}
	return h, nil
}

// release unlocks h; a handle whose channel was reclaimed is dropped.
func (s *Server) release(h *handle, err error) {
	h.last = time.Now()
	h.mu.Unlock()
	if errors.Is(err, mq.ErrChannelClosed) {
		s.mu.Lock()
		for k, v := range s.handles {
			if v == h {
				delete(s.handles, k)
			}
		}
		s.mu.Unlock()
		_ = h.ch.Close(context.Background())
	}
}

// Create binds or creates a channel.
func (s *Server) Create(ctx context.Context, req *fluxonv1.MQCreateRequest) (*fluxonv1.MQChannelStat, error) {
	c := req.GetChannel()
	if c == nil {
		return nil, toStatus(fmt.Errorf("%w: no channel", errBadRequest))
	}
	st, err := mq.Create(ctx, s.cfg(c), c.GetUniqueKey(), typeOf(c))
	if err != nil {
		return nil, toStatus(err)
	}
	return statProto(st), nil
}

// Put writes messages as one producer.
func (s *Server) Put(ctx context.Context, req *fluxonv1.MQPutRequest) (*fluxonv1.MQPutResponse, error) {
	id := req.GetProducerId()
	if id == "" {
		id = "grpc-" + s.owner
	}
	h, err := s.acquire(ctx, mq.Producer, req.GetChannel(), id, req.GetIdleMs(), nil)
	if err != nil {
		return nil, toStatus(err)
	}
	pend := make([]mq.Pending, 0, len(req.GetMessages()))
	for _, m := range req.GetMessages() {
		var opts []mq.PutOption
		if req.GetFailWhenFull() {
			opts = append(opts, mq.FailWhenFull())
		}
		var p mq.Pending
		p, err = h.ch.PutAsync(ctx, m, opts...)
		if err != nil {
			break
		}
		pend = append(pend, p)
	}
	for _, p := range pend {
		if werr := p.Wait(ctx); werr != nil && err == nil {
			err = werr
		}
	}
	s.release(h, err)
	if err != nil {
		return nil, toStatus(fmt.Errorf("after %d of %d messages: %w", len(pend), len(req.GetMessages()), err))
	}
	return &fluxonv1.MQPutResponse{ChanId: h.ch.ID(), Accepted: uint64(len(pend))}, nil
}

// Get returns messages for one consumer.
func (s *Server) Get(ctx context.Context, req *fluxonv1.MQGetRequest) (*fluxonv1.MQGetResponse, error) {
	wait := time.Duration(req.GetWaitMs()) * time.Millisecond
	if req.GetWaitMs() < 0 || wait > MaxWait || req.GetBatch() > MaxBatch {
		return nil, toStatus(fmt.Errorf("%w: wait_ms 0..%d, batch 0..%d", errBadRequest, MaxWait.Milliseconds(), MaxBatch))
	}
	id := req.GetConsumerId()
	if id == "" {
		id = "grpc-" + s.owner
	}
	start := mq.Start(req.GetStart())
	h, err := s.acquire(ctx, mq.Consumer, req.GetChannel(), id, req.GetIdleMs(), func(c *mq.Config) { c.Start = start })
	if err != nil {
		return nil, toStatus(err)
	}
	msgs, err := h.ch.Get(ctx, int(max(req.GetBatch(), 1)), wait, 0)
	out := &fluxonv1.MQGetResponse{ChanId: h.ch.ID()}
	for _, m := range msgs {
		h.delivered[ref{m.Producer, m.Offset}] = m
		out.Messages = append(out.Messages, &fluxonv1.MQMessage{ProducerId: m.Producer, Offset: m.Offset,
			ProducedAtUnixNs: m.ProducedAt.UnixNano(), Redelivered: m.Redelivered, Data: m.Data, Dict: m.IsDict()})
	}
	s.release(h, err)
	if err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

// Ack acknowledges messages a Get returned.
func (s *Server) Ack(ctx context.Context, req *fluxonv1.MQAckRequest) (*fluxonv1.MQAckResponse, error) {
	id := req.GetConsumerId()
	if id == "" {
		id = "grpc-" + s.owner
	}
	h := s.lookup(handleKey(mq.Consumer, req.GetUniqueKey(), id))
	if h == nil {
		return nil, toStatus(fmt.Errorf("%w: consumer %q holds nothing on %q here (closed after idling?); the messages go to the next Get", mq.ErrUnknownMessage, id, req.GetUniqueKey()))
	}
	h.mu.Lock()
	var err error
	msgs := make([]*mq.Message, 0, len(req.GetMessages()))
	for _, r := range req.GetMessages() {
		m := h.delivered[ref{r.GetProducerId(), r.GetOffset()}]
		if m == nil {
			err = fmt.Errorf("%w: %s/%d", mq.ErrUnknownMessage, r.GetProducerId(), r.GetOffset())
			break
		}
		msgs = append(msgs, m)
	}
	if err == nil {
		err = h.ch.Ack(msgs...)
		for _, m := range msgs {
			delete(h.delivered, ref{m.Producer, m.Offset})
		}
	}
	s.release(h, err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &fluxonv1.MQAckResponse{}, nil
}

// Stat returns a channel's state.
func (s *Server) Stat(ctx context.Context, req *fluxonv1.MQStatRequest) (*fluxonv1.MQChannelStat, error) {
	st, ok, err := mq.Find(ctx, s.store, req.GetUniqueKey())
	if err == nil && !ok {
		err = fmt.Errorf("%w: %q", mq.ErrNoChannel, req.GetUniqueKey())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return statProto(st), nil
}

// List returns every channel's state.
func (s *Server) List(ctx context.Context, _ *fluxonv1.MQListRequest) (*fluxonv1.MQListResponse, error) {
	sts, err := mq.Channels(ctx, s.store)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &fluxonv1.MQListResponse{}
	for _, st := range sts {
		out.Channels = append(out.Channels, statProto(st))
	}
	return out, nil
}

func statProto(st mq.ChannelStat) *fluxonv1.MQChannelStat {
	p := &fluxonv1.MQChannelStat{ChanId: st.ChanID, UniqueKey: st.UniqueKey, Type: string(st.Type), Capacity: st.Capacity,
		TtlMs: st.TTLms, Retain: st.Retain, CreatedUnixMs: st.Created.UnixMilli(), Backlog: st.Backlog, Inflight: st.Inflight}
	for _, ps := range st.Producers {
		p.Producers = append(p.Producers, &fluxonv1.MQProducerStat{ProducerId: ps.ID, ProduceOffset: ps.ProduceOffset,
			ConsumeOffset: ps.ConsumeOffset, Reserved: ps.Reserved, Backlog: ps.Backlog, Inflight: ps.Inflight,
			Consumer: ps.Consumer, Live: ps.Live, Closed: ps.Closed})
	}
	for _, m := range st.Members {
		p.Members = append(p.Members, &fluxonv1.MQMemberStat{ChanId: m.ChanID, Id: m.ID, Role: string(m.Role),
			Weight: int32(m.Weight), Owner: m.Owner, Host: m.Host, Pid: int32(m.PID), SinceUnixMs: m.Since.UnixMilli()})
	}
	return p
}

// StatFromProto is statProto's inverse (the client's side).
func StatFromProto(p *fluxonv1.MQChannelStat) mq.ChannelStat {
	st := mq.ChannelStat{ChanID: p.GetChanId(), UniqueKey: p.GetUniqueKey(), Type: mq.Type(p.GetType()), Capacity: p.GetCapacity(),
		TTLms: p.GetTtlMs(), Retain: p.GetRetain(), Created: time.UnixMilli(p.GetCreatedUnixMs()).UTC(),
		Backlog: p.GetBacklog(), Inflight: p.GetInflight(), Producers: []mq.ProducerStat{}, Members: []mq.MemberStat{}}
	for _, ps := range p.GetProducers() {
		st.Producers = append(st.Producers, mq.ProducerStat{ID: ps.GetProducerId(), ProduceOffset: ps.GetProduceOffset(),
			ConsumeOffset: ps.GetConsumeOffset(), Reserved: ps.GetReserved(), Backlog: ps.GetBacklog(), Inflight: ps.GetInflight(),
			Consumer: ps.GetConsumer(), Live: ps.GetLive(), Closed: ps.GetClosed()})
	}
	for _, m := range p.GetMembers() {
		st.Members = append(st.Members, mq.MemberStat{ChanID: m.GetChanId(), ID: m.GetId(), Role: mq.Role(m.GetRole()),
			Weight: int(m.GetWeight()), Owner: m.GetOwner(), Host: m.GetHost(), PID: int(m.GetPid()),
			Since: time.UnixMilli(m.GetSinceUnixMs()).UTC()})
	}
	return st
}
