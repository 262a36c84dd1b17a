package dpdk

import (
	"os"
	"slices"
	"strconv"
	"testing"
)

func TestEALArgs(t *testing.T) {
	a := EAL{NoHuge: true, MemoryMB: 64, VDevs: []string{"net_af_packet0,iface=veth0"}, Extra: []string{"--log-level=pmd:debug"}}.Args()
	for _, want := range []string{"--no-huge", "--file-prefix=fluxon" + strconv.Itoa(os.Getpid()), "--vdev=net_af_packet0,iface=veth0", "--no-pci", "--log-level=pmd:debug"} {
		if !slices.Contains(a, want) {
			t.Errorf("Args() = %q lacks %q", a, want)
		}
	}
	if i := slices.Index(a, "-m"); i < 0 || a[i+1] != "64" {
		t.Errorf("Args() = %q, want -m 64", a)
	}
	if b := (EAL{FilePrefix: "p1"}).Args(); slices.Contains(b, "--no-huge") || !slices.Contains(b, "--file-prefix=p1") {
		t.Errorf("Args() = %q, want --file-prefix=p1 and hugepages", b)
	}
	pci := (EAL{PCI: []string{"0000:3b:00.0", "0000:3b:00.1,rxq_cqe_comp_en=0"}}).Args()
	if slices.Contains(pci, "--no-pci") {
		t.Errorf("Args() = %q: --no-pci with PCI devices allowed", pci)
	}
	for _, d := range []string{"0000:3b:00.0", "0000:3b:00.1,rxq_cqe_comp_en=0"} {
		if i := slices.Index(pci, d); i < 1 || pci[i-1] != "-a" {
			t.Errorf("Args() = %q, want -a %s", pci, d)
		}
	}
}
