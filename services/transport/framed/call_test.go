package framed

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// A call's done channel is made by its first waiter: it must be closed
// whether the call completes before anyone waits, after, or while a waiter
// makes it, and carry the result either way.
func TestCallWaitAndComplete(t *testing.T) {
	boom := errors.New("boom")
	early := &call{}
	early.complete([]byte("early"), nil)
	select {
	case <-early.wait():
	default:
		t.Fatal("wait on a completed call blocks")
	}
	if string(early.resp) != "early" {
		t.Fatalf("resp %q", early.resp)
	}

	late := &call{}
	ch := late.wait()
	if ch2 := late.wait(); ch2 != ch {
		t.Fatal("a second wait made a second channel")
	}
	go late.complete(nil, boom)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("wait never ended after complete")
	}
	if !errors.Is(late.err, boom) || !late.fin.Load() {
		t.Fatalf("err %v fin %v", late.err, late.fin.Load())
	}

	for i := range 1000 { // racing: run with -race
		cl := &call{}
		go cl.complete([]byte{byte(i)}, nil)
		<-cl.wait()
		if len(cl.resp) != 1 || cl.resp[0] != byte(i) {
			t.Fatalf("round %d: resp %v", i, cl.resp)
		}
	}
}

// Request paths are interned per connection, at most maxInternedPaths of
// them: a peer sending ever new paths cannot grow the table.
func TestInternPathBounded(t *testing.T) {
	c := &Conn{}
	a := c.internPath([]byte("/kv/get"))
	b := c.internPath([]byte("/kv/get"))
	if a != "/kv/get" || b != a {
		t.Fatalf("interned %q and %q", a, b)
	}
	if n := testing.AllocsPerRun(100, func() { _ = c.internPath([]byte("/kv/get")) }); n != 0 {
		t.Fatalf("a known path costs %v allocations", n)
	}
	for i := range 10 * maxInternedPaths {
		p := fmt.Sprintf("/p/%d", i)
		if got := c.internPath([]byte(p)); got != p {
			t.Fatalf("internPath(%q) = %q", p, got)
		}
	}
	if len(c.paths) != maxInternedPaths {
		t.Fatalf("%d interned paths, want the bound %d", len(c.paths), maxInternedPaths)
	}
}
