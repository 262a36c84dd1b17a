package rdma

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	"github.com/fluxon-dev/fluxon/internal/logtest"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

func noDeviceHost(t *testing.T) {
	t.Helper()
	if _, err := cgordma.Devices(); err == nil {
		t.Skip("this host has an RDMA device; the fallback test is for hosts without one")
	}
}

// Without a device New fails at once with ErrNoDevice, logs "no RDMA
// device" once however often it is called, and a zero Transport's Listen
// and Dial fail the same way instead of pretending.
func TestNoDevice(t *testing.T) {
	noDeviceHost(t)
	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	noDeviceOnce = sync.Once{}
	for i := 0; i < 3; i++ {
		tr, err := New(Options{Options: transport.Options{Log: log}, DeviceNames: []string{"mlx5_0"}})
		if !errors.Is(err, cgordma.ErrNoDevice) || tr != nil {
			t.Fatalf("New: %v, %v; want ErrNoDevice", tr, err)
		}
	}
	if n := strings.Count(logs.String(), "msg=\"rdma transport: no RDMA device"); n != 1 {
		t.Fatalf("logged %q %d times, want once:\n%s", "no RDMA device", n, logs.String())
	}
	var zero Transport
	if _, err := zero.Dial(context.Background(), "127.0.0.1:1", transport.Identity{}, nil); !errors.Is(err, cgordma.ErrNoDevice) {
		t.Errorf("Dial: %v", err)
	}
	if _, err := zero.Listen(context.Background(), "127.0.0.1:0", transport.Identity{}, transport.HandlerFuncs{}, nil); !errors.Is(err, cgordma.ErrNoDevice) {
		t.Errorf("Listen: %v", err)
	}
}

// A device list without the configured names is ErrNoDevice too (selection
// by network.rdma_device_names), even on a host with devices.
func TestNoConfiguredDevice(t *testing.T) {
	old := devices
	defer func() { devices = old }()
	devices = func() ([]cgordma.DeviceInfo, error) { return []cgordma.DeviceInfo{{Name: "mlx5_0"}}, nil }
	_, err := New(Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}, DeviceNames: []string{"mlx5_7"}})
	if !errors.Is(err, cgordma.ErrNoDevice) || !strings.Contains(err.Error(), "this host has [mlx5_0]") {
		t.Fatalf("New: %v", err)
	}
}

// The fallback a connector relies on: with rdma unavailable, the first
// available transport in [rdma, tcp] is tcp, and the reason rdma was
// skipped is recorded.
func TestFirstAvailableFallsBackToTCP(t *testing.T) {
	noDeviceHost(t)
	quiet := transport.Options{Log: slog.New(slog.DiscardHandler)}
	tr, skipped, err := transport.FirstAvailable(
		transport.Candidate{Name: Name, New: func() (transport.Transport, error) {
			tr, err := New(Options{Options: quiet})
			if err != nil {
				return nil, err
			}
			return tr, nil
		}},
		transport.Candidate{Name: tcp.Name, New: func() (transport.Transport, error) { return tcp.New(tcp.Options{Options: quiet}) }},
	)
	if err != nil || tr.Name() != tcp.Name {
		t.Fatalf("FirstAvailable = %v, %v; want tcp", tr, err)
	}
	if len(skipped) != 1 || skipped[0].Name != Name || !errors.Is(skipped[0].Err, cgordma.ErrNoDevice) {
		t.Fatalf("skipped = %+v, want rdma with ErrNoDevice", skipped)
	}

	// Nothing available: ErrNoTransport, still carrying each reason.
	_, skipped, err = transport.FirstAvailable(transport.Candidate{Name: Name, New: func() (transport.Transport, error) {
		return nil, cgordma.ErrNoDevice
	}})
	if !errors.Is(err, transport.ErrNoTransport) || !errors.Is(err, cgordma.ErrNoDevice) || len(skipped) != 1 {
		t.Fatalf("FirstAvailable(rdma only) = %v, %+v", err, skipped)
	}
}
