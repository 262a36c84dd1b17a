package benchenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Fluxon's start-up, as `fluxon up` reports it.
const (
	// fluxonStartTimeout bounds how long `fluxon up` may take to print that
	// it is up (embedded etcd, master election, pool creation).
	fluxonStartTimeout = 90 * time.Second
	// ClusterName is the cluster the benchmark's `fluxon up` runs.
	ClusterName = "fluxbench"
	// shmRoot is where pools go: tmpfs, as in production.
	shmRoot = "/dev/shm"
	// minPool is the smallest pool the benchmark asks for.
	minPool = 64 << 20
)

// ErrNoFluxon reports that the fluxon binary is missing.
var ErrNoFluxon = errors.New("fluxon binary not found; run `make build` (make bench-kv builds bin/fluxon first) or pass its path")

// FluxonOptions configure the `fluxon up` of a benchmark.
type FluxonOptions struct {
	// Bin is the fluxon binary (bin/fluxon).
	Bin string
	// Dir is the work directory (state, logs, config, shared files); it
	// must exist.
	Dir string
	// PoolSize is the DRAM the owner contributes, in bytes; rounded up to a
	// MiB.
	PoolSize uint64
	// PollMode, if set, is network.poll_mode (busy_poll or event_driven).
	PollMode string
}

// UpConfig returns the YAML config of `fluxon up` (docs/config.md): its own
// cluster name, shared-memory and shared-file paths, the pool size, every
// listener on a free loopback port, RESP on.
func UpConfig(o FluxonOptions, shmDir, sharedDir string) string {
	mibs := max((o.PoolSize+(1<<20)-1)>>20, minPool>>20)
	var b strings.Builder
	fmt.Fprintf(&b, "cluster_name: %s\n", ClusterName)
	fmt.Fprintf(&b, "shared_memory_path: %s\n", shmDir)
	fmt.Fprintf(&b, "shared_file_path: %s\n", sharedDir)
	fmt.Fprintf(&b, "log_dir: %s\n", filepath.Join(o.Dir, "logs"))
	fmt.Fprintf(&b, "contribute_to_cluster_pool_size:\n  dram: %dMiB\n", mibs)
	b.WriteString("listen:\n  http: 127.0.0.1:0\n  grpc: 127.0.0.1:0\n  transport: 127.0.0.1:0\n  resp: 127.0.0.1:0\n")
	if o.PollMode != "" {
		fmt.Fprintf(&b, "network:\n  poll_mode: %s\n", o.PollMode)
	}
	return b.String()
}

// Fluxon is a running `fluxon up`.
type Fluxon struct {
	*Proc
	// GRPC and RESP are the owner's endpoints.
	GRPC, RESP string
	// ClusterName and SharedFilePath are what fluxon.Config needs to attach
	// through shared memory.
	ClusterName, SharedFilePath string
	Version                     string
	shmDir                      string
}

var (
	grpcLine = regexp.MustCompile(`(?m)^\s+gRPC\s+(\S+)`)
	respLine = regexp.MustCompile(`(?m)^\s+RESP\s+(\S+)`)
)

// StartFluxon starts `fluxon up` with its own state directory, embedded
// etcd on free ports and a pool under /dev/shm, and waits until it reports
// being up.
func StartFluxon(ctx context.Context, o FluxonOptions) (*Fluxon, error) {
	if _, err := os.Stat(o.Bin); err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoFluxon, err)
	}
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	if free, err := FreeSpace(shmRoot); err == nil && free < o.PoolSize {
		return nil, fmt.Errorf("%s has %d MiB free, the pool needs %d MiB; lower the scale or --mem", shmRoot, free>>20, o.PoolSize>>20)
	}
	shmDir, err := os.MkdirTemp(shmRoot, "fluxon-bench-")
	if err != nil {
		return nil, err
	}
	sharedDir := filepath.Join(o.Dir, "shared")
	cfgPath := filepath.Join(o.Dir, "up.yaml")
	if err := os.WriteFile(cfgPath, []byte(UpConfig(o, shmDir, sharedDir)), 0o644); err != nil {
		os.RemoveAll(shmDir)
		return nil, err
	}
	etcdClient, err1 := FreeAddr()
	etcdPeer, err2 := FreeAddr()
	if err := errors.Join(err1, err2); err != nil {
		os.RemoveAll(shmDir)
		return nil, err
	}
	ver, _ := exec.Command(bin, "version").Output()
	p, err := Start("fluxon up", filepath.Join(o.Dir, "fluxon-up.log"), []string{"FLUXON_LOG=warn"}, bin,
		"up", "--dir", filepath.Join(o.Dir, "state"), "--config", cfgPath,
		"--etcd-client", etcdClient, "--etcd-peer", etcdPeer, "--http", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(shmDir)
		return nil, err
	}
	f := &Fluxon{Proc: p, ClusterName: ClusterName, SharedFilePath: sharedDir, shmDir: shmDir,
		Version: strings.SplitN(strings.TrimSpace(string(ver)), "\n", 2)[0]}
	if err := p.WaitFor(ctx, fluxonStartTimeout, `"Fluxon is up"`, func() bool {
		return strings.Contains(p.Output(), "Fluxon is up")
	}); err != nil {
		_ = f.Stop()
		return nil, err
	}
	out := p.Output()
	if m := grpcLine.FindStringSubmatch(out); m != nil {
		f.GRPC = m[1]
	}
	if m := respLine.FindStringSubmatch(out); m != nil {
		f.RESP = m[1]
	}
	if f.GRPC == "" || f.RESP == "" {
		_ = f.Stop()
		return nil, fmt.Errorf("fluxon up did not print its gRPC and RESP endpoints; its output:\n%s", p.Tail())
	}
	return f, nil
}

// Stop stops `fluxon up` and removes its pool.
func (f *Fluxon) Stop() error {
	err := f.Proc.Stop()
	if !strings.Contains(f.Output(), "Fluxon stopped.") && err == nil {
		err = fmt.Errorf("fluxon up exited without \"Fluxon stopped.\"; log %s", f.LogPath)
	}
	return errors.Join(err, os.RemoveAll(f.shmDir))
}

// PoolSizeFor is the pool (or Redis maxmemory) a benchmark asks for: the
// working set with a quarter of headroom, room for every thread to hold one
// value while writing another (an overwrite keeps the old value until its
// readers let go), and a fixed margin for the allocator.
func PoolSizeFor(workingSet uint64, maxValue, threads int) uint64 {
	const margin = 64 << 20
	return workingSet + workingSet/4 + 2*uint64(maxValue)*uint64(threads) + margin
}

// FormatMiB prints bytes as MiB.
func FormatMiB(n uint64) string { return strconv.FormatUint(n>>20, 10) + " MiB" }
