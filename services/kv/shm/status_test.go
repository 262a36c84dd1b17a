package shm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// Every status an owner sends maps back to its kv sentinel on the external's
// side, with the owner's message; the unavailable status (appended last, so
// that older codes kept their values) among them.
func TestStatusRoundTrip(t *testing.T) {
	for st, base := range statusErrors {
		err := fmt.Errorf("%w: what to do", base)
		if got := statusOf(err); got != st {
			t.Fatalf("%v: status %d, want %d", base, got, st)
		}
		r := response{status: st, msg: err.Error()}
		back := r.err()
		if !errors.Is(back, base) || back.Error() != err.Error() {
			t.Fatalf("%v: back as %v", base, back)
		}
	}
	if stUnavailable != stInternal+1 {
		t.Fatalf("stUnavailable = %d: status codes on the wire must keep their values", stUnavailable)
	}
	if !errors.Is((&response{status: stUnavailable, msg: "x"}).err(), kv.ErrUnavailable) {
		t.Fatal("unavailable status does not match kv.ErrUnavailable")
	}
}
