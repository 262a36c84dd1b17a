package grpcerr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fluxon-dev/fluxon/internal/grpcerr"
)

var (
	errA = errors.New("a went wrong")
	errB = errors.New("b went wrong")
	m    = grpcerr.Map{Service: "svc", Entries: []grpcerr.Entry{
		{Err: errA, Code: codes.NotFound, Reason: "A"},
		{Err: errB, Code: codes.ResourceExhausted, Reason: "B"},
	}}
)

func TestRoundTrip(t *testing.T) {
	for _, e := range m.Entries {
		wrapped := fmt.Errorf("%w: what to do", e.Err)
		back := m.FromStatus(m.ToStatus(wrapped))
		if !errors.Is(back, e.Err) || status.Code(back) != e.Code || back.Error() != wrapped.Error() {
			t.Fatalf("%v came back as %v (code %v)", wrapped, back, status.Code(back))
		}
		for _, o := range m.Entries {
			if o.Err != e.Err && errors.Is(back, o.Err) {
				t.Fatalf("%v also matches %v", back, o.Err)
			}
		}
	}
	// Unmapped errors: Internal, named by service and code; context errors keep their code.
	back := m.FromStatus(m.ToStatus(errors.New("bug")))
	if status.Code(back) != codes.Internal || back.Error() != "svc: Internal: bug" {
		t.Fatalf("unmapped: %v", back)
	}
	back = m.FromStatus(m.ToStatus(context.DeadlineExceeded))
	if !errors.Is(back, context.DeadlineExceeded) || status.Code(back) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", back)
	}
	// Non-status errors and nil pass through.
	if m.FromStatus(io.EOF) != io.EOF || m.FromStatus(nil) != nil || m.ToStatus(nil) != nil {
		t.Fatal("pass-through broken")
	}
	// A reason from another service's map matches nothing here.
	other := grpcerr.Map{Service: "x", Entries: []grpcerr.Entry{{Err: errors.New("c"), Code: codes.Aborted, Reason: "C"}}}
	back = m.FromStatus(other.ToStatus(other.Entries[0].Err))
	if errors.Is(back, errA) || errors.Is(back, errB) || status.Code(back) != codes.Aborted {
		t.Fatalf("foreign reason: %v", back)
	}
}
