package mqbench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestStampParse(t *testing.T) {
	b := make([]byte, 256)
	at := time.Unix(0, 1_700_000_000_123_456_789)
	stamp(b, 15, 123456, at)
	prod, seq, ns, ok := parse(b)
	if !ok || prod != 15 || seq != 123456 || ns != at.UnixNano() {
		t.Fatalf("parse = %d %d %d %v", prod, seq, ns, ok)
	}
	if _, _, _, ok := parse(b[:headerLen-1]); ok {
		t.Fatal("a payload shorter than the header parsed")
	}
}

func TestTallyCountsLossAndDuplicates(t *testing.T) {
	c := Cell{Producers: 3, Consumers: 1, Messages: 10}
	if got := perProducer(c, 0) + perProducer(c, 1) + perProducer(c, 2); got != 10 {
		t.Fatalf("producers send %d messages, want 10", got)
	}
	tl := newTally(c)
	for p := range 3 {
		for s := range perProducer(c, p) {
			if p == 1 && s == 0 {
				continue // lost
			}
			if first, ok := tl.mark(p, uint64(s)); !first || !ok {
				t.Fatalf("first receipt of %d/%d: first %v ok %v", p, s, first, ok)
			}
		}
	}
	if first, ok := tl.mark(2, 1); first || !ok {
		t.Fatalf("duplicate: first %v ok %v", first, ok)
	}
	if _, ok := tl.mark(3, 0); ok {
		t.Fatal("a producer that does not exist was counted")
	}
	if _, ok := tl.mark(0, 99); ok {
		t.Fatal("a sequence never sent was counted")
	}
	if u, d, l := tl.summary(); u != 9 || d != 1 || l != 1 {
		t.Fatalf("summary = unique %d dups %d lost %d, want 9 1 1", u, d, l)
	}
}

func TestPercentile(t *testing.T) {
	ns := []int64{5, 1, 4, 2, 3, 100, 6, 7, 8, 9}
	if p := percentile(ns, 0.5); p != 5 {
		t.Fatalf("p50 = %d", p)
	}
	if p := percentile(ns, 0.99); p != 9 {
		t.Fatalf("p99 = %d", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Fatalf("p50 of nothing = %d", p)
	}
}

func TestTableAndTargets(t *testing.T) {
	small := Cell{Producers: 1, Consumers: 1, Size: 256, Messages: 100}
	big := Cell{Producers: 16, Consumers: 2, Size: 1 << 20, Messages: 100}
	rs := []Result{
		{System: Peer, Cell: small, Unique: 100, Elapsed: time.Second},
		{System: "fluxon", Cell: small, Unique: 100, Elapsed: 500 * time.Millisecond},
		{System: Peer, Cell: big, Unique: 100, Elapsed: time.Second},
		{System: "fluxon", Cell: big, Unique: 99, Lost: 1, Elapsed: 100 * time.Millisecond},
	}
	var b bytes.Buffer
	if err := PrintTable(&b, rs); err != nil {
		t.Fatal(err)
	}
	PrintTargets(&b, rs)
	out := b.String()
	for _, want := range []string{"2.00x", "at 256B: MET", "at 1MiB: NOT met"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
