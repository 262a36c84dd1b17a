package benchenv

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fluxon-dev/fluxon/bench/respclient"
)

// redisStartTimeout bounds how long redis-server may take to answer PING.
const redisStartTimeout = 15 * time.Second

// ErrNoRedis reports that redis-server is not installed.
var ErrNoRedis = errors.New("redis-server not found on PATH; run `make deps` (it installs Debian's redis-server)")

// RedisOptions configure a redis-server for a benchmark.
type RedisOptions struct {
	// Bin is the server binary; default "redis-server" from PATH.
	Bin string
	// Dir is the server's working directory and where its log goes; it must
	// exist.
	Dir string
	// MaxMemory caps the data (maxmemory); 0 leaves it unlimited.
	MaxMemory uint64
	// Policy is maxmemory-policy; default allkeys-lfu, the nearest to
	// Fluxon's TinyLFU eviction.
	Policy string
	// IOThreads, when above 1, sets io-threads (and io-threads-do-reads).
	IOThreads int
	// Host is the address it listens on; default 127.0.0.1. The multi-host
	// benchmark gives its lab's gateway, which every namespace host reaches.
	Host string
}

// RedisArgs returns redis-server's command line for a benchmark on addr:
// no persistence (no RDB snapshots, no AOF), no protected mode, bound to
// addr's host only, memory capped as o says.
func RedisArgs(addr string, o RedisOptions) ([]string, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok || host == "" || port == "" {
		return nil, fmt.Errorf("redis address %q: want host:port", addr)
	}
	policy := o.Policy
	if policy == "" {
		policy = "allkeys-lfu"
	}
	args := []string{
		"--bind", host, "--port", port,
		"--save", "", "--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", o.Dir,
		"--maxmemory", strconv.FormatUint(o.MaxMemory, 10),
		"--maxmemory-policy", policy,
	}
	if o.IOThreads > 1 {
		args = append(args, "--io-threads", strconv.Itoa(o.IOThreads), "--io-threads-do-reads", "yes")
	}
	return args, nil
}

// Redis is a running redis-server.
type Redis struct {
	*Proc
	Addr    string
	Version string
}

// StartRedis starts redis-server on a free port of o.Host (loopback by
// default) and waits until it answers PING.
func StartRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	bin := o.Bin
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w (looked for %q)", ErrNoRedis, bin)
	}
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	addr, err := FreeAddrOn(host)
	if err != nil {
		return nil, err
	}
	args, err := RedisArgs(addr, o)
	if err != nil {
		return nil, err
	}
	ver, _ := exec.Command(path, "--version").Output()
	p, err := Start("redis-server", filepath.Join(o.Dir, "redis.log"), nil, path, args...)
	if err != nil {
		return nil, err
	}
	r := &Redis{Proc: p, Addr: addr, Version: strings.TrimSpace(string(ver))}
	var lastErr error
	err = p.WaitFor(ctx, redisStartTimeout, "answer to PING on "+addr, func() bool {
		c, err := respclient.Dial(ctx, addr)
		if err != nil {
			lastErr = err
			return false
		}
		defer c.Close()
		lastErr = c.Ping()
		return lastErr == nil
	})
	if err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("%w (last PING: %v)", err, lastErr)
	}
	return r, nil
}
