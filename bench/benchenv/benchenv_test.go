package benchenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/bench/respclient"
	"github.com/fluxon-dev/fluxon/control/config"
)

func TestRedisArgs(t *testing.T) {
	args, err := RedisArgs("127.0.0.1:7000", RedisOptions{Dir: "/tmp/r", MaxMemory: 1 << 30})
	require.NoError(t, err)
	require.Equal(t, []string{"--bind", "127.0.0.1", "--port", "7000", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no", "--dir", "/tmp/r",
		"--maxmemory", "1073741824", "--maxmemory-policy", "allkeys-lfu"}, args)
	args, err = RedisArgs("127.0.0.1:7000", RedisOptions{Dir: "/tmp/r", Policy: "noeviction", IOThreads: 4})
	require.NoError(t, err)
	require.Contains(t, strings.Join(args, " "), "--maxmemory-policy noeviction --io-threads 4 --io-threads-do-reads yes")
	_, err = RedisArgs("nohost", RedisOptions{})
	require.Error(t, err)
}

// TestStartRedis checks the server really runs as configured: no
// persistence, protected mode off, maxmemory and policy as asked.
func TestStartRedis(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := StartRedis(ctx, RedisOptions{Dir: dir, MaxMemory: 64 << 20})
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			r.Stop()
		}
	}()
	require.Contains(t, r.Version, "Redis server v=")
	c, err := respclient.Dial(ctx, r.Addr)
	require.NoError(t, err)
	defer c.Close()
	for param, want := range map[string]string{
		"save": "", "appendonly": "no", "protected-mode": "no",
		"maxmemory": "67108864", "maxmemory-policy": "allkeys-lfu",
	} {
		reply, err := c.Do("CONFIG", "GET", param)
		require.NoError(t, err)
		require.Len(t, reply.Array, 2, param)
		require.Equal(t, want, string(reply.Array[1].Bulk), param)
	}
	cpu, err := CPUTime(r.PID())
	require.NoError(t, err)
	require.GreaterOrEqual(t, cpu, time.Duration(0))

	require.NoError(t, r.Stop())
	stopped = true
	require.True(t, r.Exited())
	require.ErrorIs(t, syscall.Kill(r.PID(), 0), syscall.ESRCH, "the server is gone")
	_, err = os.Stat(filepath.Join(dir, "redis.log"))
	require.NoError(t, err, "the server's output is logged")
}

func TestStartRedisWithoutTheBinaryNamesMakeDeps(t *testing.T) {
	_, err := StartRedis(context.Background(), RedisOptions{Bin: "redis-server-that-does-not-exist", Dir: t.TempDir()})
	require.ErrorIs(t, err, ErrNoRedis)
	require.Contains(t, err.Error(), "make deps")
}

func TestStartReportsAnEarlyExit(t *testing.T) {
	// A redis-server refusing its command line exits at once; the error
	// quotes its output.
	p, err := Start("bad redis", filepath.Join(t.TempDir(), "log"), nil, mustLook(t, "redis-server"), "--no-such-option", "1")
	require.NoError(t, err)
	err = p.WaitFor(context.Background(), 10*time.Second, "nothing", func() bool { return false })
	require.ErrorIs(t, err, ErrExited)
	require.Contains(t, err.Error(), "no-such-option")
}

func mustLook(t *testing.T, bin string) string {
	p, err := exec.LookPath(bin)
	require.NoError(t, err, "%s missing: run `make deps`", bin)
	return p
}

func TestUpConfigIsAValidUpConfig(t *testing.T) {
	body := UpConfig(FluxonOptions{Dir: "/tmp/w", PoolSize: 300<<20 + 1, PollMode: "event_driven"}, "/dev/shm/x", "/tmp/w/shared")
	path := filepath.Join(t.TempDir(), "up.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	cfg, err := config.Load(path, config.RoleUp)
	require.NoError(t, err, body)
	require.Equal(t, ClusterName, cfg.ClusterName)
	require.Equal(t, config.Size(301<<20), cfg.ContributeToClusterPoolSize.DRAM, "rounded up to a MiB")
	require.Equal(t, "/dev/shm/x", cfg.SharedMemoryPath)
	require.Equal(t, "/tmp/w/shared", cfg.SharedFilePath)
	require.Equal(t, "127.0.0.1:0", cfg.Listen.RESP, "RESP on, on a free port")
	require.Equal(t, "127.0.0.1:0", cfg.Listen.GRPC)
	require.Equal(t, "event_driven", cfg.Network.PollMode)

	small := UpConfig(FluxonOptions{Dir: "/tmp/w", PoolSize: 1}, "/dev/shm/x", "/tmp/w/shared")
	require.Contains(t, small, "dram: 64MiB", "never below the minimum pool")
	require.NotContains(t, small, "poll_mode", "fluxon's default unless asked")
}

func TestPoolSizeFor(t *testing.T) {
	require.Equal(t, uint64(1000+250+2*10*3+64<<20), PoolSizeFor(1000, 10, 3))
}

func TestStartFluxonWithoutTheBinary(t *testing.T) {
	_, err := StartFluxon(context.Background(), FluxonOptions{Bin: filepath.Join(t.TempDir(), "fluxon"), Dir: t.TempDir()})
	require.ErrorIs(t, err, ErrNoFluxon)
	require.Contains(t, err.Error(), "make build")
}

// TestStartFluxon builds bin/fluxon's source, starts `fluxon up` as the
// benchmark does, attaches through shared memory and over gRPC, and stops
// it.
func TestStartFluxon(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fluxon")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/fluxon-dev/fluxon/cmd/fluxon").CombinedOutput()
	require.NoError(t, err, "building fluxon: %s", out)
	ctx := context.Background()
	f, err := StartFluxon(ctx, FluxonOptions{Bin: bin, Dir: t.TempDir(), PoolSize: 128 << 20})
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			f.Stop()
		}
	}()
	require.NotEmpty(t, f.GRPC)
	require.NotEmpty(t, f.RESP)
	require.True(t, strings.HasPrefix(f.Version, "fluxon "), f.Version)

	local, err := fluxon.Open(ctx, fluxon.Config{ClusterName: f.ClusterName, SharedFilePath: f.SharedFilePath})
	require.NoError(t, err)
	require.Equal(t, "local", local.Mode())
	_, err = local.Put(ctx, "k", []byte("v"))
	require.NoError(t, err)
	require.NoError(t, local.Close())

	remote, err := fluxon.Open(ctx, fluxon.Config{Address: f.GRPC, RemoteOnly: true})
	require.NoError(t, err)
	b, _, err := remote.GetCopy(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(b))
	require.NoError(t, remote.Close())

	c, err := respclient.Dial(ctx, f.RESP)
	require.NoError(t, err)
	got, err := c.GetInto("k", nil)
	require.NoError(t, err)
	require.Equal(t, "v", string(got))
	c.Close()

	require.NoError(t, f.Stop())
	stopped = true
	_, err = os.Stat(f.shmDir)
	require.ErrorIs(t, err, os.ErrNotExist, "the pool's directory is removed")
}
