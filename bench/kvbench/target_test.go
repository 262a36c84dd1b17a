package kvbench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/bench/benchenv"
)

// The Fluxon targets are tested against a real `fluxon up`, started the way
// fluxon-bench starts it (through the CLI, not internal packages), once for
// the whole test binary and only when a test needs it.
var (
	upOnce sync.Once
	up     *benchenv.Fluxon
	upDir  string
	upErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if up != nil {
		if err := up.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping fluxon up:", err)
			code = 1
		}
	}
	if upDir != "" {
		os.RemoveAll(upDir)
	}
	os.Exit(code)
}

// fluxonUp builds cmd/fluxon and starts `fluxon up` with a 128 MiB pool.
func fluxonUp(t *testing.T) *benchenv.Fluxon {
	t.Helper()
	upOnce.Do(func() {
		if upDir, upErr = os.MkdirTemp("", "kvbench-test-"); upErr != nil {
			return
		}
		bin := filepath.Join(upDir, "fluxon")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/fluxon-dev/fluxon/cmd/fluxon").CombinedOutput()
		if err != nil {
			upErr = fmt.Errorf("building fluxon: %v\n%s", err, out)
			return
		}
		up, upErr = benchenv.StartFluxon(context.Background(), benchenv.FluxonOptions{Bin: bin, Dir: upDir, PoolSize: 128 << 20})
	})
	require.NoError(t, upErr)
	return up
}

func startRedis(t *testing.T) *benchenv.Redis {
	t.Helper()
	r, err := benchenv.StartRedis(context.Background(), benchenv.RedisOptions{Dir: t.TempDir(), MaxMemory: 256 << 20})
	require.NoError(t, err, "the RESP target is tested against a real redis-server")
	t.Cleanup(func() { require.NoError(t, r.Stop()) })
	return r
}

// copied returns the bytes a Copy get left in the target's own buffer.
func copied(t Target, n int) []byte {
	switch t := t.(type) {
	case *fluxonTarget:
		return t.buf[:n]
	case *redisTarget:
		return t.buf[:n]
	}
	return nil
}

// TestTargets runs one suite against every Backend: Redis, and Fluxon
// through shared memory, gRPC and its RESP endpoint.
func TestTargets(t *testing.T) {
	f := fluxonUp(t)
	redis := startRedis(t)
	backends := []Backend{
		&Redis{Addr: redis.Addr},
		&Fluxon{Config: fluxon.Config{ClusterName: f.ClusterName, SharedFilePath: f.SharedFilePath}},
		&Fluxon{Config: fluxon.Config{Address: f.GRPC, RemoteOnly: true}},
		&Redis{Label: "fluxon-resp", Addr: f.RESP},
	}
	names := []string{"redis", "fluxon-shm", "fluxon-grpc", "fluxon-resp"}
	for i, b := range backends {
		require.Equal(t, names[i], b.Name())
		t.Run(b.Name(), func(t *testing.T) { targetSuite(t, b) })
	}
}

func targetSuite(t *testing.T, b Backend) {
	ctx := context.Background()
	tg, err := b.Open(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, tg.Close()) }()
	require.Contains(t, b.Modes(), Copy)

	key := "suite/" + b.Name()
	_, err = tg.Get(ctx, key, Copy)
	require.ErrorIs(t, err, ErrMiss, "a key never written")

	for _, n := range []int{1, 4096, 64<<10 + 3, 5 << 20} {
		v := bytes.Repeat([]byte{byte(n)}, n)
		v[0], v[n-1] = 'a', 'z'
		require.NoError(t, tg.Put(ctx, key, v))
		got, err := tg.Get(ctx, key, Copy)
		require.NoError(t, err)
		require.Equal(t, n, got)
		require.True(t, bytes.Equal(v, copied(tg, n)), "copy of %d bytes", n)
		for _, m := range b.Modes() {
			got, err := tg.Get(ctx, key, m)
			require.NoError(t, err, "mode %s", m)
			require.Equal(t, n, got, "mode %s", m)
		}
	}
	if len(b.Modes()) == 1 {
		_, err := tg.Get(ctx, key, View)
		require.ErrorIs(t, err, ErrMode, "a view where the backend has none")
	}
	require.NoError(t, tg.Remove(ctx, key))
	_, err = tg.Get(ctx, key, Copy)
	require.ErrorIs(t, err, ErrMiss, "after Remove")
	require.NoError(t, tg.Remove(ctx, key), "removing a missing key is not an error")
}

// TestRunAgainstBothPeers runs a reduced workload end to end against Redis
// and Fluxon with the same operations: what fluxon-bench does, in small.
func TestRunAgainstBothPeers(t *testing.T) {
	ctx := context.Background()
	f := fluxonUp(t)
	redis := startRedis(t)
	s := ReadZipf()
	s.Keys, s.Sizes = 16, []int{64 << 10, 256 << 10}
	w := compile(t, s)
	var results []Result
	for _, b := range []Backend{&Redis{Addr: redis.Addr}, &Fluxon{Config: fluxon.Config{ClusterName: f.ClusterName, SharedFilePath: f.SharedFilePath}}} {
		require.NoError(t, Preload(ctx, b, w, 2))
		for _, m := range b.Modes() {
			// One thread: what a get returns then depends only on the
			// operations, so both systems must move the same bytes.
			r := Run(ctx, b, w, RunConfig{Threads: 1, Ops: 200, Seed: 3, Mode: m})
			require.NoError(t, r.Err)
			require.EqualValues(t, 200, r.Ops)
			require.Zero(t, r.Misses)
			results = append(results, r)
		}
		require.NoError(t, Clear(ctx, b, w))
	}
	require.Len(t, results, 3, "redis copy, fluxon copy, fluxon view")
	require.Equal(t, results[1].Gets, results[0].Gets, "the same operations on both")
	require.Equal(t, results[1].Bytes, results[0].Bytes, "the same bytes on both")
	for _, r := range results[1:] {
		_, ok := Ratio(results, r, "redis")
		require.True(t, ok)
	}
}
