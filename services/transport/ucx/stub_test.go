//go:build !ucx

package ucx

import (
	"errors"
	"testing"

	cucx "github.com/fluxon-dev/fluxon/cgo/ucx"
)

// Without the ucx build tag the transport is absent and says how to get it.
func TestNotInThisBuild(t *testing.T) {
	if _, err := New(Options{}); !errors.Is(err, cucx.ErrNotSupported) {
		t.Fatalf("New without the ucx tag = %v, want cgo/ucx's ErrNotSupported", err)
	}
}
