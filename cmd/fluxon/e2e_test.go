package main

// End-to-end tests: the real fluxon binary as OS processes against a real
// etcd (embedded by `fluxon up`, or Debian's etcd server as its own process).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
)

var (
	raceEnabled bool
	fluxonBin   string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fluxon-e2e")
	if err != nil {
		panic(err)
	}
	fluxonBin = filepath.Join(dir, "fluxon")
	args := []string{"build", "-o", fluxonBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if tags := testBuildTags(); tags != "" {
		// make test builds with the native transports' tags (rdma, ucx,
		// dpdk where installed), as make build does: the fluxon under test
		// offers what the shipped one offers.
		args = append(args, "-tags", tags)
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building fluxon: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testBuildTags are the build tags this test binary was built with.
func testBuildTags() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, st := range bi.Settings {
			if st.Key == "-tags" {
				return st.Value
			}
		}
	}
	return ""
}

// proc is a fluxon process whose output the test can wait on.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func start(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(fluxonBin, args...)
	if len(args) > 2 && args[0] == "__netns__" {
		// Run inside a network namespace (a test host): ip netns exec execs fluxon.
		cmd = exec.Command("ip", append([]string{"netns", "exec", args[1], fluxonBin}, args[2:]...)...)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), "FLUXON_LOG=info")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	require.NoError(t, p.cmd.Start())
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(lockedWriter{p}, pr)
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		<-copied
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		// FLUXON_E2E_LOGS=1 prints every process's output, passed or not
		// (to look for warnings a passing run hides).
		if t.Failed() || os.Getenv("FLUXON_E2E_LOGS") != "" {
			t.Logf("output of fluxon %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) waitOutput(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	metatest.WaitFor(t, timeout, fmt.Sprintf("%q in the output", substr), func() bool {
		select {
		case <-p.done:
			return strings.Contains(p.output(), substr) || true
		default:
			return strings.Contains(p.output(), substr)
		}
	})
	require.Contains(t, p.output(), substr)
}

// wait returns the exit code, failing the test if the process runs past timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %s", timeout)
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

// run runs fluxon to completion and returns its output and exit code.
func run(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	p := start(t, dir, args...)
	code := p.wait(t, 60*time.Second)
	return p.output(), code
}

func status(t *testing.T, dir string, args ...string) (clusterStatus, error) {
	t.Helper()
	cmd := exec.Command(fluxonBin, append([]string{"status", "-o", "json"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return clusterStatus{}, fmt.Errorf("%v: %s", err, out)
	}
	var st clusterStatus
	return st, json.Unmarshal(out, &st)
}

func TestUpStartStopRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	upCfg := writeConfig(t, dir, "up.yaml", sharedPaths(t, "up")+"listen:\n  resp: \"\"\n")
	etcd := metatest.FreeAddrs(t, 2)
	args := []string{"up", "--config", upCfg, "--etcd-client", etcd[0], "--etcd-peer", etcd[1], "--http", "127.0.0.1:0"}
	up := start(t, dir, args...)
	up.waitOutput(t, upBannerEnd, 30*time.Second)
	for _, what := range []string{"etcd ", "master ", "owner ", "/metrics", "fluxon status"} {
		require.Contains(t, up.output(), what, "up prints where everything listens")
	}
	// The encrypted transports get a CA and a member certificate, kept
	// across restarts.
	require.Contains(t, up.output(), "tls      self-signed CA")
	caPEM, err := os.ReadFile(filepath.Join(dir, ".fluxon", "tls", "ca.pem"))
	require.NoError(t, err)
	for _, f := range []string{"member.pem", "member-key.pem"} {
		_, err := os.Stat(filepath.Join(dir, ".fluxon", "tls", f))
		require.NoError(t, err, f)
	}

	var st clusterStatus
	metatest.WaitFor(t, 15*time.Second, "a leading master and one owner", func() bool {
		var err error
		st, err = status(t, dir)
		return err == nil && st.Leader != "" && len(st.Members[meta.RoleOwner]) == 1 && st.Epoch > 0
	})
	require.Len(t, st.Members[meta.RoleMaster], 1)
	require.Equal(t, uint64(256<<20), st.PoolDRAMTotal, "the default pool fits small machines")
	firstEpoch := st.Epoch

	require.NoError(t, up.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, up.wait(t, 20*time.Second), "SIGTERM stops cleanly")
	require.Contains(t, up.output(), "Fluxon stopped.")

	// Same directory again: same etcd state, the epoch carries on.
	up2 := start(t, dir, "up", "--config", upCfg, "--http", "127.0.0.1:0")
	up2.waitOutput(t, upBannerEnd, 30*time.Second)
	metatest.WaitFor(t, 15*time.Second, "the restarted cluster to lead again", func() bool {
		var err error
		st, err = status(t, dir)
		return err == nil && st.Leader != "" && len(st.Members[meta.RoleOwner]) == 1 && st.Epoch > firstEpoch
	})
	caAgain, err := os.ReadFile(filepath.Join(dir, ".fluxon", "tls", "ca.pem"))
	require.NoError(t, err)
	require.Equal(t, caPEM, caAgain, "the same CA after a restart")
	// A second `up` on the same directory is refused while the first runs.
	out, code := run(t, dir, "up", "--config", upCfg, "--http", "127.0.0.1:0")
	require.Equal(t, 1, code)
	require.Contains(t, out, "another 'fluxon up'")

	require.NoError(t, up2.cmd.Process.Signal(syscall.SIGINT))
	require.Equal(t, 0, up2.wait(t, 20*time.Second), "Ctrl-C stops cleanly")
	_, err = os.Stat(filepath.Join(dir, ".fluxon", "logs", "up.log"))
	require.NoError(t, err, "JSON logs go under log_dir")
}

func writeConfig(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	return path
}

// sharedPaths gives each owner its own shared-memory and shared-file paths,
// as if it ran on its own host.
func sharedPaths(t *testing.T, name string) string {
	shmDir := filepath.Join("/dev/shm", fmt.Sprintf("fluxon-e2e-%d-%s-%d", os.Getpid(), name, time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(shmDir) })
	return fmt.Sprintf("shared_memory_path: %s\nshared_file_path: %s\n", shmDir, filepath.Join(t.TempDir(), "shared"))
}

func roleConfig(t *testing.T, dir, cluster, key, etcd, role string) string {
	body := fmt.Sprintf("cluster_name: %s\ninstance_key: %s\netcd_endpoints: [%q]\nlisten:\n  http: 127.0.0.1:0\nlog_dir: %s\n",
		cluster, key, strings.TrimPrefix(etcd, "http://"), filepath.Join(dir, "logs"))
	body += sharedPaths(t, key)
	switch role {
	case "owner":
		body += "contribute_to_cluster_pool_size:\n  dram: 64MiB\nlease:\n  ttl: 2s\n"
	case "master":
		body += "master:\n  election_ttl: 2s\nlease:\n  ttl: 2s\n"
	}
	return writeConfig(t, dir, key+".yaml", body)
}

func TestRolesAsProcessesMasterFailover(t *testing.T) {
	t.Parallel()
	etcd := metatest.StartProcess(t)
	dir := t.TempDir()
	sargs := []string{"--etcd", etcd.URL, "--cluster", "prod"}

	m1 := start(t, dir, "master", "--config", roleConfig(t, dir, "prod", "m1", etcd.URL, "master"))
	m1.waitOutput(t, "running", 30*time.Second)
	m2 := start(t, dir, "master", "--config", roleConfig(t, dir, "prod", "m2", etcd.URL, "master"))
	m3 := start(t, dir, "master", "--config", roleConfig(t, dir, "prod", "m3", etcd.URL, "master"))
	o1 := start(t, dir, "owner", "--config", roleConfig(t, dir, "prod", "o1", etcd.URL, "owner"))
	for _, p := range []*proc{m2, m3, o1} {
		p.waitOutput(t, "running", 30*time.Second)
	}

	var st clusterStatus
	metatest.WaitFor(t, 15*time.Second, "m1 leading with 3 masters and 1 owner", func() bool {
		var err error
		st, err = status(t, dir, sargs...)
		return err == nil && st.Leader == "m1" && len(st.Members[meta.RoleMaster]) == 3 &&
			len(st.Members[meta.RoleOwner]) == 1 && st.Routing != nil && len(st.Routing.Owners) == 1
	})
	ownerPID := st.Members[meta.RoleOwner][0].PID
	epoch := st.Epoch

	require.NoError(t, m1.cmd.Process.Kill()) // kill -9: no resignation
	killed := time.Now()
	metatest.WaitFor(t, 5*time.Second, "a standby to lead within 5 s", func() bool {
		var err error
		st, err = status(t, dir, sargs...)
		return err == nil && (st.Leader == "m2" || st.Leader == "m3")
	})
	t.Logf("standby %s led %s after kill -9 of the leader", st.Leader, time.Since(killed).Round(time.Millisecond))
	require.Len(t, st.Members[meta.RoleOwner], 1, "members keep their registration")
	require.Equal(t, ownerPID, st.Members[meta.RoleOwner][0].PID)
	require.Equal(t, epoch, st.Epoch, "the owner set did not change, so neither did the epoch")

	metatest.WaitFor(t, 10*time.Second, "the dead master's record to expire", func() bool {
		st, _ = status(t, dir, sargs...)
		return len(st.Members[meta.RoleMaster]) == 2
	})

	// The new leader still publishes: an owner leaving is a new epoch.
	require.NoError(t, o1.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, o1.wait(t, 20*time.Second))
	metatest.WaitFor(t, 10*time.Second, "a new epoch without the owner", func() bool {
		st, _ = status(t, dir, sargs...)
		return st.Epoch > epoch && st.Routing != nil && len(st.Routing.Owners) == 0
	})

	out, code := run(t, dir, "status", "--etcd", strings.TrimPrefix(etcd.URL, "http://"), "--cluster", "prod")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "leader   m")
	require.Contains(t, out, "masters (2)")
}

func TestDuplicateInstanceKeyProcess(t *testing.T) {
	t.Parallel()
	etcd := metatest.StartProcess(t)
	dir := t.TempDir()
	first := start(t, dir, "owner", "--config", roleConfig(t, dir, "c", "dup", etcd.URL, "owner"))
	first.waitOutput(t, "running", 30*time.Second)
	// Same instance_key, as if on another host (its own shared paths).
	out, code := run(t, dir, "owner", "--config", roleConfig(t, t.TempDir(), "c", "dup", etcd.URL, "owner"))
	require.Equal(t, 1, code)
	require.Contains(t, out, "instance_key already in use")
	require.Contains(t, out, fmt.Sprintf("pid %d", first.cmd.Process.Pid))
	select {
	case <-first.done:
		t.Fatal("the first owner must keep running")
	default:
	}
}

func TestClustersOnOneEtcdIsolated(t *testing.T) {
	t.Parallel()
	etcd := metatest.StartProcess(t)
	dir := t.TempDir()
	for _, c := range []string{"alpha", "beta"} {
		start(t, dir, "master", "--config", roleConfig(t, dir, c, c+"-m", etcd.URL, "master")).waitOutput(t, "running", 30*time.Second)
		start(t, dir, "owner", "--config", roleConfig(t, dir, c, c+"-o", etcd.URL, "owner")).waitOutput(t, "running", 30*time.Second)
	}
	// The same instance_key in two clusters is no conflict.
	start(t, dir, "owner", "--config", roleConfig(t, dir, "beta", "alpha-o", etcd.URL, "owner")).waitOutput(t, "running", 30*time.Second)
	for c, owners := range map[string][]string{"alpha": {"alpha-o"}, "beta": {"alpha-o", "beta-o"}} {
		var st clusterStatus
		metatest.WaitFor(t, 15*time.Second, c+"'s own members only", func() bool {
			var err error
			st, err = status(t, dir, "--etcd", etcd.URL, "--cluster", c)
			return err == nil && st.Leader == c+"-m" && len(st.Members[meta.RoleOwner]) == len(owners) && st.Routing != nil && len(st.Routing.Owners) == len(owners)
		})
		for i, o := range st.Members[meta.RoleOwner] {
			require.Equal(t, owners[i], o.InstanceKey)
			require.Equal(t, c, o.ClusterName)
		}
	}
}

func TestBadConfigExitsWithUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "bad.yaml", "cluster_name: c\ninstance_key: o\netcd_endpoints: [127.0.0.1:2379]\ncontribute_to_cluster_pool_size:\n  dram: lots\n")
	out, code := run(t, dir, "owner", "--config", cfg)
	require.Equal(t, exitUsage, code)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "one line: %q", out)
	require.Contains(t, out, "contribute_to_cluster_pool_size.dram")

	out, code = run(t, dir, "owner")
	require.Equal(t, exitUsage, code)
	require.Contains(t, out, "--config")

	out, code = run(t, dir, "status")
	require.Equal(t, exitUsage, code, "no cluster.json and no flags")
	require.Contains(t, out, "--etcd")
}

func TestEtcdUnreachableIsClear(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, code := run(t, dir, "owner", "--config", roleConfig(t, dir, "c", "o", "http://"+metatest.FreeAddr(t), "owner"))
	require.Equal(t, 1, code)
	require.Contains(t, out, "etcd unreachable")
}

func TestKVCommandsAgainstUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := metatest.FreeAddrs(t, 3) // RESP, etcd client, etcd peer
	respAddr := addrs[0]
	upCfg := writeConfig(t, dir, "up.yaml", sharedPaths(t, "kvup")+fmt.Sprintf("listen:\n  resp: %q\n", respAddr))
	up := start(t, dir, "up", "--config", upCfg, "--etcd-client", addrs[1], "--etcd-peer", addrs[2], "--http", "127.0.0.1:0")
	up.waitOutput(t, upBannerEnd, 30*time.Second)

	kvRun := func(args ...string) string {
		t.Helper()
		out, code := run(t, dir, append([]string{"kv"}, args...)...)
		require.Equal(t, 0, code, out)
		return out
	}
	require.Contains(t, kvRun("put", "greeting", "hello fluxon"), `stored "greeting"`)
	require.Equal(t, "hello fluxon", kvRun("get", "greeting"))
	big := filepath.Join(dir, "big.bin")
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	require.NoError(t, os.WriteFile(big, payload, 0o644))
	kvRun("put", "big", "--file", big)
	kvRun("get", "big", "--out", filepath.Join(dir, "big.out"))
	got, err := os.ReadFile(filepath.Join(dir, "big.out"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(payload, got), "16 MiB round trip")
	require.Equal(t, "true\n", kvRun("exists", "greeting"))
	require.ElementsMatch(t, []string{"big", "greeting"}, strings.Fields(kvRun("ls")))
	stat := kvRun("stat")
	require.Contains(t, stat, "objects")
	require.Contains(t, stat, "pool size")
	require.Contains(t, kvRun("stat", "big"), "16MiB")
	kvRun("rm", "greeting")
	out, code := run(t, dir, "kv", "exists", "greeting")
	require.Equal(t, 1, code)
	require.Equal(t, "false\n", out)
	out, code = run(t, dir, "kv", "get", "greeting")
	require.Equal(t, 1, code)
	require.Contains(t, out, "not found")

	// RESP serves the same store: what redis-cli writes, fluxon kv reads, and back.
	require.Contains(t, up.output(), "RESP     "+respAddr)
	host, port, _ := strings.Cut(respAddr, ":")
	redis := func(args ...string) string {
		t.Helper()
		b, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
		require.NoError(t, err, "%s", b)
		return strings.TrimSpace(string(b))
	}
	require.Equal(t, "OK", redis("SET", "from-redis", "hi"))
	require.Equal(t, "hi", kvRun("get", "from-redis"))
	kvRun("put", "from-cli", "there")
	require.Equal(t, "there", redis("GET", "from-cli"))
	require.Equal(t, "3", redis("DBSIZE"), "big, from-redis, from-cli")

	// Node-to-node RPC to the owner, through its gRPC forwarding.
	st, err := status(t, dir)
	require.NoError(t, err)
	ownerNode := st.Members[meta.RoleOwner][0].NodeID
	require.NotEmpty(t, st.Members[meta.RoleOwner][0].Endpoints["rpc"], "owners advertise an rpc endpoint")
	out, code = run(t, dir, "rpc", "call", ownerNode, "/fluxon/ping", "marco")
	require.Equal(t, 0, code, out)
	require.Equal(t, "marco", out)
	out, code = run(t, dir, "rpc", "call", ownerNode, "/fluxon/info")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, ownerNode)
	out, code = run(t, dir, "rpc", "call", ownerNode, "/no/such")
	require.Equal(t, 1, code)
	require.Contains(t, out, "/no/such")
	out, code = run(t, dir, "rpc", "call", "nobody", "/fluxon/ping")
	require.Equal(t, 1, code)
	require.Contains(t, out, "nobody")
}

// upBannerEnd ends the banner `fluxon up` prints line by line once the
// cluster is up: waiting for it (not the first line) makes the whole banner
// readable.
const upBannerEnd = "Stop with Ctrl-C."
