//go:build !dpdk

package dpdk

import (
	"errors"
	"testing"

	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
)

// Without the dpdk build tag, DPDK ports are absent and say how to get them.
func TestNotInThisBuild(t *testing.T) {
	if _, err := OpenDPDK(cdpdk.EAL{NoHuge: true}, "net_ring0", EndpointConfig{}); !errors.Is(err, cdpdk.ErrNotSupported) {
		t.Fatalf("OpenDPDK without the dpdk tag = %v, want cgo/dpdk's ErrNotSupported", err)
	}
}
