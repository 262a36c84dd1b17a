package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/bench/kvbench"
	"github.com/fluxon-dev/fluxon/internal/netlab"
)

// TestMain lets the test binary be the worker: --hosts re-executes
// os.Executable() with "worker" inside each namespace host.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		cmd := newRoot()
		cmd.SetArgs(os.Args[1:])
		if err := cmd.Execute(); err != nil {
			os.Exit(exitFailure)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestWorkerRunsAJobAndRepliesInJSON(t *testing.T) {
	// A job the worker refuses still gets a JSON reply, so the parent has
	// something to show.
	r := runJob(context.Background(), job{Phase: "dance", Spec: kvbench.ReadZipf(), Target: targetSpec{Name: targetRedis, Addr: "127.0.0.1:1"}})
	require.Contains(t, r.Err, `phase "dance"`)
	r = runJob(context.Background(), job{Phase: phaseRun, Spec: kvbench.ReadZipf(), Target: targetSpec{Name: "memcached"}})
	require.Contains(t, r.Err, "unknown target")
	var b strings.Builder
	require.NoError(t, writeReply(&b, reply{Err: "boom"}))
	require.JSONEq(t, `{"Err":"boom"}`, b.String())
}

// nsWithPrefix lists the namespaces of bench labs.
func nsWithPrefix(t *testing.T) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && regexp.MustCompile(`^`+labPrefix+`\d+-h\d+$`).MatchString(f[0]) {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// TestThreeHostsEndToEnd runs a tiny --hosts 3 (about 20 s on 2 cores):
// the lab, etcd, master, three owners and redis come up, every host's
// worker runs, the tables come out, and everything is gone afterwards. It
// checks what the run did, never how fast.
func TestThreeHostsEndToEnd(t *testing.T) {
	if err := netlab.Available(); err != nil {
		t.Skip("--hosts 3 needs network namespaces (root and iproute2):", err)
	}
	for _, bin := range []string{"etcd", "redis-server", "iperf3"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("--hosts 3 needs %s (make deps installs it)", bin)
		}
	}
	if testing.Short() {
		t.Skip("starts 3 namespace hosts and 6 servers; skipped with -short")
	}
	fluxonBin := filepath.Join(t.TempDir(), "fluxon")
	out, err := exec.Command("go", "build", "-o", fluxonBin, "github.com/fluxon-dev/fluxon/cmd/fluxon").CombinedOutput()
	require.NoError(t, err, "building fluxon: %s", out)
	before := nsWithPrefix(t)
	pools := func() []string {
		p, _ := filepath.Glob("/dev/shm/fluxon-bench-o*")
		return p
	}
	poolsBefore := pools()

	var stdout, stderr strings.Builder
	cmd := newRoot()
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--hosts", "3", "--fluxon", fluxonBin, "--workloads", "READ_AFFINITY",
		"--targets", "redis,fluxon-shm", "--read-keys", "12", "--read-sizes", "64KiB,128KiB",
		"--duration", "300ms", "--warmup", "0", "--rounds", "1", "--xhost-values", "2", "--memcpy=false",
		"--work-dir", t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	text := stdout.String()

	require.Contains(t, text, "1 client thread(s) on each of 3 hosts")
	require.Regexp(t, `READ_AFFINITY\s+redis\s+copy\s+3\s+\d+.*\s0\s+[\d.]+\s+peer`, text,
		"redis: 3 hosts' threads merged, no misses (every host preloaded its share into the one redis)")
	require.Regexp(t, `READ_AFFINITY\s+fluxon-shm\s+copy\s+3\s`, text)
	require.Regexp(t, `READ_AFFINITY\s+fluxon-shm\s+view\s+3\s`, text, "the zero-copy view is reported too")
	require.Regexp(t, `master CPU\s+etcd writes/s\s+etcd proposals/s\s+h1 ops/s\s+h1 miss\s+h2 ops/s\s+h2 miss\s+h3 ops/s\s+h3 miss`, text)
	require.Regexp(t, `iperf3 \(\d+s\)\s+-\s+-\s+[\d.]+\s+-\s+-\s+peer`, text, "iperf3 measured the h1 -> h2 link")
	require.Regexp(t, `redis get \(copy\)\s+2/2\s+0\s`, text, "h2 reads what h1 put into the shared redis")
	require.Regexp(t, `fluxon-shm get \(copy\)\s+\d/2\s`, text, "Fluxon's cross-host row, hit or miss, is reported")
	require.NotContains(t, text, "FAILED")

	require.ElementsMatch(t, before, nsWithPrefix(t), "the lab's namespaces are removed")
	require.Subset(t, poolsBefore, pools(), "the owners' pools under /dev/shm are removed")
}
