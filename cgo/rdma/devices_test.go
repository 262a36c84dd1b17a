package rdma

import (
	"errors"
	"testing"
)

// On hosts without an RDMA device (every CI host so far: ibv_get_device_list
// fails with ENOSYS) and in builds without -tags rdma, Devices says so with
// ErrNoDevice; with a device it lists at least one, each with a name.
func TestDevicesOrNoDevice(t *testing.T) {
	ds, err := Devices()
	if err != nil {
		if !errors.Is(err, ErrNoDevice) {
			t.Fatalf("Devices: %v, want ErrNoDevice or a list", err)
		}
		if errors.Is(err, ErrNotCompiled) == Compiled {
			t.Fatalf("Devices: %v; ErrNotCompiled must match exactly when the verbs are not compiled in (Compiled=%v)", err, Compiled)
		}
		if _, err := Open("", 1, 16); !errors.Is(err, ErrNoDevice) {
			t.Fatalf("Open without a device: %v", err)
		}
		t.Logf("no device: %v", err)
		return
	}
	if len(ds) == 0 || ds[0].Name == "" {
		t.Fatalf("Devices = %+v with no error", ds)
	}
}
