package kvbench

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/bench/respclient"
)

// GetMode says what a get does with the value it reads.
type GetMode int

const (
	// Copy copies the value into the client's own reusable buffer: what a
	// client that keeps or modifies the bytes pays, and the fair comparison
	// with Redis.
	Copy GetMode = iota
	// View holds the value where it lies (Fluxon's pool, zero copy) and reads
	// one byte per page, so every page is really mapped and reachable.
	View
	// NoGet labels results of workloads without gets.
	NoGet
)

func (m GetMode) String() string {
	switch m {
	case Copy:
		return "copy"
	case View:
		return "view"
	case NoGet:
		return "-"
	}
	return fmt.Sprintf("GetMode(%d)", int(m))
}

// ParseGetMode reads "copy" or "view".
func ParseGetMode(s string) (GetMode, error) {
	switch s {
	case "copy":
		return Copy, nil
	case "view":
		return View, nil
	}
	return 0, fmt.Errorf("kvbench: unknown get mode %q: use copy or view", s)
}

var (
	// ErrMiss is what Target.Get returns for a key that is not stored.
	ErrMiss = errors.New("kvbench: key not stored")
	// ErrMode is what Target.Get returns for a mode the backend lacks.
	ErrMode = errors.New("kvbench: get mode not supported by this target")
)

// Target is one client connection to a system under test. A Target is used
// by one thread at a time.
type Target interface {
	// Put stores value under key.
	Put(ctx context.Context, key string, value []byte) error
	// Get reads key as mode says and returns the value's length; ErrMiss if
	// the key is not stored.
	Get(ctx context.Context, key string, mode GetMode) (int, error)
	// Remove deletes key (a missing key is not an error).
	Remove(ctx context.Context, key string) error
	Close() error
}

// Backend is a system under test: it opens one Target per client thread.
type Backend interface {
	// Name labels the backend's rows in the results ("redis", "fluxon-shm").
	Name() string
	// Modes lists the get modes that mean something on this backend.
	Modes() []GetMode
	Open(ctx context.Context) (Target, error)
}

// pageSize is the stride of View's reads.
var pageSize = os.Getpagesize()

// touch reads one byte per page of b and returns their sum, so the
// compiler cannot drop the reads.
func touch(b []byte) byte {
	var s byte
	for i := 0; i < len(b); i += pageSize {
		s += b[i]
	}
	if len(b) > 0 {
		s += b[len(b)-1]
	}
	return s
}

// Fluxon is the backend of the Go client (package fluxon): through shared
// memory with the owner on this host, or over gRPC with Config.RemoteOnly
// and Config.Address.
type Fluxon struct {
	// Label overrides the name ("fluxon-shm" or "fluxon-grpc").
	Label  string
	Config fluxon.Config
}

// Name implements Backend.
func (f *Fluxon) Name() string {
	switch {
	case f.Label != "":
		return f.Label
	case f.Config.RemoteOnly:
		return "fluxon-grpc"
	}
	return "fluxon-shm"
}

// Modes implements Backend. Over gRPC the client receives its own copy of
// the value whatever it does, so only Copy is meaningful there.
func (f *Fluxon) Modes() []GetMode {
	if f.Config.RemoteOnly {
		return []GetMode{Copy}
	}
	return []GetMode{Copy, View}
}

// Open implements Backend. It fails rather than silently measuring another
// path: a shared-memory backend that ends up on gRPC is an error.
func (f *Fluxon) Open(ctx context.Context) (Target, error) {
	c, err := fluxon.Open(ctx, f.Config)
	if err != nil {
		return nil, err
	}
	want := "local"
	if f.Config.RemoteOnly {
		want = "remote"
	}
	if c.Mode() != want {
		_ = c.Close()
		return nil, fmt.Errorf("kvbench: %s connected %s, not %s", f.Name(), c.Mode(), want)
	}
	return &fluxonTarget{c: c}, nil
}

type fluxonTarget struct {
	c    *fluxon.Client
	buf  []byte
	sink byte
}

func (t *fluxonTarget) Put(ctx context.Context, key string, value []byte) error {
	_, err := t.c.Put(ctx, key, value)
	return err
}

func (t *fluxonTarget) Get(ctx context.Context, key string, mode GetMode) (int, error) {
	v, err := t.c.Get(ctx, key)
	if errors.Is(err, fluxon.ErrNotFound) {
		return 0, ErrMiss
	}
	if err != nil {
		return 0, err
	}
	b := v.Bytes()
	n := len(b)
	switch {
	case t.c.Mode() == "remote" && mode == Copy:
		// gRPC already delivered a private copy: keep it as the buffer
		// rather than charge Fluxon a memcpy no remote client makes.
		t.buf = b
	case mode == Copy:
		if cap(t.buf) < n {
			t.buf = make([]byte, n)
		}
		v.CopyTo(t.buf[:n])
	case mode == View && t.c.Mode() == "local":
		t.sink += touch(b)
	default:
		_ = v.Close()
		return 0, fmt.Errorf("%w: %s over %s", ErrMode, mode, t.c.Mode())
	}
	return n, v.Close()
}

func (t *fluxonTarget) Remove(ctx context.Context, key string) error {
	err := t.c.Remove(ctx, key)
	if errors.Is(err, fluxon.ErrNotFound) {
		return nil
	}
	return err
}

func (t *fluxonTarget) Close() error { return t.c.Close() }

// Redis is the backend of any server speaking RESP2: redis-server itself,
// or Fluxon's RESP endpoint (Label "fluxon-resp").
type Redis struct {
	Label string // default "redis"
	Addr  string
}

// Name implements Backend.
func (r *Redis) Name() string {
	if r.Label != "" {
		return r.Label
	}
	return "redis"
}

// Modes implements Backend: a RESP client always receives a copy.
func (r *Redis) Modes() []GetMode { return []GetMode{Copy} }

// Open implements Backend.
func (r *Redis) Open(ctx context.Context) (Target, error) {
	c, err := respclient.Dial(ctx, r.Addr)
	if err != nil {
		return nil, fmt.Errorf("kvbench: %s at %s: %w", r.Name(), r.Addr, err)
	}
	return &redisTarget{c: c}, nil
}

type redisTarget struct {
	c   *respclient.Conn
	buf []byte
}

func (t *redisTarget) Put(_ context.Context, key string, value []byte) error {
	return t.c.Set(key, value)
}

func (t *redisTarget) Get(_ context.Context, key string, mode GetMode) (int, error) {
	if mode != Copy {
		return 0, fmt.Errorf("%w: %s over RESP", ErrMode, mode)
	}
	b, err := t.c.GetInto(key, t.buf[:cap(t.buf)])
	if errors.Is(err, respclient.ErrNil) {
		return 0, ErrMiss
	}
	if cap(b) > cap(t.buf) {
		t.buf = b
	}
	return len(b), err
}

func (t *redisTarget) Remove(_ context.Context, key string) error {
	_, err := t.c.Do("DEL", key)
	return err
}

func (t *redisTarget) Close() error { return t.c.Close() }
