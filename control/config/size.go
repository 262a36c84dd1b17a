package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Size is a byte count. In YAML it is an integer (bytes) or a string with a
// unit: binary "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" (also "Ki", "Mi", …),
// decimal "KB"/"K" (10^3), "MB"/"M", "GB"/"G", "TB"/"T", "PB"/"P", "EB"/"E",
// or "B". Units are case-insensitive; a decimal fraction is accepted when the
// result is a whole number of bytes ("1.5GiB", not "0.3GiB").
type Size uint64

// Binary units, for code that builds sizes.
const (
	B   Size = 1
	KiB      = 1024 * B
	MiB      = 1024 * KiB
	GiB      = 1024 * MiB
	TiB      = 1024 * GiB
	PiB      = 1024 * TiB
	EiB      = 1024 * PiB
)

// maxSizeText bounds the text ParseSize will look at. Anything longer cannot
// be a valid 64-bit size written by a person, and the bound keeps the
// arbitrary-precision arithmetic below cheap on hostile input.
const maxSizeText = 64

var sizeUnits = map[string]uint64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "ti": 1 << 40, "tib": 1 << 40,
	"p": 1e15, "pb": 1e15, "pi": 1 << 50, "pib": 1 << 50,
	"e": 1e18, "eb": 1e18, "ei": 1 << 60, "eib": 1 << 60,
}

// binaryUnits is what String prints, largest first.
var binaryUnits = []struct {
	name string
	size Size
}{{"EiB", EiB}, {"PiB", PiB}, {"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}}

// ParseSize parses a size as described on Size. Its errors are single-line
// messages that say what to write instead; they carry no field name.
func ParseSize(s string) (Size, error) {
	text := strings.TrimSpace(s)
	if text == "" || len(text) > maxSizeText {
		return 0, errBadSize(s)
	}
	if text[0] == '-' {
		return 0, fmt.Errorf("%s is negative; a size is a byte count of 0 or more", quote(s))
	}
	// number: digits [ "." digits ]
	i := 0
	for i < len(text) && isDigit(text[i]) {
		i++
	}
	intPart := text[:i]
	fracPart := ""
	if i < len(text) && text[i] == '.' {
		j := i + 1
		for j < len(text) && isDigit(text[j]) {
			j++
		}
		fracPart = text[i+1 : j]
		if fracPart == "" {
			return 0, errBadSize(s)
		}
		i = j
	}
	if intPart == "" {
		return 0, errBadSize(s)
	}
	unit, ok := sizeUnits[strings.ToLower(strings.TrimLeft(text[i:], " "))]
	if !ok {
		return 0, errBadSize(s)
	}

	// value = (intPart.fracPart) * unit, computed exactly.
	digits := new(big.Int)
	digits.SetString(intPart+fracPart, 10)
	digits.Mul(digits, new(big.Int).SetUint64(unit))
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(fracPart))), nil)
	q, r := new(big.Int).QuoRem(digits, scale, new(big.Int))
	if r.Sign() != 0 {
		return 0, fmt.Errorf("%s is not a whole number of bytes; use a smaller unit, e.g. MiB instead of GiB", quote(s))
	}
	if !q.IsUint64() {
		return 0, fmt.Errorf("%s is too large; the largest size is %d bytes (16EiB-1)", quote(s), uint64(math.MaxUint64))
	}
	return Size(q.Uint64()), nil
}

func errBadSize(s string) error {
	return fmt.Errorf("cannot parse %s as a size; use bytes or a unit such as 512MiB, 4GiB", quote(s))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// String prints the size in the largest binary unit that represents it
// exactly: "1GiB", "1536MiB", "100B", "0B". ParseSize(s.String()) == s.
func (s Size) String() string {
	if s != 0 {
		for _, u := range binaryUnits {
			if s%u.size == 0 {
				return fmt.Sprintf("%d%s", uint64(s/u.size), u.name)
			}
		}
	}
	return fmt.Sprintf("%dB", uint64(s))
}

// UnmarshalYAML accepts an integer or a string with a unit.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("expected a size such as 4GiB")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText prints String, so a Size reads back the same through YAML,
// JSON or flag.TextVar.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses with ParseSize.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Duration is a time.Duration written in YAML as a Go duration string:
// "5s", "250ms", "1m30s". A bare number is rejected: it has no unit.
type Duration time.Duration

// ParseDuration parses a Go duration string with this package's error text.
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("cannot parse %s as a duration; use a number with a unit such as 500ms, 5s, 1m", quote(s))
	}
	return Duration(d), nil
}

// String prints the duration the way time.Duration does ("5s", "1m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("expected a duration such as 5s")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText prints String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses with ParseDuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
