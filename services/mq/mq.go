// Package mq is a message queue on the KV substrate.
//
// A channel has a stable unique_key and a bound chan_id. Messages are
// written by producers, in batches, as KV objects on the producer's local
// owner (key mq/<chan_id>/<producer>/<batch>); per-producer offsets live in
// etcd; consumers read the batches through the cluster KV (pulling them
// from the producer's host when it is another), deliver them, and commit a
// consume offset to etcd only once the application acknowledged the
// messages: delivery is at-least-once with per-producer order.
//
//	ch, err := mq.NewOrBind(ctx, client, "jobs", mq.Config{}, mq.MPMC, mq.Producer)
//	err = ch.Put(ctx, payload)
//	...
//	ch, err := mq.NewOrBind(ctx, client, "jobs", mq.Config{}, mq.MPMC, mq.Consumer)
//	msgs, err := ch.Get(ctx, 64, time.Second, 0)
//	err = ch.Ack(msgs...)
//
// Each producer's messages form a stream with offsets 0, 1, 2, …. A consumer
// of an MPSC channel takes every stream (a second consumer stands by and
// takes over when the first goes); the consumers of an MPMC channel share the
// streams out by producer weight, each stream to one consumer at a time, so
// that an MPMC channel is a set of MPSC sub-channels. A consumer that dies
// loses its streams when its etcd lease ends (Config.MemberTTL); whoever
// takes them over starts from the committed offset, so the messages it had
// not acknowledged are delivered again (Message.Redelivered).
//
// Capacity is exact: producers reserve room in etcd (optimistic
// transactions over every producer's reservation) before they accept a
// message, and consumers free it by committing, so the unconsumed messages
// of a channel never exceed Config.Capacity.
package mq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// Type is a channel's type.
type Type string

// Channel types.
const (
	// MPSC: many producers, one consumer at a time (others stand by).
	MPSC Type = "mpsc"
	// MPMC: many producers, many consumers sharing the producers' streams.
	MPMC Type = "mpmc"
)

// Role is what a handle does on its channel.
type Role string

// Roles.
const (
	Producer Role = "producer"
	Consumer Role = "consumer"
)

// FullPolicy says what Put does when the channel is at capacity.
type FullPolicy string

// Full policies.
const (
	// Block: Put waits for room until its context ends.
	Block FullPolicy = "block"
	// Fail: Put returns ErrChannelFull at once.
	Fail FullPolicy = "fail"
)

// Start says where a consumer starts on a stream it claims.
type Start string

// Starts.
const (
	// StartCommitted: at the channel's committed offset, the first message
	// no consumer has acknowledged (the default; what failover needs).
	StartCommitted Start = "committed"
	// StartEarliest: at the earliest message still retained, acknowledged
	// ones included (see Config.Retain): a replay.
	StartEarliest Start = "earliest"
	// StartTail: after the last message produced when the stream is
	// claimed; the backlog is skipped and counted as consumed.
	StartTail Start = "tail"
)

// Defaults of Config.
const (
	DefaultCapacity         = 1 << 20
	DefaultTTL              = 5 * time.Minute
	DefaultMemberTTL        = 5 * time.Second
	DefaultPrefetch         = 4096
	DefaultMaxBatchMessages = 1024
	DefaultMaxBatchBytes    = 4 << 20
	// MaxMessageSize bounds one message (and so one batch object).
	MaxMessageSize = 256 << 20
	// MaxUniqueKeyLen bounds a channel name.
	MaxUniqueKeyLen = 512
)

// Errors callers compare with errors.Is.
var (
	// ErrChannelFull: the channel holds Capacity unconsumed messages and the
	// policy is Fail.
	ErrChannelFull = errors.New("mq: channel full")
	// ErrProducerClosed: Put on a producer that was closed (the normal
	// shutdown signal).
	ErrProducerClosed = errors.New("mq: producer closed")
	// ErrChannelClosed: the handle was closed, or the channel was reclaimed
	// (its TTL passed with no live member) or deleted.
	ErrChannelClosed = errors.New("mq: channel closed")
	// ErrWrongRole: a producer call on a consumer handle or the reverse.
	ErrWrongRole = errors.New("mq: wrong role for this call")
	// ErrTypeMismatch: the unique_key is bound to a channel of another type.
	ErrTypeMismatch = errors.New("mq: channel exists with another type")
	// ErrIDInUse: a live member of the channel already has this producer or
	// consumer id.
	ErrIDInUse = errors.New("mq: producer/consumer id in use by a live member")
	// ErrBadConfig: a Config field is out of range.
	ErrBadConfig = errors.New("mq: bad config")
	// ErrMessageTooLarge: a message over MaxMessageSize.
	ErrMessageTooLarge = errors.New("mq: message too large")
	// ErrNoChannel: no channel has this unique_key.
	ErrNoChannel = errors.New("mq: no such channel")
	// ErrUnknownMessage: Ack of a message this consumer did not deliver.
	ErrUnknownMessage = errors.New("mq: message not delivered by this consumer")
	// ErrNoEtcd: no etcd endpoints in Config and none from the client.
	ErrNoEtcd = errors.New("mq: no etcd endpoints (set Config.EtcdEndpoints or attach to a local owner)")
)

// KV is what the queue needs of the KV substrate: *fluxon.Client is one
// (through shared memory to the local owner, or over gRPC); the owner's
// gRPC MQ service passes its own store. PutWith must not keep value once
// it returns: producers reuse the buffer for their next batch.
type KV interface {
	PutWith(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error)
	GetCopy(ctx context.Context, key string) ([]byte, kv.Info, error)
	Remove(ctx context.Context, key string) error
	Grant(ctx context.Context, ttl time.Duration) (kv.LeaseID, error)
	KeepAlive(ctx context.Context, id kv.LeaseID) (time.Duration, error)
	Revoke(ctx context.Context, id kv.LeaseID) error
}

// ClusterInfo is implemented by clients that know their cluster (a
// *fluxon.Client attached to a local owner): NewOrBind then needs no etcd
// endpoints or cluster name in Config.
type ClusterInfo interface {
	ClusterName() string
	EtcdEndpoints() []string
	OwnerKey() string
}

// Config of a channel handle. Capacity, TTL and Retain are the channel's:
// the handle that creates the channel sets them and later binders get the
// channel's values (Stat shows them). The rest is the handle's own.
type Config struct {
	// Capacity bounds the unconsumed messages of the channel (exact).
	Capacity int64
	// TTL: how long the channel and its messages outlive their last member.
	TTL time.Duration
	// Retain keeps this many acknowledged messages per producer for replay
	// (StartEarliest); 0 deletes them once acknowledged.
	Retain int64

	// FullPolicy: what this producer's Put does when the channel is at
	// capacity: Block (default) or Fail.
	FullPolicy FullPolicy
	// ID is this producer's or consumer's id; default: host-pid-random.
	ID string
	// Weight of a producer: MPMC consumers share streams so that the sum of
	// the weights each one takes is even. Default 1.
	Weight int
	// MemberTTL: a member that dies is noticed after this long (its etcd
	// lease ends; a dead consumer's streams move on). Default 5s, at least 2s.
	MemberTTL time.Duration
	// Start: where a consumer starts on the streams it claims.
	Start Start
	// AutoAck acknowledges a consumer's previous Get at its next Get.
	AutoAck bool
	// Prefetch: messages a consumer reads ahead (Get's prefetch overrides).
	Prefetch int
	// MaxBatchMessages and MaxBatchBytes bound one batch object a producer
	// writes; messages that arrive while one is being written join the next.
	MaxBatchMessages int
	MaxBatchBytes    int

	// EtcdEndpoints and ClusterName locate the cluster's etcd; defaults
	// from the client when it implements ClusterInfo.
	EtcdEndpoints []string
	ClusterName   string
	// Owner is the instance_key of the owner this member writes through,
	// shown in the channel's members; default from the client (ClusterInfo).
	Owner string
	// Store is an etcd connection to use instead of dialing one.
	Store *meta.Store
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer for the metrics; nil: prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
}

// record is a channel's etcd record (mq/names/<unique_key>).
type record struct {
	ID        string    `json:"chan_id"`
	UniqueKey string    `json:"unique_key"`
	Type      Type      `json:"type"`
	Capacity  int64     `json:"capacity"`
	TTLms     int64     `json:"ttl_ms"`
	Retain    int64     `json:"retain"`
	Lease     int64     `json:"lease"`
	Created   time.Time `json:"created"`
}

// memberRec is a member's record (mq/chan/<id>/members/<member>).
type memberRec struct {
	ID     string    `json:"id"`
	Role   Role      `json:"role"`
	Weight int       `json:"weight"`
	Owner  string    `json:"owner,omitempty"`
	Host   string    `json:"host"`
	PID    int       `json:"pid"`
	Since  time.Time `json:"since"`
}

// Chan is a bound handle on a channel, as a producer or a consumer.
type Chan struct {
	rec     record
	role    Role
	id      string
	cfg     Config
	kv      KV
	meta    meta.MQ
	store   *meta.Store
	owns    bool // the store is ours to close
	created bool // this handle made the channel
	prefix  string
	member  int64 // etcd lease of this member's records
	log     *slog.Logger
	m       *chanMetrics

	ctx    context.Context // ends at Close or reclaim
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	reclaim  bool
	prod     *producer
	cons     *consumer
	closeErr error
}

func (c Config) withDefaults() (Config, error) {
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.FullPolicy == "" {
		c.FullPolicy = Block
	}
	if c.Weight == 0 {
		c.Weight = 1
	}
	if c.MemberTTL == 0 {
		c.MemberTTL = DefaultMemberTTL
	}
	if c.Start == "" {
		c.Start = StartCommitted
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.MaxBatchMessages == 0 {
		c.MaxBatchMessages = DefaultMaxBatchMessages
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Capacity < 0:
		return c, fmt.Errorf("%w: capacity %d must be positive", ErrBadConfig, c.Capacity)
	case c.TTL < time.Second:
		return c, fmt.Errorf("%w: ttl %v is under 1s", ErrBadConfig, c.TTL)
	case c.FullPolicy != Block && c.FullPolicy != Fail:
		return c, fmt.Errorf("%w: full policy %q (want %q or %q)", ErrBadConfig, c.FullPolicy, Block, Fail)
	case c.Retain < 0:
		return c, fmt.Errorf("%w: retain %d is negative", ErrBadConfig, c.Retain)
	case c.Weight < 0:
		return c, fmt.Errorf("%w: weight %d is negative", ErrBadConfig, c.Weight)
	case c.MemberTTL < 2*time.Second:
		return c, fmt.Errorf("%w: member ttl %v is under 2s (etcd's shortest lease)", ErrBadConfig, c.MemberTTL)
	case c.Start != StartCommitted && c.Start != StartEarliest && c.Start != StartTail:
		return c, fmt.Errorf("%w: start %q (want committed, earliest or tail)", ErrBadConfig, c.Start)
	case c.Prefetch < 0 || c.MaxBatchMessages < 0 || c.MaxBatchBytes < 0:
		return c, fmt.Errorf("%w: prefetch and batch limits must be positive", ErrBadConfig)
	case strings.ContainsAny(c.ID, "/\x00") || len(c.ID) > 128:
		return c, fmt.Errorf("%w: id %q: at most 128 bytes, no '/'", ErrBadConfig, c.ID)
	}
	return c, nil
}

func checkUniqueKey(uk string) error {
	if uk == "" || len(uk) > MaxUniqueKeyLen || strings.ContainsRune(uk, 0) {
		return fmt.Errorf("%w: unique_key %q: 1 to %d bytes, no NUL", ErrBadConfig, uk, MaxUniqueKeyLen)
	}
	return nil
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func defaultMemberID() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", h, os.Getpid(), randomID(3))
}

// connect returns the etcd store to use.
func connect(ctx context.Context, client KV, cfg *Config) (*meta.Store, bool, error) {
	if cfg.Store != nil {
		return cfg.Store, false, nil
	}
	if ci, ok := client.(ClusterInfo); ok && client != nil {
		if len(cfg.EtcdEndpoints) == 0 {
			cfg.EtcdEndpoints = ci.EtcdEndpoints()
		}
		if cfg.ClusterName == "" {
			cfg.ClusterName = ci.ClusterName()
		}
	}
	if len(cfg.EtcdEndpoints) == 0 {
		return nil, false, ErrNoEtcd
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = "fluxon"
	}
	s, err := meta.Connect(ctx, cfg.EtcdEndpoints, cfg.ClusterName, cfg.Logger)
	if err != nil {
		return nil, false, fmt.Errorf("mq: %w", err)
	}
	return s, true, nil
}

// NewOrBind binds to the channel of uniqueKey, creating it with cfg's
// channel settings if there is none: however many processes race, one
// chan_id results. role says whether the handle produces or consumes.
func NewOrBind(ctx context.Context, client KV, uniqueKey string, cfg Config, typ Type, role Role) (*Chan, error) {
	if err := checkUniqueKey(uniqueKey); err != nil {
		return nil, err
	}
	if typ != MPSC && typ != MPMC {
		return nil, fmt.Errorf("%w: type %q (want %q or %q)", ErrBadConfig, typ, MPSC, MPMC)
	}
	if role != Producer && role != Consumer {
		return nil, fmt.Errorf("%w: role %q (want %q or %q)", ErrBadConfig, role, Producer, Consumer)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	store, owns, err := connect(ctx, client, &cfg)
	if err != nil {
		return nil, err
	}
	c := &Chan{role: role, cfg: cfg, kv: client, store: store, owns: owns, meta: store.MQ(), log: cfg.Logger}
	if err := c.bind(ctx, uniqueKey, typ); err != nil {
		c.dropStore()
		return nil, err
	}
	c.id = cfg.ID
	if c.id == "" {
		c.id = defaultMemberID()
	}
	c.prefix = c.meta.Keys().MQChan(c.rec.ID)
	c.m = metricsFor(cfg.Registerer).channel(uniqueKey)
	c.log = c.log.With("channel", uniqueKey, "chan_id", c.rec.ID, "role", role, "id", c.id)
	if err := c.join(ctx, client); err != nil {
		c.dropStore()
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	switch role {
	case Producer:
		p, err := newProducer(ctx, c)
		if err != nil {
			c.leave()
			return nil, err
		}
		c.prod = p
	case Consumer:
		c.cons = newConsumer(c)
	}
	c.wg.Add(1)
	go c.keepAlive()
	if c.cons != nil {
		c.cons.start()
	}
	return c, nil
}

// bind finds or creates the channel record.
func (c *Chan) bind(ctx context.Context, uk string, typ Type) error {
	key := c.meta.Keys().MQNames() + uk
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
			}
		}
		got, ok, err := c.meta.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("mq: reading channel %q: %w", uk, err)
		}
		if !ok {
			lease, err := c.meta.Grant(ctx, c.cfg.TTL)
			if err != nil {
				return fmt.Errorf("mq: creating channel %q: %w", uk, err)
			}
			want := record{ID: randomID(8), UniqueKey: uk, Type: typ, Capacity: c.cfg.Capacity,
				TTLms: c.cfg.TTL.Milliseconds(), Retain: c.cfg.Retain,
				Lease: lease, Created: time.Now().UTC()}
			b, _ := json.Marshal(want)
			now, made, err := c.meta.Create(ctx, key, b, lease)
			if err != nil {
				_ = c.meta.Revoke(ctx, lease)
				return fmt.Errorf("mq: creating channel %q: %w", uk, err)
			}
			if !made {
				_ = c.meta.Revoke(ctx, lease)
				if now.Value == nil {
					continue
				}
				got = now
			} else {
				c.rec, c.created = want, true
				return nil
			}
		}
		if err := json.Unmarshal(got.Value, &c.rec); err != nil {
			return fmt.Errorf("mq: channel %q: bad record in etcd: %v", uk, err)
		}
		if c.rec.Type != typ {
			return fmt.Errorf("%w: %q is %s, asked for %s", ErrTypeMismatch, uk, c.rec.Type, typ)
		}
		// The record's lease may have just ended (reclaimed between our
		// read and now): renewing it tells.
		if err := c.meta.KeepAliveOnce(ctx, c.rec.Lease); errors.Is(err, meta.ErrNoLease) {
			continue
		} else if err != nil {
			return fmt.Errorf("mq: channel %q: %w", uk, err)
		}
		return nil
	}
}

// join publishes this member's record on a lease of its own.
func (c *Chan) join(ctx context.Context, client KV) error {
	lease, err := c.meta.Grant(ctx, c.cfg.MemberTTL)
	if err != nil {
		return fmt.Errorf("mq: joining channel: %w", err)
	}
	host, _ := os.Hostname()
	m := memberRec{ID: c.id, Role: c.role, Weight: c.cfg.Weight, Host: host, PID: os.Getpid(), Since: time.Now().UTC()}
	m.Owner = c.cfg.Owner
	if ci, ok := client.(ClusterInfo); ok && m.Owner == "" {
		m.Owner = ci.OwnerKey()
	}
	b, _ := json.Marshal(m)
	_, made, err := c.meta.Create(ctx, c.prefix+"members/"+string(c.role)+"/"+c.id, b, lease)
	if err != nil || !made {
		_ = c.meta.Revoke(ctx, lease)
		if err == nil {
			err = fmt.Errorf("%w: %s %q on channel %q", ErrIDInUse, c.role, c.id, c.rec.UniqueKey)
		}
		return err
	}
	c.member = lease
	return nil
}

// keepAlive renews the member's and the channel's leases until Close; a
// channel lease that ended means the channel was reclaimed.
func (c *Chan) keepAlive() {
	defer c.wg.Done()
	every := min(c.cfg.MemberTTL, time.Duration(c.rec.TTLms)*time.Millisecond) / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if err := c.meta.KeepAliveOnce(c.ctx, c.rec.Lease); errors.Is(err, meta.ErrNoLease) {
			c.log.Warn("mq: channel reclaimed (its lease ended)")
			c.mu.Lock()
			c.reclaim = true
			c.mu.Unlock()
			c.cancel()
			return
		}
		if c.prod != nil {
			if _, err := c.kv.KeepAlive(c.ctx, c.prod.lease); err != nil && c.ctx.Err() == nil {
				c.log.Warn("mq: renewing the messages' lease failed", "err", err)
			}
		}
		if err := c.meta.KeepAliveOnce(c.ctx, c.member); errors.Is(err, meta.ErrNoLease) {
			// Our member record went (etcd unreachable past MemberTTL):
			// consumers lost their claims; publish the record again.
			c.log.Warn("mq: member lease ended; rejoining")
			if err := c.join(c.ctx, c.kv); err != nil && c.ctx.Err() == nil {
				c.log.Error("mq: rejoining channel failed", "err", err)
			}
		}
	}
}

// ID is the channel's chan_id.
func (c *Chan) ID() string { return c.rec.ID }

// UniqueKey is the channel's unique_key.
func (c *Chan) UniqueKey() string { return c.rec.UniqueKey }

// MemberID is this producer's or consumer's id.
func (c *Chan) MemberID() string { return c.id }

// Type is the channel's type.
func (c *Chan) Type() Type { return c.rec.Type }

// Capacity is the channel's capacity.
func (c *Chan) Capacity() int64 { return c.rec.Capacity }

// closedErr is the error for a call on a closed or reclaimed handle.
func (c *Chan) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.role == Producer && !c.reclaim {
		return ErrProducerClosed
	}
	return ErrChannelClosed
}

// Close stops the handle: a producer writes what it accepted (bounded by
// ctx), a consumer commits what was acknowledged and gives its streams up;
// then the member's records go (best-effort; their lease ends anyway). It
// returns an error only when local resources could not be released.
func (c *Chan) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.closeErr
	}
	c.closed = true
	c.mu.Unlock()
	var err error
	if c.prod != nil {
		err = c.prod.close(ctx)
	}
	if c.cons != nil {
		c.cons.close(ctx)
	}
	c.cancel()
	c.wg.Wait()
	c.leave()
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	return err
}

// leave drops the member's records and the etcd connection, best-effort.
func (c *Chan) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c.member != 0 {
		_ = c.meta.Revoke(ctx, c.member)
	}
	c.dropStore()
}

func (c *Chan) dropStore() {
	if c.owns {
		_ = c.store.Close()
	}
}
