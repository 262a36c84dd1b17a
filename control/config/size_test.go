package config

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
	}{
		{"0", 0},
		{"4096", 4096},
		{"4096B", 4096},
		{"4096b", 4096},
		{"64KiB", 64 * KiB},
		{"64kib", 64 * KiB},
		{"64Ki", 64 * KiB},
		{"512MiB", 512 * MiB},
		{"512MIB", 512 * MiB},
		{"1GiB", GiB},
		{"1.5GiB", 1536 * MiB},
		{"0.5KiB", 512},
		{"1G", 1_000_000_000},
		{"1GB", 1_000_000_000},
		{"1gb", 1_000_000_000},
		{"100M", 100_000_000},
		{"1.1GB", 1_100_000_000},
		{"2K", 2000},
		{"1T", 1e12},
		{"1TiB", TiB},
		{"1PiB", PiB},
		{"15EiB", 15 * EiB},
		{"1E", 1e18},
		{"18446744073709551615", math.MaxUint64},
		{"18446744073709551615B", math.MaxUint64},
		{"  8MiB  ", 8 * MiB},
		{"8 MiB", 8 * MiB},
		{"007MiB", 7 * MiB},
		{"1.000GiB", GiB},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSizeErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `cannot parse "" as a size; use bytes or a unit such as 512MiB, 4GiB`},
		{"12 parsecs", `cannot parse "12 parsecs" as a size; use bytes or a unit such as 512MiB, 4GiB`},
		{"GiB", `cannot parse "GiB" as a size`},
		{"1.GiB", `cannot parse "1.GiB" as a size`},
		{".5GiB", `cannot parse ".5GiB" as a size`},
		{"+1GiB", `cannot parse "+1GiB" as a size`},
		{"1,024", `cannot parse "1,024" as a size`},
		{"1_024", `cannot parse "1_024" as a size`},
		{"0x10", `cannot parse "0x10" as a size`},
		{"1e9", `cannot parse "1e9" as a size`},
		{"1GiBB", `cannot parse "1GiBB" as a size`},
		{"1 2GiB", `cannot parse "1 2GiB" as a size`},
		{"1Gi B", `cannot parse "1Gi B" as a size`},
		{"-1", `"-1" is negative`},
		{"-4GiB", `"-4GiB" is negative`},
		{"16EiB", `"16EiB" is too large; the largest size is 18446744073709551615 bytes`},
		{"18446744073709551616", `is too large`},
		{"99999999999999999999999EiB", `is too large`},
		{"0.3GiB", `"0.3GiB" is not a whole number of bytes; use a smaller unit`},
		{"1.5B", `is not a whole number of bytes`},
		{strings.Repeat("1", 65), `cannot parse`},
	} {
		_, err := ParseSize(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSize(%q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestSizeString(t *testing.T) {
	for _, tc := range []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{100, "100B"},
		{1023, "1023B"},
		{KiB, "1KiB"},
		{1536, "1536B"},
		{1536 * KiB, "1536KiB"},
		{1536 * MiB, "1536MiB"},
		{GiB, "1GiB"},
		{1_000_000_000, "1000000000B"},
		{4 * GiB, "4GiB"},
		{8 * EiB, "8EiB"},
		{math.MaxUint64, "18446744073709551615B"},
		{math.MaxUint64 - (KiB - 1), "18014398509481983KiB"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("Size(%d).String() = %q, want %q", uint64(tc.in), got, tc.want)
		}
	}
}

// Property: String parses back to the same Size, for sizes of every shape
// (multiples of each unit, odd byte counts, the extremes).
func TestSizeStringRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(s Size) {
		t.Helper()
		got, err := ParseSize(s.String())
		if err != nil || got != s {
			t.Fatalf("ParseSize(%q) = %d, %v; want %d", s.String(), got, err, uint64(s))
		}
	}
	for _, s := range []Size{0, 1, math.MaxUint64, EiB, 15 * EiB, math.MaxUint64 &^ (MiB - 1)} {
		check(s)
	}
	for i := 0; i < 20000; i++ {
		shift := r.UintN(61) // a multiple of 2^shift, so every unit shows up
		check(Size(r.Uint64() >> r.UintN(64) << shift))
	}
}

func TestSizeYAMLAndText(t *testing.T) {
	var v struct {
		A Size `yaml:"a" json:"a"`
		B Size `yaml:"b" json:"b"`
	}
	if err := yaml.Unmarshal([]byte("a: 4096\nb: 1.5GiB\n"), &v); err != nil || v.A != 4096 || v.B != 1536*MiB {
		t.Fatalf("yaml: %+v, %v", v, err)
	}
	if err := yaml.Unmarshal([]byte("a: [1]\n"), &v); err == nil {
		t.Errorf("yaml list as size: no error")
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "a: 4KiB\nb: 1536MiB\n" {
		t.Errorf("yaml.Marshal = %q, %v", out, err)
	}
	j, err := json.Marshal(v)
	if err != nil || string(j) != `{"a":"4KiB","b":"1536MiB"}` {
		t.Errorf("json.Marshal = %s, %v", j, err)
	}
	if err := json.Unmarshal([]byte(`{"a":"2MiB","b":"x"}`), &v); err == nil {
		t.Errorf("json bad size: no error")
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"5s": 5 * time.Second, "250ms": 250 * time.Millisecond, "1m30s": 90 * time.Second, "0": 0,
	} {
		got, err := ParseDuration(in)
		if err != nil || time.Duration(got) != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"5", "", "5 s", "five seconds", "1d"} {
		if _, err := ParseDuration(in); err == nil || !strings.Contains(err.Error(), "as a duration") {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, err)
		}
	}
	if s := Duration(3 * time.Second).String(); s != "3s" {
		t.Errorf("String = %q", s)
	}
	var v struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 250ms\n"), &v); err != nil || time.Duration(v.D) != 250*time.Millisecond {
		t.Errorf("yaml: %v, %v", v.D, err)
	}
	out, _ := yaml.Marshal(v)
	if string(out) != "d: 250ms\n" {
		t.Errorf("yaml.Marshal = %q", out)
	}
}

// FuzzParseSize: never panics, and whatever parses prints back to itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "4096", "1.5GiB", "1G", "16EiB", "-1", "0.3GiB", "12 parsecs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		back, err := ParseSize(v.String())
		if err != nil || back != v {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, uint64(v), v.String(), uint64(back), err)
		}
	})
}
