package rdma

import (
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sampleAddr() Addr {
	a := Addr{LID: 0x0102, Port: 1, MTU: 5, GIDIndex: 3, QPN: 0xabcdef, PSN: 0x123456, RdAtomic: 4,
		Regions: []RemoteRegion{{Segment: 7, RKey: 0xdeadbeef, Addr: 0x7f0000000000, Len: 16 << 20}}}
	for i := range a.GID {
		a.GID[i] = byte(i)
	}
	return a
}

// The layout is a wire format between members of different versions: this
// golden encoding must only change together with AddrVersion.
func TestAddrGolden(t *testing.T) {
	a := sampleAddr()
	b, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := "46585241" + "0002" + "0000" + "0102" + "01" + "05" +
		"000102030405060708090a0b0c0d0e0f" + "00000003" + "00abcdef" + "00123456" + "0001" + "04" + "00" +
		"00000007" + "deadbeef" + "00007f0000000000" + "0000000001000000"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoding\n got %s\nwant %s", got, want)
	}
	var back Addr
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, a) {
		t.Fatalf("round trip: %+v, want %+v", back, a)
	}
	if r, ok := back.Region(7); !ok || r.RKey != 0xdeadbeef {
		t.Fatalf("Region(7) = %+v, %v", r, ok)
	}
	if _, ok := back.Region(8); ok {
		t.Fatal("Region(8) found")
	}
}

func TestAddrDecodeErrors(t *testing.T) {
	a := sampleAddr()
	good, _ := a.MarshalBinary()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"short", good[:10], "at least 44"},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), "magic"},
		{"version", mut(func(b []byte) []byte { b[5] = 3; return b }), "version 3"},
		{"flags", mut(func(b []byte) []byte { b[7] = 1; return b }), "flags"},
		{"reserved", mut(func(b []byte) []byte { b[43] = 1; return b }), "reserved"},
		{"rd_atomic 0", mut(func(b []byte) []byte { b[42] = 0; return b }), "rd_atomic 0"},
		{"rd_atomic 17", mut(func(b []byte) []byte { b[42] = 17; return b }), "rd_atomic 17"},
		{"v1 reserved", mut(func(b []byte) []byte { b[5] = 1; return b }), "reserved 0x400"},
		{"truncated region", good[:len(good)-1], "need 68 bytes"},
		{"extra bytes", append(append([]byte(nil), good...), 0), "need 68 bytes"},
		{"qpn 25 bits", mut(func(b []byte) []byte { b[32] = 1; return b }), "qpn"},
		{"psn 25 bits", mut(func(b []byte) []byte { b[36] = 1; return b }), "psn"},
		{"mtu 0", mut(func(b []byte) []byte { b[11] = 0; return b }), "mtu 0"},
		{"mtu 6", mut(func(b []byte) []byte { b[11] = 6; return b }), "mtu 6"},
		{"port 0", mut(func(b []byte) []byte { b[10] = 0; return b }), "port 0"},
		{"empty region", mut(func(b []byte) []byte { copy(b[60:68], make([]byte, 8)); return b }), "length 0"},
		{"wrapping region", mut(func(b []byte) []byte {
			copy(b[52:60], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			return b
		}), "length"},
	}
	for _, c := range cases {
		var out Addr
		err := out.UnmarshalBinary(c.in)
		if !errors.Is(err, ErrBadAddr) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrBadAddr mentioning %q", c.name, err, c.want)
		}
	}
	bad := sampleAddr()
	bad.QPN = 1 << 24
	if _, err := bad.MarshalBinary(); !errors.Is(err, ErrBadAddr) {
		t.Errorf("marshal of a 25-bit qpn: %v", err)
	}
}

// A version-1 record (before rd_atomic) still decodes, as rd_atomic 1, so
// a member reads a peer that has not upgraded yet.
func TestAddrVersion1(t *testing.T) {
	a := sampleAddr()
	b, _ := a.MarshalBinary()
	b[5], b[42] = 1, 0
	var got Addr
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	a.RdAtomic = 1
	if !reflect.DeepEqual(got, a) {
		t.Fatalf("v1 record: %+v, want %+v", got, a)
	}
	zero := sampleAddr()
	zero.RdAtomic = 0
	if b, err := zero.MarshalBinary(); err != nil || b[42] != 1 {
		t.Fatalf("rd_atomic 0 encodes as %d, %v; want 1", b[42], err)
	}
}

func FuzzAddrDecode(f *testing.F) {
	a := sampleAddr()
	good, _ := a.MarshalBinary()
	f.Add(good)
	v1 := append([]byte(nil), good...)
	v1[5], v1[42] = 1, 0
	f.Add(v1)
	f.Add([]byte("FXRA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var x Addr
		if x.UnmarshalBinary(b) != nil {
			return
		}
		again, err := x.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		if b[5] == byte(AddrVersion) && string(again) != string(b) {
			t.Fatal("a decoded version-2 record does not re-encode to its input")
		}
		var y Addr
		if err := y.UnmarshalBinary(again); err != nil || !reflect.DeepEqual(x, y) {
			t.Fatalf("re-encoded record decodes to %+v, %v; want %+v", y, err, x)
		}
	})
}
