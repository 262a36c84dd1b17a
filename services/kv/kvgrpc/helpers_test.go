//go:build linux && cgo

package kvgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/services/kv"
)

const (
	mib = 1 << 20
	// waitTimeout bounds waitFor; generous for -race on a busy machine.
	waitTimeout = 10 * time.Second
)

var poolSeq atomic.Int64

// env is one store over a real pool, served on 127.0.0.1 and dialled.
type env struct {
	pool   *pool.Pool
	store  *kv.Store
	addr   string
	client *Client
}

// newEnv creates a pool of size bytes under /dev/shm, a store over it, a
// gRPC server on a real TCP port and a client. Everything goes at Cleanup.
func newEnv(t testing.TB, size uint64, dialOpts ...grpc.DialOption) *env {
	t.Helper()
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm on this host")
	}
	path := fmt.Sprintf("/dev/shm/flx-kvgrpc-test-%d-%d", os.Getpid(), poolSeq.Add(1))
	p, err := pool.CreateWith(path, size, 0, pool.Options{Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Destroy(); err != nil {
			t.Errorf("destroying the pool: %v", err)
		}
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := kv.New(p, kv.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions()...)
	NewServer(st, log).Register(gs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	e := &env{pool: p, store: st, addr: lis.Addr().String()}
	e.client = e.dial(t, dialOpts...)
	return e
}

func (e *env) dial(t testing.TB, opts ...grpc.DialOption) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := Dial(ctx, e.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// poolUse is what a leak would change: live objects and their bytes.
type poolUse struct{ objects, reserved uint64 }

func (e *env) use(t testing.TB) poolUse {
	t.Helper()
	ps, err := e.pool.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return poolUse{ps.Objects, ps.Reserved}
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// randomBytes returns n bytes of a seeded stream, so a mismatch is not hidden
// by a repeating pattern.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want one matching %v", err, target)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
