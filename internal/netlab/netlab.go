// Package netlab makes test "hosts" on this machine: network namespaces
// joined by veth links, so multi-host behaviour (partitions, routing, relays)
// is tested with real sockets between real network stacks. Every address it
// hands out lives inside namespaces it created; nothing leaves the machine.
//
// It needs root and iproute2. This kernel has no sch_netem, so a partition is
// made by taking a link down, not by tc netem loss.
package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// lockDir holds one lock file per subnet in use, so labs of concurrently
// running test binaries never share addresses.
const lockDir = "/run/fluxon-netlab"

// Available says why labs cannot be made here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netlab needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("netlab needs iproute2's ip (make deps installs it)")
	}
	return nil
}

// Host is one network namespace.
type Host struct {
	Name string // short name, also the namespace suffix
	NS   string // namespace name
	IP   string // address on the lab's star network ("" on chain-only hosts)
	// rootLink is this host's veth end in the root namespace (star labs).
	rootLink string
	lab      *Lab
}

// Lab is a set of hosts.
type Lab struct {
	Hosts   []*Host
	Gateway string // the root namespace's address on the star network
	id      string
	octet   int
	bridge  string
	lock    *os.File
	t       testing.TB
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func newLab(t testing.TB) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for octet := 100 + os.Getpid()%100; ; octet++ {
		if octet > 250 {
			octet = 100
		}
		f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprint(octet)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		l := &Lab{octet: octet, lock: f, t: t, id: fmt.Sprintf("f%d", octet), Gateway: fmt.Sprintf("10.213.%d.1", octet)}
		l.cleanStale()
		t.Cleanup(l.Close)
		return l
	}
}

// cleanStale removes what a crashed earlier lab with the same id left.
func (l *Lab) cleanStale() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], l.id+"-") {
			_ = run("ip", "netns", "del", f[0])
		}
	}
	_ = exec.Command("ip", "link", "del", l.id+"br").Run()
}

func (l *Lab) addHost(name string) *Host {
	h := &Host{Name: name, NS: l.id + "-" + name, lab: l}
	l.must(run("ip", "netns", "add", h.NS))
	l.must(h.run("ip", "link", "set", "lo", "up"))
	l.Hosts = append(l.Hosts, h)
	return h
}

func (l *Lab) must(err error) {
	if err != nil {
		l.t.Helper()
		l.t.Fatalf("netlab: %v", err)
	}
}

// NewStar makes n hosts (h1..hn), each with one veth link to a bridge in
// the root namespace: every host reaches every other and the root
// namespace's Gateway address (where a test runs etcd).
func NewStar(t testing.TB, n int) *Lab {
	t.Helper()
	l := newLab(t)
	l.bridge = l.id + "br"
	l.must(run("ip", "link", "add", l.bridge, "type", "bridge"))
	l.must(run("ip", "addr", "add", l.Gateway+"/24", "dev", l.bridge))
	l.must(run("ip", "link", "set", l.bridge, "up"))
	for i := 1; i <= n; i++ {
		h := l.addHost(fmt.Sprintf("h%d", i))
		h.IP = fmt.Sprintf("10.213.%d.%d", l.octet, 10+i)
		h.rootLink = fmt.Sprintf("%sh%d", l.id, i)
		l.must(run("ip", "link", "add", h.rootLink, "type", "veth", "peer", "name", "eth0", "netns", h.NS))
		l.must(run("ip", "link", "set", h.rootLink, "master", l.bridge))
		l.must(run("ip", "link", "set", h.rootLink, "up"))
		l.must(h.run("ip", "addr", "add", h.IP+"/24", "dev", "eth0"))
		l.must(h.run("ip", "link", "set", "eth0", "up"))
	}
	return l
}

// NewChain makes n hosts (h1..hn) where each reaches only its neighbours:
// h_i and h_{i+1} share a point-to-point veth link with its own subnet
// (10.213.<lab>.<4i>/30), and no host forwards. Link i joins h_i (address
// .4i+1) and h_{i+1} (.4i+2). ChainAddr names them.
func NewChain(t testing.TB, n int) *Lab {
	t.Helper()
	l := newLab(t)
	for i := 1; i <= n; i++ {
		l.addHost(fmt.Sprintf("h%d", i))
	}
	for i := 1; i < n; i++ {
		a, b := l.Hosts[i-1], l.Hosts[i]
		ea, eb := fmt.Sprintf("r%d", i), fmt.Sprintf("l%d", i)
		l.must(run("ip", "link", "add", ea, "netns", a.NS, "type", "veth", "peer", "name", eb, "netns", b.NS))
		l.must(a.run("ip", "addr", "add", l.ChainAddr(i, true)+"/30", "dev", ea))
		l.must(b.run("ip", "addr", "add", l.ChainAddr(i, false)+"/30", "dev", eb))
		l.must(a.run("ip", "link", "set", ea, "up"))
		l.must(b.run("ip", "link", "set", eb, "up"))
	}
	return l
}

// ChainAddr is the address on chain link i (between h_i and h_{i+1}) of its
// left end (h_i) or right end (h_{i+1}).
func (l *Lab) ChainAddr(link int, left bool) string {
	last := 4*link + 2
	if left {
		last = 4*link + 1
	}
	return fmt.Sprintf("10.213.%d.%d", l.octet, last)
}

func (h *Host) run(args ...string) error {
	return run(append([]string{"ip", "netns", "exec", h.NS}, args...)...)
}

// Command returns a command that runs inside the host's namespace.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Cut takes the host's link to the star down: it can reach nobody and
// nobody reaches it (etcd included), while its processes keep running.
func (h *Host) Cut() error { return run("ip", "link", "set", h.rootLink, "down") }

// Heal brings the link back.
func (h *Host) Heal() error { return run("ip", "link", "set", h.rootLink, "up") }

// Close deletes the lab's namespaces and links.
func (l *Lab) Close() {
	for _, h := range l.Hosts {
		_ = run("ip", "netns", "del", h.NS)
	}
	if l.bridge != "" {
		_ = run("ip", "link", "del", l.bridge)
	}
	l.Hosts = nil
	if l.lock != nil {
		l.lock.Close()
		l.lock = nil
	}
}
