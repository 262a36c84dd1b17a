package dpdk

import "testing"

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Addr
		withMAC bool
		bad     bool
	}{
		{in: "dpdk://net_af_packet0/02:f1:00:00:00:01:7", want: Addr{"net_af_packet0", [6]byte{2, 0xf1, 0, 0, 0, 1}, 7}, withMAC: true},
		{in: "dpdk://a:0", want: Addr{Device: "a"}},
		{in: "tcp://a:1", bad: true},
		{in: "dpdk://a", bad: true},
		{in: "dpdk://:1", bad: true},
		{in: "dpdk://a/zz:1", bad: true},
		{in: "dpdk://a:70000", bad: true},
	} {
		got, withMAC, err := ParseAddr(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseAddr(%q) accepted a bad address", tc.in)
			}
			continue
		}
		if err != nil || got != tc.want || withMAC != tc.withMAC {
			t.Errorf("ParseAddr(%q) = %+v, %v, %v; want %+v, %v", tc.in, got, withMAC, err, tc.want, tc.withMAC)
		}
		if withMAC {
			if back, _, _ := ParseAddr(got.String()); back != got {
				t.Errorf("%q does not round-trip: %q", tc.in, got.String())
			}
		}
	}
}
