//go:build !linux || !cgo || !dpdk

package dpdk

import (
	"errors"
	"testing"
)

func TestNotInThisBuild(t *testing.T) {
	if Supported() {
		t.Fatal("the stub says DPDK is supported")
	}
	if _, err := Open(EAL{NoHuge: true}, PortConfig{Device: "net_ring0"}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Open without the dpdk tag = %v, want ErrNotSupported", err)
	}
}
