package resp

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// A key whose owners cannot be reached gets its own error prefix, so a
// client can tell "retry later" from a refused command (as Redis Cluster's
// TRYAGAIN); a missing key stays a nil reply, never this.
func TestUnavailableHasItsOwnPrefix(t *testing.T) {
	err := fmt.Errorf("%w: home of \"k\" unreachable", kv.ErrUnavailable)
	got := storeError(err, "get")
	if !strings.HasPrefix(got, "UNAVAILABLE ") || !strings.Contains(got, `home of "k" unreachable`) {
		t.Fatalf("reply %q", got)
	}
	if absent(err) {
		t.Fatal("an unavailable key must not read as absent")
	}
}
