//go:build linux && cgo && dpdk

package dpdk

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
	"github.com/fluxon-dev/fluxon/internal/netlab"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/dpdk/rel"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// The real-DPDK conformance runs: a child process, in a network namespace
// of its own holding both ends of a veth pair (v0, v1), starts one EAL
// (--no-huge, its own --file-prefix) with two ports of one poll-mode
// driver, one per veth end. Listeners sit on port 0 (v0) and dials leave
// from port 1 (v1), so every frame crosses the veth through the kernel:
// TestConformanceDPDK over net_af_packet (AF_PACKET rings),
// TestConformanceDPDKAFXDP over net_af_xdp (AF_XDP sockets, an XDP program
// on each end redirecting to them). The EAL starts once per process, hence
// the child; the faulty run is a second child whose connections' datagrams
// are lost, duplicated, reordered and corrupted in-process (seeded),
// because this kernel has no sch_netem.
const (
	confEnv    = "FLUXON_DPDK_CONFORMANCE"
	confPMDEnv = "FLUXON_DPDK_CONFORMANCE_PMD"
)

var (
	dpdkOnce sync.Once
	dpdkEPs  []*Endpoint
	dpdkErr  error
)

func dpdkEndpoints(pmd string, f rel.Faults) ([]*Endpoint, error) {
	dpdkOnce.Do(func() {
		devs := []string{"net_" + pmd + "0", "net_" + pmd + "1"}
		e := cdpdk.EAL{NoHuge: true, MemoryMB: 256, FilePrefix: fmt.Sprintf("flxconf%d", os.Getpid()),
			VDevs: []string{devs[0] + ",iface=v0", devs[1] + ",iface=v1"}}
		for _, dev := range devs {
			ep, err := OpenDPDK(e, dev, EndpointConfig{Faults: f})
			if err != nil {
				dpdkErr = err
				return
			}
			dpdkEPs = append(dpdkEPs, ep)
		}
	})
	return dpdkEPs, dpdkErr
}

func TestConformanceDPDK(t *testing.T) { conformanceDPDK(t, "af_packet") }

// TestConformanceDPDKAFXDP is TestConformanceDPDK over net_af_xdp. It is
// skipped only where the kernel has no AF_XDP sockets.
func TestConformanceDPDKAFXDP(t *testing.T) { conformanceDPDK(t, "af_xdp") }

func conformanceDPDK(t *testing.T, pmd string) {
	mode := os.Getenv(confEnv)
	if mode == "" {
		runInVethNamespace(t, pmd, "clean")
		// The faulty link over real DPDK takes many minutes under -race on
		// two cores (the EAL threads busy-poll beside the test): make test
		// covers the faults over the in-memory segment
		// (TestConformanceMemFaults); `make test-dpdk-faults` runs them over
		// net_af_packet and net_af_xdp too.
		if !testing.Short() && os.Getenv("FLUXON_DPDK_FAULTS") == "1" {
			runInVethNamespace(t, pmd, "faults")
		} else {
			t.Log("faults over real DPDK not run here: FLUXON_DPDK_FAULTS=1 (make test-dpdk-faults) runs them; TestConformanceMemFaults covers them over the in-memory segment")
		}
		return
	}
	if got := os.Getenv(confPMDEnv); got != pmd {
		t.Skipf("this child runs the %s conformance test", got)
	}
	var f rel.Faults
	if mode == "faults" {
		f = rel.Faults{Loss: 0.02, Duplicate: 0.02, Reorder: 0.05, Corrupt: 0.005, Seed: 99}
	}
	transporttest.Run(t, func(t *testing.T, o transport.Options) transporttest.Setup {
		eps, err := dpdkEndpoints(pmd, f)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := New(Options{Options: o, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		return setupFor(tr, "dpdk://net_"+pmd+"0:0")
	})
}

// runInVethNamespace reruns this test in a child process inside a fresh
// namespace with a veth pair v0-v1.
func runInVethNamespace(t *testing.T, pmd, mode string) {
	t.Helper()
	if err := netlab.Available(); err != nil {
		t.Skip(err)
	}
	if pmd == "af_xdp" {
		if err := cdpdk.AFXDPAvailable(); err != nil {
			t.Skip("net_af_xdp not tested: ", err)
		}
	}
	ns := fmt.Sprintf("flxdpdk%d", os.Getpid())
	ip := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	defer func() { _ = exec.Command("ip", "netns", "del", ns).Run() }()
	ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ip("-n", ns, "link", "set", "v0", "up")
	ip("-n", ns, "link", "set", "v1", "up")
	args := []string{"netns", "exec", ns, os.Args[0], "-test.run=^" + t.Name() + "$", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), confEnv+"="+mode, confPMDEnv+"="+pmd)
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	passed := 0
	for _, l := range lines {
		if strings.Contains(l, "--- PASS") {
			passed++
		}
	}
	t.Logf("%s run over net_%s on a veth pair: %d subtests passed", mode, pmd, passed)
	if err != nil {
		t.Fatalf("%s run: %v\n%s", mode, err, out)
	}
}
