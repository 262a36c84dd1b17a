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
	"sync/atomic"
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
	// Node is the host's own address in a star-chain lab (NewStarChain):
	// reachable from its chain neighbours only. "" elsewhere.
	Node string
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
}

// DefaultPrefix starts the names of the namespaces and links of the labs
// NewStar and NewChain make for tests.
const DefaultPrefix = "f"

// maxPrefix keeps link names ("<prefix><octet>br", "<prefix><octet>h<i>")
// within the kernel's 15 characters for up to 99 hosts.
const maxPrefix = 8

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func validPrefix(p string) bool {
	if p == "" || len(p) > maxPrefix {
		return false
	}
	for i, c := range p {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// labSeq counts this process's labs.
var labSeq atomic.Int32

// newLab takes a free subnet (one lock file per octet, so concurrently
// running programs never share addresses) and removes what a crashed
// earlier lab with the same names left.
func newLab(prefix string) (*Lab, error) {
	if !validPrefix(prefix) {
		return nil, fmt.Errorf("prefix %q: use 1-%d ASCII letters or digits, starting with a letter", prefix, maxPrefix)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, err
	}
	// Each lab of a process starts its search one octet further, so that
	// back-to-back labs do not reuse the subnet (and link names) of one
	// whose namespaces the kernel may still be tearing down.
	start := 100 + (os.Getpid()+int(labSeq.Add(1)))%151
	for i := range 151 {
		octet := 100 + (start-100+i)%151
		f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprint(octet)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		l := &Lab{octet: octet, lock: f, id: fmt.Sprintf("%s%d", prefix, octet), Gateway: fmt.Sprintf("10.213.%d.1", octet)}
		l.cleanStale()
		return l, nil
	}
	return nil, errors.New("netlab: every subnet 10.213.100-250.0/24 is taken by another lab")
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

func (l *Lab) addHost(name string) (*Host, error) {
	h := &Host{Name: name, NS: l.id + "-" + name, lab: l}
	if err := run("ip", "netns", "add", h.NS); err != nil {
		return nil, err
	}
	l.Hosts = append(l.Hosts, h)
	return h, h.run("ip", "link", "set", "lo", "up")
}

// build makes a lab with prefix and shape, and closes what it made if a
// step fails.
func build(prefix string, shape func(*Lab) error) (*Lab, error) {
	l, err := newLab(prefix)
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	if err := shape(l); err != nil {
		l.Close()
		return nil, fmt.Errorf("netlab: %w", err)
	}
	return l, nil
}

// mustBuild is build for tests: a failure fails the test, and the lab is
// closed when the test ends.
func mustBuild(t testing.TB, shape func(*Lab) error) *Lab {
	t.Helper()
	l, err := build(DefaultPrefix, shape)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// NewStar makes n hosts (h1..hn), each with one veth link to a bridge in
// the root namespace: every host reaches every other and the root
// namespace's Gateway address (where a test runs etcd).
func NewStar(t testing.TB, n int) *Lab {
	t.Helper()
	return mustBuild(t, func(l *Lab) error { return l.star(n) })
}

// Start is NewStar for programs (benchmarks) rather than tests: it makes n
// star hosts whose namespaces and links are named after prefix (at most 8
// characters), and returns an error instead of failing a test. A failed
// Start leaves nothing behind; the caller must Close the lab it returns.
func Start(prefix string, n int) (*Lab, error) {
	return build(prefix, func(l *Lab) error { return l.star(n) })
}

func (l *Lab) star(n int) error {
	if n < 1 {
		return fmt.Errorf("a star needs at least 1 host, not %d", n)
	}
	l.bridge = l.id + "br"
	if err := errors.Join(
		run("ip", "link", "add", l.bridge, "type", "bridge"),
		run("ip", "addr", "add", l.Gateway+"/24", "dev", l.bridge),
		run("ip", "link", "set", l.bridge, "up"),
	); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		h, err := l.addHost(fmt.Sprintf("h%d", i))
		if err != nil {
			return err
		}
		h.IP = fmt.Sprintf("10.213.%d.%d", l.octet, 10+i)
		h.rootLink = fmt.Sprintf("%sh%d", l.id, i)
		// A lab just closed with the same id may still own this name: the
		// kernel tears a deleted namespace's veth pairs down after
		// `ip netns del` returns.
		_ = exec.Command("ip", "link", "del", h.rootLink).Run()
		for _, step := range [][]string{
			{"ip", "link", "add", h.rootLink, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			{"ip", "link", "set", h.rootLink, "master", l.bridge},
			{"ip", "link", "set", h.rootLink, "up"},
			{"ip", "netns", "exec", h.NS, "ip", "addr", "add", h.IP + "/24", "dev", "eth0"},
			{"ip", "netns", "exec", h.NS, "ip", "link", "set", "eth0", "up"},
		} {
			if err := run(step...); err != nil {
				return err
			}
		}
	}
	return nil
}

// NewChain makes n hosts (h1..hn) where each reaches only its neighbours:
// h_i and h_{i+1} share a point-to-point veth link with its own subnet
// (10.213.<lab>.<4i>/30), and no host forwards. Link i joins h_i (address
// .4i+1) and h_{i+1} (.4i+2). ChainAddr names them.
func NewChain(t testing.TB, n int) *Lab {
	t.Helper()
	return mustBuild(t, func(l *Lab) error { return l.chain(n) })
}

// StartChain is NewChain for programs: n hosts joined by point-to-point
// veth links (2 hosts: one link, as `make bench-transport` measures), named
// after prefix. The caller must Close the lab it returns.
func StartChain(prefix string, n int) (*Lab, error) {
	return build(prefix, func(l *Lab) error { return l.chain(n) })
}

func (l *Lab) chain(n int) error {
	for i := 1; i <= n; i++ {
		if _, err := l.addHost(fmt.Sprintf("h%d", i)); err != nil {
			return err
		}
	}
	for i := 1; i < n; i++ {
		a, b := l.Hosts[i-1], l.Hosts[i]
		ea, eb := fmt.Sprintf("r%d", i), fmt.Sprintf("l%d", i)
		for _, step := range [][]string{
			{"ip", "link", "add", ea, "netns", a.NS, "type", "veth", "peer", "name", eb, "netns", b.NS},
			{"ip", "netns", "exec", a.NS, "ip", "addr", "add", l.ChainAddr(i, true) + "/30", "dev", ea},
			{"ip", "netns", "exec", b.NS, "ip", "addr", "add", l.ChainAddr(i, false) + "/30", "dev", eb},
			{"ip", "netns", "exec", a.NS, "ip", "link", "set", ea, "up"},
			{"ip", "netns", "exec", b.NS, "ip", "link", "set", eb, "up"},
		} {
			if err := run(step...); err != nil {
				return err
			}
		}
	}
	return nil
}

// NewStarChain makes n hosts that reach the root namespace's Gateway (where
// a test runs etcd) over the star, but each other only along a chain: h_i's
// Node address (a /32 on its loopback) is routed from h_{i-1} and h_{i+1}
// over point-to-point links, and from nowhere else. Nothing forwards, and
// the star routes only the gateway, so members two hops apart have no path
// but through a relay. Links use 10.214.<lab>.<4i±>/30, nodes 10.215.<lab>.<i>.
func NewStarChain(t testing.TB, n int) *Lab {
	t.Helper()
	return mustBuild(t, func(l *Lab) error { return l.starChain(n) })
}

func (l *Lab) starChain(n int) error { return l.starLinks(n, true) }

// NewStarLinks is NewStarChain without node addresses: h_i reaches its
// chain neighbours only on the addresses of the links they share
// (LinkAddr), so a middle host is reached at one address from its left
// and at another from its right, and no address of it from both sides.
func NewStarLinks(t testing.TB, n int) *Lab {
	t.Helper()
	return mustBuild(t, func(l *Lab) error { return l.starLinks(n, false) })
}

// LinkAddr is the address on star-chain link i (between h_i and h_{i+1})
// of its left end (h_i) or right end (h_{i+1}), in labs of NewStarChain
// and NewStarLinks.
func (l *Lab) LinkAddr(link int, left bool) string {
	if left {
		return fmt.Sprintf("10.214.%d.%d", l.octet, 4*link+1)
	}
	return fmt.Sprintf("10.214.%d.%d", l.octet, 4*link+2)
}

// starLinks makes the star (reaching the gateway only) and the chain of
// point-to-point links; with nodes, each host also gets a Node address on
// its loopback, routed from both neighbours over their links.
func (l *Lab) starLinks(n int, nodes bool) error {
	if err := l.star(n); err != nil {
		return err
	}
	var steps [][]string
	for i, h := range l.Hosts {
		steps = append(steps,
			// The star reaches the gateway only.
			[]string{"ip", "netns", "exec", h.NS, "ip", "route", "del", fmt.Sprintf("10.213.%d.0/24", l.octet), "dev", "eth0"},
			[]string{"ip", "netns", "exec", h.NS, "ip", "route", "add", l.Gateway + "/32", "dev", "eth0"},
			[]string{"ip", "netns", "exec", h.NS, "ip", "link", "set", "lo", "up"},
		)
		if nodes {
			h.Node = fmt.Sprintf("10.215.%d.%d", l.octet, i+1)
			steps = append(steps, []string{"ip", "netns", "exec", h.NS, "ip", "addr", "add", h.Node + "/32", "dev", "lo"})
		}
	}
	for i := 1; i < n; i++ {
		a, b := l.Hosts[i-1], l.Hosts[i]
		ea, eb := fmt.Sprintf("r%d", i), fmt.Sprintf("l%d", i)
		steps = append(steps,
			[]string{"ip", "link", "add", ea, "netns", a.NS, "type", "veth", "peer", "name", eb, "netns", b.NS},
			[]string{"ip", "netns", "exec", a.NS, "ip", "addr", "add", l.LinkAddr(i, true) + "/30", "dev", ea},
			[]string{"ip", "netns", "exec", b.NS, "ip", "addr", "add", l.LinkAddr(i, false) + "/30", "dev", eb},
			[]string{"ip", "netns", "exec", a.NS, "ip", "link", "set", ea, "up"},
			[]string{"ip", "netns", "exec", b.NS, "ip", "link", "set", eb, "up"},
		)
		if nodes {
			steps = append(steps,
				[]string{"ip", "netns", "exec", a.NS, "ip", "route", "add", b.Node + "/32", "via", l.LinkAddr(i, false)},
				[]string{"ip", "netns", "exec", b.NS, "ip", "route", "add", a.Node + "/32", "via", l.LinkAddr(i, true)},
			)
		}
	}
	for _, step := range steps {
		if err := run(step...); err != nil {
			return err
		}
	}
	return nil
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
