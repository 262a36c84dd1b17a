package relay

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sampleHeader() Header {
	return Header{
		HopLimit: 4, PathID: 0xfeedface,
		Trail:  []string{"a"},
		Via:    []Hop{{ID: "c", Addr: "10.0.0.3:7000"}},
		Target: Hop{ID: "d", Addr: "10.0.0.4:9000"},
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := sampleHeader()
	b, err := h.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Trailing stream bytes must stay unread.
	r := bytes.NewReader(append(b, "rest"...))
	got, err := ReadHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("got %+v, want %+v", got, h)
	}
	if r.Len() != len("rest") {
		t.Fatalf("ReadHeader consumed %d bytes of the stream after the header", len("rest")-r.Len())
	}
}

func TestReadHeaderRejects(t *testing.T) {
	good, _ := (&Header{HopLimit: 1, Target: Hop{Addr: "x:1"}}).AppendTo(nil)
	cases := map[string][]byte{
		"empty":      nil,
		"magic":      append([]byte("FXRX"), good[4:]...),
		"version":    append(append([]byte(Magic), 9), good[5:]...),
		"short body": good[:len(good)-1],
		"huge body":  append([]byte(Magic), Version, 0xff, 0xff),
	}
	for name, in := range cases {
		if _, err := ReadHeader(bytes.NewReader(in)); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%s: err %v, want ErrBadHeader", name, err)
		}
	}
	if _, err := (&Header{HopLimit: 1}).AppendTo(nil); !errors.Is(err, ErrBadHeader) {
		t.Errorf("no target: err %v, want ErrBadHeader", err)
	}
	long := Header{HopLimit: 1, Target: Hop{Addr: strings.Repeat("x", 256)}}
	if _, err := long.AppendTo(nil); !errors.Is(err, ErrBadHeader) {
		t.Errorf("long field: err %v, want ErrBadHeader", err)
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		self string
		edit func(*Header)
		want error
	}{
		{"ok", "b", func(*Header) {}, nil},
		{"no hops left", "b", func(h *Header) { h.HopLimit = 0 }, ErrHopLimit},
		{"more relays than hops", "b", func(h *Header) { h.HopLimit = 1 }, ErrHopLimit},
		{"self in trail", "a", func(*Header) {}, ErrLoop},
		{"self ahead", "c", func(*Header) {}, ErrLoop},
		{"member twice ahead", "b", func(h *Header) { h.Via = append(h.Via, Hop{ID: "c", Addr: "y:1"}) }, ErrLoop},
		{"target earlier on path", "b", func(h *Header) { h.Target.ID = "a" }, ErrLoop},
		{"self as target mid-path", "b", func(h *Header) { h.Target.ID = "b" }, ErrLoop},
		{"self as target, last relay", "b", func(h *Header) { h.Via = nil; h.Target.ID = "b" }, nil},
	}
	for _, c := range cases {
		h := sampleHeader()
		c.edit(&h)
		err := h.Check(c.self)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func TestForward(t *testing.T) {
	h := sampleHeader()
	f := h.Forward("b")
	if f.HopLimit != 3 || !reflect.DeepEqual(f.Trail, []string{"a", "b"}) || len(f.Via) != 0 || f.Target != h.Target || f.PathID != h.PathID {
		t.Fatalf("Forward: %+v", f)
	}
	if len(h.Trail) != 1 || len(h.Via) != 1 {
		t.Fatal("Forward modified its receiver")
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, e := range []error{nil, ErrHopLimit, ErrLoop, ErrNextHop, ErrBadHeader} {
		var b bytes.Buffer
		if err := writeReply(&b, e); err != nil {
			t.Fatal(err)
		}
		got := readReply(&b)
		if e == nil && got != nil || e != nil && !errors.Is(got, e) {
			t.Errorf("reply of %v read as %v", e, got)
		}
	}
}

func FuzzReadHeader(f *testing.F) {
	h := sampleHeader()
	b, _ := h.AppendTo(nil)
	f.Add(b)
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ReadHeader(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v is not ErrBadHeader", err)
			}
			return
		}
		// Whatever decodes re-encodes to the same header.
		b, err := h.AppendTo(nil)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", h, err)
		}
		h2, err := ReadHeader(bytes.NewReader(b))
		if err != nil || !reflect.DeepEqual(h, h2) {
			t.Fatalf("round trip: %+v -> %+v (%v)", h, h2, err)
		}
	})
}
