//go:build !linux || !cgo || !ucx

package ucx

import (
	"errors"
	"testing"
)

func TestStubNotSupported(t *testing.T) {
	if Supported() {
		t.Fatal("the stub build claims UCX")
	}
	if _, err := Open(); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Open = %v, want ErrNotSupported", err)
	}
}
