//go:build !linux || !cgo

package ring

import (
	"errors"
	"testing"
)

func TestStubSaysNotSupported(t *testing.T) {
	if _, err := Init(make([]byte, 4096), 64, 8); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Init: %v, want ErrNotSupported", err)
	}
	if _, err := Open(make([]byte, 4096)); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Open: %v, want ErrNotSupported", err)
	}
	if Size(64, 8) != 0 {
		t.Error("Size accepted a geometry in a build without rings")
	}
	if m, err := ParsePollMode("busy_poll"); err != nil || m != BusyPoll {
		t.Errorf("ParsePollMode: %v, %v", m, err)
	}
}
