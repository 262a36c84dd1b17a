package rdma

import (
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sampleAddr() Addr {
	a := Addr{LID: 0x0102, Port: 1, MTU: 5, GIDIndex: 3, QPN: 0xabcdef, PSN: 0x123456,
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
	want := "46585241" + "0001" + "0000" + "0102" + "01" + "05" +
		"000102030405060708090a0b0c0d0e0f" + "00000003" + "00abcdef" + "00123456" + "0001" + "0000" +
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
		{"version", mut(func(b []byte) []byte { b[5] = 2; return b }), "version 2"},
		{"flags", mut(func(b []byte) []byte { b[7] = 1; return b }), "flags"},
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

func FuzzAddrDecode(f *testing.F) {
	a := sampleAddr()
	good, _ := a.MarshalBinary()
	f.Add(good)
	f.Add([]byte("FXRA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var x Addr
		if x.UnmarshalBinary(b) != nil {
			return
		}
		again, err := x.MarshalBinary()
		if err != nil || string(again) != string(b) {
			t.Fatalf("decoded record does not re-encode to its input: %v", err)
		}
	})
}
