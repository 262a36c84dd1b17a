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

// The real-DPDK conformance run: a child process, in a network namespace of
// its own holding both ends of a veth pair (v0, v1), starts one EAL
// (--no-huge, its own --file-prefix) with two net_af_packet ports, one per
// veth end. Listeners sit on port 0 (v0) and dials leave from port 1 (v1),
// so every frame crosses the veth through the kernel's AF_PACKET rings. The
// EAL starts once per process, hence the child; the faulty run is a second
// child whose connections' datagrams are lost, duplicated, reordered and
// corrupted in-process (seeded), because this kernel has no sch_netem.
const confEnv = "FLUXON_DPDK_CONFORMANCE"

var (
	dpdkOnce sync.Once
	dpdkEPs  []*Endpoint
	dpdkErr  error
)

func dpdkEndpoints(f rel.Faults) ([]*Endpoint, error) {
	dpdkOnce.Do(func() {
		e := cdpdk.EAL{NoHuge: true, MemoryMB: 256, FilePrefix: fmt.Sprintf("flxconf%d", os.Getpid()),
			VDevs: []string{"net_af_packet0,iface=v0", "net_af_packet1,iface=v1"}}
		for _, dev := range []string{"net_af_packet0", "net_af_packet1"} {
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

func TestConformanceDPDK(t *testing.T) {
	mode := os.Getenv(confEnv)
	if mode == "" {
		runInVethNamespace(t, "clean")
		// The faulty link over real DPDK takes many minutes under -race on
		// two cores (the EAL threads busy-poll beside the test): make test
		// covers the faults over the in-memory segment
		// (TestConformanceMemFaults); `make test-dpdk-faults` runs them over
		// net_af_packet too.
		if !testing.Short() && os.Getenv("FLUXON_DPDK_FAULTS") == "1" {
			runInVethNamespace(t, "faults")
		} else {
			t.Log("faults over real DPDK not run here: FLUXON_DPDK_FAULTS=1 (make test-dpdk-faults) runs them; TestConformanceMemFaults covers them over the in-memory segment")
		}
		return
	}
	var f rel.Faults
	if mode == "faults" {
		f = rel.Faults{Loss: 0.02, Duplicate: 0.02, Reorder: 0.05, Corrupt: 0.005, Seed: 99}
	}
	transporttest.Run(t, func(t *testing.T, o transport.Options) transporttest.Setup {
		eps, err := dpdkEndpoints(f)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := New(Options{Options: o, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		return setupFor(tr, "dpdk://net_af_packet0:0")
	})
}

// runInVethNamespace reruns this test in a child process inside a fresh
// namespace with a veth pair v0-v1.
func runInVethNamespace(t *testing.T, mode string) {
	t.Helper()
	if err := netlab.Available(); err != nil {
		t.Skip(err)
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
	args := []string{"netns", "exec", ns, os.Args[0], "-test.run=^TestConformanceDPDK$", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), confEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	passed := 0
	for _, l := range lines {
		if strings.Contains(l, "--- PASS") {
			passed++
		}
	}
	t.Logf("%s run over net_af_packet on a veth pair: %d subtests passed", mode, passed)
	if err != nil {
		t.Fatalf("%s run: %v\n%s", mode, err, out)
	}
}
