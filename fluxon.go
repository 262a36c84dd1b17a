// Package fluxon is the Go client of a Fluxon cluster.
//
// Open attaches to the owner on this host through shared memory: values are
// written into the owner's pool in place and read in place (zero copy). When
// no local owner is reachable and Config.Address names an owner's gRPC
// endpoint, the same Client works over gRPC instead, copying values.
//
//	c, err := fluxon.Open(ctx, fluxon.Config{})
//	defer c.Close()
//	_, err = c.Put(ctx, "block/42", data)
//	v, err := c.Get(ctx, "block/42")
//	use(v.Bytes()) // in shared memory; valid until Close
//	v.Close()
package fluxon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/ring"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/kvgrpc"
	"github.com/fluxon-dev/fluxon/services/kv/shm"
	"github.com/fluxon-dev/fluxon/services/owner"
)

// Defaults of Config.
const (
	DefaultClusterName    = "fluxon"
	DefaultSharedFilePath = "/tmp/fluxon"
	DefaultCloseTimeout   = 5 * time.Second
)

// Errors, comparable with errors.Is whichever way the client is connected.
var (
	ErrNotFound      = kv.ErrNotFound
	ErrExists        = kv.ErrExists
	ErrInflight      = kv.ErrInflight
	ErrEmptyKey      = kv.ErrEmptyKey
	ErrKeyTooLong    = kv.ErrKeyTooLong
	ErrValueTooLarge = kv.ErrValueTooLarge
	ErrPoolFull      = kv.ErrPoolFull
	ErrLeaseNotFound = kv.ErrLeaseNotFound
	ErrLeaseTTL      = kv.ErrLeaseTTL
	ErrBadValue      = kv.ErrBadValue
	// ErrUnavailable: the key lives on owners of the cluster that cannot be
	// reached now (the owner this client talks to is up); retry later.
	ErrUnavailable = kv.ErrUnavailable
	// ErrNoOwner: neither a local owner nor Config.Address could be reached.
	ErrNoOwner = shm.ErrNoOwner
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("fluxon: client closed")
	// ErrOutstanding: Close timed out with values still held.
	ErrOutstanding = errors.New("fluxon: values still held at close")
)

// Re-exported types.
type (
	LeaseID = kv.LeaseID
	Info    = kv.Info
	Dict    = kv.Dict
	Field   = kv.Field
)

// Config says how to reach the cluster.
type Config struct {
	// ClusterName and SharedFilePath locate the local owner's shared.json
	// (<SharedFilePath>/<ClusterName>/shared.json), as in the owner's config.
	ClusterName    string
	SharedFilePath string
	// Address is an owner's gRPC endpoint (host:port), used when no local
	// owner answers. Empty: local only.
	Address string
	// RemoteOnly skips the local owner and uses Address.
	RemoteOnly bool
	// PollMode is how this process waits for the owner: "event_driven"
	// (default for externals: idle costs no CPU) or "busy_poll".
	PollMode string
	// Name labels this process in the owner's logs.
	Name string
	// CloseTimeout bounds how long Close waits for values still held.
	CloseTimeout time.Duration
	// Logger receives leak reports; default slog.Default().
	Logger *slog.Logger
}

// Client is a connection to a Fluxon owner, local or remote.
type Client struct {
	cfg    Config
	local  *shm.Client
	shared owner.Shared // the local owner's shared.json
	remote *kvgrpc.Client
	log    *slog.Logger

	outstanding sync.WaitGroup
	held        atomic.Int64
	leaks       atomic.Int64
	closed      atomic.Bool
}

// Open connects: to the local owner through shared memory if one answers,
// else to cfg.Address over gRPC.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.ClusterName == "" {
		cfg.ClusterName = DefaultClusterName
	}
	if cfg.SharedFilePath == "" {
		cfg.SharedFilePath = DefaultSharedFilePath
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{cfg: cfg, log: cfg.Logger}
	var localErr error
	if !cfg.RemoteOnly {
		c.local, c.shared, localErr = dialLocal(ctx, cfg)
		if localErr == nil {
			return c, nil
		}
	}
	if cfg.Address == "" {
		return nil, fmt.Errorf("fluxon.Open: %w (and no Config.Address to fall back on)", localErr)
	}
	remote, err := kvgrpc.Dial(ctx, cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("fluxon.Open: %w; remote %s: %v", ErrNoOwner, cfg.Address, errors.Join(localErr, err))
	}
	c.remote = remote
	return c, nil
}

func dialLocal(ctx context.Context, cfg Config) (*shm.Client, owner.Shared, error) {
	path := owner.PathsFor("", cfg.SharedFilePath, cfg.ClusterName).SharedFile
	sh, err := owner.ReadShared(path)
	if err != nil {
		return nil, sh, fmt.Errorf("%w: %v (is an owner of cluster %q running on this host?)", ErrNoOwner, err, cfg.ClusterName)
	}
	mode := ring.EventDriven
	if cfg.PollMode != "" {
		if mode, err = ring.ParsePollMode(cfg.PollMode); err != nil {
			return nil, sh, err
		}
	}
	name := cfg.Name
	if name == "" {
		name = filepath.Base(execName())
	}
	cl, err := shm.Dial(ctx, shm.ClientOptions{SocketPath: sh.ControlSocket, Name: name, PollMode: mode})
	return cl, sh, err
}

// ClusterName is the cluster this client belongs to.
func (c *Client) ClusterName() string { return c.cfg.ClusterName }

// EtcdEndpoints are the cluster's etcd endpoints as the local owner
// publishes them (none when connected over gRPC).
func (c *Client) EtcdEndpoints() []string { return c.shared.EtcdEndpoints }

// OwnerKey is the instance_key of the local owner ("" over gRPC).
func (c *Client) OwnerKey() string { return c.shared.InstanceKey }

// Mode says how the client is connected: "local" (shared memory) or "remote" (gRPC).
func (c *Client) Mode() string {
	if c.local != nil {
		return "local"
	}
	return "remote"
}

// PutOption changes a Put.
type PutOption func(*kv.PutOptions)

// WithLease binds the value to a lease (see Grant): it goes when the lease
// ends and is never evicted meanwhile.
func WithLease(id LeaseID) PutOption { return func(o *kv.PutOptions) { o.Lease = id } }

// WithTTL gives the value a lease of its own.
func WithTTL(ttl time.Duration) PutOption { return func(o *kv.PutOptions) { o.TTL = ttl } }

// IfAbsent rejects the put with ErrExists when the key exists.
func IfAbsent() PutOption { return func(o *kv.PutOptions) { o.IfAbsent = true } }

// IfPresent rejects the put with ErrNotFound when the key does not exist.
func IfPresent() PutOption { return func(o *kv.PutOptions) { o.IfPresent = true } }

// RejectInflight rejects the put with ErrInflight while another put of the
// same key is being written.
func RejectInflight() PutOption { return func(o *kv.PutOptions) { o.RejectInflight = true } }

func options(opts []PutOption) kv.PutOptions {
	var o kv.PutOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (c *Client) check() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Put stores value under key and returns its version.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...PutOption) (uint64, error) {
	return c.put(ctx, key, value, options(opts))
}

func (c *Client) put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	if c.local != nil {
		return c.local.Put(ctx, key, value, o)
	}
	return c.remote.Put(ctx, key, value, o)
}

// PutWith is Put with the options as a struct (services/mq and other
// layers that build options programmatically).
func (c *Client) PutWith(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	return c.put(ctx, key, value, o)
}

// PutFill stores a value of size bytes that fill writes: attached to a
// local owner, fill writes straight into the pool (no intermediate
// buffer); over gRPC into a buffer that is then sent. fill must write all
// size bytes and keep nothing after it returns.
func (c *Client) PutFill(ctx context.Context, key string, size int, o kv.PutOptions, fill func([]byte)) (uint64, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	if size < 0 {
		return 0, fmt.Errorf("%w: negative size %d", ErrBadValue, size)
	}
	if c.local == nil || o.Replicas > 1 || len(o.Placement) > 0 {
		b := make([]byte, size)
		fill(b)
		return c.put(ctx, key, b, o)
	}
	w, err := c.local.Reserve(ctx, key, uint64(size), o)
	if err != nil {
		return 0, err
	}
	fill(w.Bytes())
	return w.Commit(ctx)
}

// PutDict stores a flat dict of typed fields.
func (c *Client) PutDict(ctx context.Context, key string, d Dict, opts ...PutOption) (uint64, error) {
	o := options(opts)
	o.Kind = kv.KindDict
	if c.local != nil {
		if err := c.check(); err != nil {
			return 0, err
		}
		// Encode straight into the pool: one copy of the fields, no buffer.
		n, err := kv.EncodedDictSize(d)
		if err != nil {
			return 0, err
		}
		w, err := c.local.Reserve(ctx, key, uint64(n), o)
		if err != nil {
			return 0, err
		}
		if _, err := kv.EncodeDictTo(w.Bytes(), d); err != nil {
			_ = w.Abort()
			return 0, err
		}
		return w.Commit(ctx)
	}
	b, err := kv.EncodeDict(d)
	if err != nil {
		return 0, err
	}
	return c.put(ctx, key, b, o)
}

// Value is a value read from the cluster. With a local owner its bytes are
// the owner's shared memory (zero copy). Close it when done: the owner keeps
// the bytes alive, unchanged, until then. A Value garbage-collected without
// Close is released and reported as a leak.
type Value struct {
	Info
	b      []byte
	c      *Client
	local  *shm.Value
	closed *atomic.Bool
}

// Bytes returns the value. Read only; not valid after Close.
func (v *Value) Bytes() []byte { return v.b }

// parallelCopyMin: values at least this large are copied out by several
// goroutines (one memcpy stream reaches only part of memory bandwidth).
const parallelCopyMin = 4 << 20

// CopyTo copies the value into dst (as much as fits) and returns the bytes
// copied. Large values are copied by up to GOMAXPROCS goroutines at once.
func (v *Value) CopyTo(dst []byte) int { return parallelCopy(dst, v.b) }

func parallelCopy(dst, src []byte) int {
	n := min(len(dst), len(src))
	workers := min(runtime.GOMAXPROCS(0), n/(parallelCopyMin/2))
	if n < parallelCopyMin || workers < 2 {
		return copy(dst, src[:n])
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for off := chunk; off < n; off += chunk {
		end := min(off+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			copy(dst[off:end], src[off:end])
		}()
	}
	copy(dst[:chunk], src[:chunk])
	wg.Wait()
	return n
}

// Dict decodes a dict value. Bytes fields alias the value's memory.
func (v *Value) Dict() (Dict, error) {
	if v.Kind != kv.KindDict {
		return nil, fmt.Errorf("%w: %q holds %s, not a dict", ErrBadValue, v.Key, v.Kind)
	}
	return kv.DecodeDict(v.b)
}

// Close releases the value.
func (v *Value) Close() error {
	if v.closed.Swap(true) {
		return errors.New("fluxon: value closed twice")
	}
	defer v.c.release()
	if v.local != nil {
		return v.local.Close()
	}
	return nil
}

func (c *Client) release() {
	c.held.Add(-1)
	c.outstanding.Done()
}

// Get reads key.
func (c *Client) Get(ctx context.Context, key string) (*Value, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	v := &Value{c: c, closed: new(atomic.Bool)}
	if c.local != nil {
		lv, err := c.local.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		v.Info, v.b, v.local = lv.Info, lv.Bytes(), lv
	} else {
		b, info, err := c.remote.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		v.Info, v.b = info, b
	}
	c.held.Add(1)
	c.outstanding.Add(1)
	runtime.AddCleanup(v, c.leaked, leak{key: key, local: v.local, closed: v.closed})
	return v, nil
}

type leak struct {
	key    string
	local  *shm.Value
	closed *atomic.Bool
}

// leaked runs when a Value is collected: release it if nobody did.
func (c *Client) leaked(l leak) {
	if l.closed.Swap(true) {
		return
	}
	c.leaks.Add(1)
	c.log.Warn("fluxon: a Value was garbage-collected without Close; released it now. Close every Value from Get", "key", l.key)
	if l.local != nil {
		_ = l.local.Close()
	}
	c.release()
}

// Leaks returns how many Values were released by the garbage collector
// instead of Close.
func (c *Client) Leaks() int64 { return c.leaks.Load() }

// GetCopy reads key into a fresh slice (no Close needed).
func (c *Client) GetCopy(ctx context.Context, key string) ([]byte, Info, error) {
	v, err := c.Get(ctx, key)
	if err != nil {
		return nil, Info{}, err
	}
	defer v.Close()
	b := make([]byte, len(v.b))
	v.CopyTo(b)
	return b, v.Info, nil
}

// Remove deletes key. No reader anywhere sees the old value once it returns;
// readers already holding it keep it until they Close.
func (c *Client) Remove(ctx context.Context, key string) error {
	if err := c.check(); err != nil {
		return err
	}
	if c.local != nil {
		return c.local.Remove(ctx, key)
	}
	return c.remote.Remove(ctx, key)
}

// Stat describes key.
func (c *Client) Stat(ctx context.Context, key string) (Info, error) {
	if err := c.check(); err != nil {
		return Info{}, err
	}
	if c.local != nil {
		return c.local.Stat(ctx, key)
	}
	return c.remote.Stat(ctx, key)
}

// Exists reports whether key is stored.
func (c *Client) Exists(ctx context.Context, key string) (bool, error) {
	_, err := c.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Size returns the length of key's value.
func (c *Client) Size(ctx context.Context, key string) (uint64, error) {
	info, err := c.Stat(ctx, key)
	return info.Size, err
}

// Item is one entry of a batch put.
type Item struct {
	Key   string
	Value []byte
}

// BatchPut stores items, each independently; errs[i] is item i's error.
func (c *Client) BatchPut(ctx context.Context, items []Item, opts ...PutOption) (errs []error) {
	o := options(opts)
	errs = make([]error, len(items))
	if c.remote != nil && !c.closed.Load() {
		req := make([]kvgrpc.PutItem, len(items))
		for i, it := range items {
			req[i] = kvgrpc.PutItem{Key: it.Key, Value: it.Value, Options: o}
		}
		res, err := c.remote.BatchPut(ctx, req)
		for i := range errs {
			if err != nil {
				errs[i] = err
			} else {
				errs[i] = res[i].Err
			}
		}
		return errs
	}
	for i, it := range items {
		_, errs[i] = c.put(ctx, it.Key, it.Value, o)
	}
	return errs
}

// BatchGet reads keys, each independently; a missing key has a nil Value and
// an ErrNotFound error. Close every non-nil Value.
func (c *Client) BatchGet(ctx context.Context, keys []string) ([]*Value, []error) {
	vals, errs := make([]*Value, len(keys)), make([]error, len(keys))
	for i, k := range keys {
		vals[i], errs[i] = c.Get(ctx, k)
	}
	return vals, errs
}

// BatchRemove deletes keys, each independently.
func (c *Client) BatchRemove(ctx context.Context, keys []string) []error {
	errs := make([]error, len(keys))
	if c.remote != nil && !c.closed.Load() {
		res, err := c.remote.BatchRemove(ctx, keys)
		for i := range errs {
			if err != nil {
				errs[i] = err
			} else {
				errs[i] = res[i]
			}
		}
		return errs
	}
	for i, k := range keys {
		errs[i] = c.Remove(ctx, k)
	}
	return errs
}

// Grant creates a lease of ttl.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (LeaseID, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	if c.local != nil {
		return c.local.Grant(ctx, ttl)
	}
	return c.remote.Grant(ctx, ttl)
}

// KeepAlive renews a lease and returns its TTL.
func (c *Client) KeepAlive(ctx context.Context, id LeaseID) (time.Duration, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	if c.local != nil {
		return c.local.KeepAlive(ctx, id)
	}
	return c.remote.KeepAlive(ctx, id)
}

// Revoke ends a lease now; its values go.
func (c *Client) Revoke(ctx context.Context, id LeaseID) error {
	if err := c.check(); err != nil {
		return err
	}
	if c.local != nil {
		return c.local.Revoke(ctx, id)
	}
	return c.remote.Revoke(ctx, id)
}

// Close waits up to Config.CloseTimeout for every Value to be closed, then
// disconnects. If values are still held it disconnects anyway (the owner
// releases them) and returns ErrOutstanding naming how many.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return ErrClosed
	}
	done := make(chan struct{})
	go func() {
		c.outstanding.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-time.After(c.cfg.CloseTimeout):
		err = fmt.Errorf("%w: %d value(s) not closed after %s; the owner released them", ErrOutstanding, c.held.Load(), c.cfg.CloseTimeout)
	}
	if c.local != nil {
		return errors.Join(err, c.local.Close())
	}
	return errors.Join(err, c.remote.Close())
}
