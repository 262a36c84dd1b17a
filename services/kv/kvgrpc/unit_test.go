package kvgrpc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// Every mapped sentinel survives toStatus then fromStatus (and the batch
// item path) with its code, and only its own sentinel matches.
func TestErrorMapRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range errorMap.Entries {
		if seen[m.Reason] {
			t.Fatalf("reason %s mapped twice", m.Reason)
		}
		seen[m.Reason] = true
		wrapped := fmt.Errorf("%w: what to do", m.Err)
		for name, back := range map[string]error{
			"status": fromStatus(toStatus(wrapped)),
			"item":   fromItem(itemStatus(wrapped)),
		} {
			if !errors.Is(back, m.Err) {
				t.Fatalf("%s: %v does not match %v after the round trip", name, back, m.Err)
			}
			if status.Code(back) != m.Code {
				t.Fatalf("%s: %v has code %v, want %v", name, m.Err, status.Code(back), m.Code)
			}
			if back.Error() != wrapped.Error() {
				t.Fatalf("%s: message %q, want %q", name, back.Error(), wrapped.Error())
			}
			for _, other := range errorMap.Entries {
				if other.Err != m.Err && errors.Is(back, other.Err) {
					t.Fatalf("%s: %v also matches %v", name, m.Err, other.Err)
				}
			}
		}
	}
	want := map[error]codes.Code{
		kv.ErrNotFound: codes.NotFound, kv.ErrExists: codes.AlreadyExists, kv.ErrInflight: codes.Aborted,
		kv.ErrPoolFull: codes.ResourceExhausted, kv.ErrValueTooLarge: codes.InvalidArgument,
		kv.ErrKeyTooLong: codes.InvalidArgument, kv.ErrEmptyKey: codes.InvalidArgument,
		kv.ErrLeaseTTL: codes.InvalidArgument, kv.ErrBadValue: codes.InvalidArgument,
		kv.ErrLeaseNotFound: codes.NotFound, kv.ErrClosed: codes.Unavailable,
		kv.ErrUnavailable: codes.Unavailable,
	}
	for err, code := range want {
		if got, _ := classify(err); got != code {
			t.Fatalf("%v maps to %v, want %v", err, got, code)
		}
	}
	if got := fromStatus(toStatus(context.DeadlineExceeded)); !errors.Is(got, context.DeadlineExceeded) || status.Code(got) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", got)
	}
	if got := fromStatus(toStatus(errors.New("pool corrupt"))); status.Code(got) != codes.Internal {
		t.Fatalf("an unknown error maps to %v, want Internal", status.Code(got))
	}
	if fromStatus(nil) != nil || toStatus(nil) != nil || fromItem(itemStatus(nil)) != nil {
		t.Fatal("nil errors do not stay nil")
	}
}

func TestBatchSplit(t *testing.T) {
	sizes := []int{3, 3, 3, 10, 1, 1}
	got := batches(len(sizes), 6, func(i int) int { return sizes[i] })
	want := [][2]int{{0, 2}, {2, 3}, {3, 4}, {4, 6}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
	got = batches(2*MaxBatchItems+1, math.MaxInt, func(int) int { return 1 })
	want = [][2]int{{0, MaxBatchItems}, {MaxBatchItems, 2 * MaxBatchItems}, {2 * MaxBatchItems, 2*MaxBatchItems + 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batches by count = %v, want %v", got, want)
	}
	if got := batches(0, 10, func(int) int { return 1 }); len(got) != 0 {
		t.Fatalf("batches of nothing = %v", got)
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		d  time.Duration
		ms int64
	}{{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {1500 * time.Microsecond, 2}, {time.Second, 1000}} {
		if got := durationMs(tc.d); got != tc.ms {
			t.Fatalf("durationMs(%v) = %d, want %d", tc.d, got, tc.ms)
		}
	}
	if msDuration(math.MaxInt64) != math.MaxInt64 || msDuration(math.MinInt64) != math.MinInt64 || msDuration(1500) != 1500*time.Millisecond {
		t.Fatal("msDuration does not saturate")
	}
}
