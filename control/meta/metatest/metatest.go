// Package metatest starts real etcd servers for tests: an embedded one in the
// test process, or Debian's etcd binary as a separate OS process.
package metatest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/internal/proctest"
)

// etcdStartTimeout bounds how long an etcd server process may take to answer.
const etcdStartTimeout = 30 * time.Second

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// FreeAddrs is n distinct free loopback addresses. They are picked with
// all n listeners open at once: two FreeAddr calls in a row may get the
// same port back (the first is free again when the second picks), which
// made an embedded etcd's client and peer listeners collide.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// Embedded starts an embedded etcd for the test and returns its client URL.
func Embedded(t testing.TB) string {
	t.Helper()
	a := FreeAddrs(t, 2)
	e, err := meta.StartEmbedded(t.TempDir(), a[0], a[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.ClientURL()
}

// Proc is an etcd server running as its own OS process.
type Proc struct {
	URL  string
	cmd  *exec.Cmd
	dir  string
	peer string
	t    testing.TB
}

// StartProcess runs the etcd binary (Debian's etcd-server) as a separate
// process and waits until it answers. It is killed when the test ends.
func StartProcess(t testing.TB) *Proc { return StartProcessOn(t, "127.0.0.1") }

// StartProcessOn is StartProcess with the client port on host (an address
// of this namespace, e.g. a test lab's gateway).
func StartProcessOn(t testing.TB, host string) *Proc {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd binary not found (make deps installs Debian's etcd-server): %v", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	// The peer port is picked while the client's is held, so they differ.
	p := &Proc{dir: t.TempDir(), peer: FreeAddr(t), t: t}
	p.URL = "http://" + ln.Addr().String()
	ln.Close()
	p.start(t, bin)
	t.Cleanup(func() { p.Kill() })
	return p
}

func (p *Proc) start(t testing.TB, bin string) {
	t.Helper()
	log, err := os.Create(filepath.Join(p.dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin,
		"--name", "test", "--data-dir", filepath.Join(p.dir, "data"),
		"--listen-client-urls", p.URL, "--advertise-client-urls", p.URL,
		"--listen-peer-urls", "http://"+p.peer, "--initial-advertise-peer-urls", "http://"+p.peer,
		"--initial-cluster", "test=http://"+p.peer, "--log-level", "error")
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.URL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(etcdStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(p.dir, "etcd.log"))
			t.Fatalf("etcd process did not answer within %s: %v\n%s", etcdStartTimeout, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop pauses the server (SIGSTOP): it keeps its sockets but answers nothing,
// as an etcd cut off by the network would. It returns once the server has
// stopped (a plain kill(2) lets it run on for a moment).
func (p *Proc) Stop() {
	if err := proctest.Stop(p.cmd.Process); err != nil {
		p.t.Errorf("stop the etcd process: %v", err)
	}
}

// Cont resumes a stopped server.
func (p *Proc) Cont() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }

// Kill ends the server.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// WaitFor polls cond until it holds or timeout passes, then fails the test
// with what.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart kills the server and starts it again on the same data and ports.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	p.Kill()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal(err)
	}
	p.start(t, bin)
}

// Describe is a short label of where an etcd runs, for test names.
func (p *Proc) Describe() string { return fmt.Sprintf("etcd process at %s", p.URL) }
