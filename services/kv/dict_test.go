package kv_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// The -rewrite flag may also be wanted by other test files of this package;
// register it only once, whoever comes first, and read it by name.
func init() {
	if flag.Lookup("rewrite") == nil {
		flag.Bool("rewrite", false, "rewrite the expected outputs in testdata from the current output")
	}
}

func rewriting() bool {
	f := flag.Lookup("rewrite")
	return f != nil && f.Value.String() == "true"
}

var dictSeed = flag.Uint64("dictseed", 0, "seed for TestDictRoundTripRandom (0: from the clock)")

const dictTestdata = "testdata/dict"

// ---- data-driven cases ----
//
// A file under testdata/dict holds cases separated by blank lines:
//
//	# what the case is about (any number of comment lines)
//	decode                      (or: encode)
//	46 58 44 01  # hex, spaces and # comments allowed; "61*1025" is 0x61 1025 times
//	00
//	----
//	(empty)                     the expected output; `go test -run Dict -rewrite` regenerates it
//
// decode reads hex and prints the dict, one field per line, or "error: ...".
// encode reads fields, one per line, in the same syntax, and prints the
// encoding in hex or "error: ...". A field line is
//
//	"name" type value
//
// where name is Go-quoted ("a"*1025 repeats it), type is int64, float64, bool,
// string, bytes or FieldType(N), and value is a decimal int64; a Go float
// (or nan:0x<bits>); true or false; a Go-quoted string; hex:<hex tokens>.

type ddCase struct {
	pre    []string // comments and blank lines before the command
	cmd    string
	line   int // line number of cmd
	input  []string
	output []string
}

type ddFile struct {
	cases []*ddCase
	tail  []string
}

const ddSeparator = "----"

func readDD(t testing.TB, path string) *ddFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	f := &ddFile{}
	var pre []string
	var c *ddCase
	const (
		between = iota
		input
		output
	)
	state := between
	for i, line := range lines {
		switch state {
		case between:
			if line == "" || strings.HasPrefix(line, "#") {
				pre = append(pre, line)
				continue
			}
			if line != "decode" && line != "encode" {
				t.Fatalf("%s:%d: unknown command %q (want decode or encode)", path, i+1, line)
			}
			c = &ddCase{pre: pre, cmd: line, line: i + 1}
			pre = nil
			f.cases = append(f.cases, c)
			state = input
		case input:
			if line == ddSeparator {
				state = output
				continue
			}
			c.input = append(c.input, line)
		case output:
			if line == "" {
				pre = append(pre, line)
				state = between
				continue
			}
			c.output = append(c.output, line)
		}
	}
	if state == input {
		t.Fatalf("%s:%d: case has no %q line", path, c.line, ddSeparator)
	}
	f.tail = pre
	return f
}

func (f *ddFile) String() string {
	var lines []string
	for _, c := range f.cases {
		lines = append(lines, c.pre...)
		lines = append(lines, c.cmd)
		lines = append(lines, c.input...)
		lines = append(lines, ddSeparator)
		lines = append(lines, c.output...)
	}
	lines = append(lines, f.tail...)
	return strings.Join(lines, "\n") + "\n"
}

// parseHex reads whitespace-separated hex tokens; "XX*N" is byte XX N times,
// and "#" starts a comment to the end of the line.
func parseHex(lines ...string) ([]byte, error) {
	var out []byte
	for _, line := range lines {
		line, _, _ = strings.Cut(line, "#")
		for tok := range strings.FieldsSeq(line) {
			if b, n, ok := strings.Cut(tok, "*"); ok {
				v, err := strconv.ParseUint(b, 16, 8)
				if err != nil || len(b) != 2 {
					return nil, fmt.Errorf("bad repeated byte %q", tok)
				}
				count, err := strconv.Atoi(n)
				if err != nil || count < 0 {
					return nil, fmt.Errorf("bad repeat count %q", tok)
				}
				out = append(out, bytes.Repeat([]byte{byte(v)}, count)...)
				continue
			}
			b, err := hex.DecodeString(tok)
			if err != nil {
				return nil, fmt.Errorf("bad hex %q: %v", tok, err)
			}
			out = append(out, b...)
		}
	}
	return out, nil
}

// hexTokens renders b as tokens: runs of 8 or more equal bytes as "XX*N",
// other bytes one token each.
func hexTokens(b []byte) []string {
	var toks []string
	for i := 0; i < len(b); {
		j := i + 1
		for j < len(b) && b[j] == b[i] {
			j++
		}
		if j-i >= 8 {
			toks = append(toks, fmt.Sprintf("%02x*%d", b[i], j-i))
			i = j
			continue
		}
		toks = append(toks, fmt.Sprintf("%02x", b[i]))
		i++
	}
	return toks
}

// hexLines renders an encoding 16 tokens to a line.
func hexLines(b []byte) []string {
	toks := hexTokens(b)
	var lines []string
	for len(toks) > 0 {
		n := min(16, len(toks))
		lines = append(lines, strings.Join(toks[:n], " "))
		toks = toks[n:]
	}
	if lines == nil {
		lines = []string{"(no bytes)"}
	}
	return lines
}

func formatName(s string) string {
	if len(s) >= 8 && s == strings.Repeat(s[:1], len(s)) {
		return strconv.Quote(s[:1]) + "*" + strconv.Itoa(len(s))
	}
	return strconv.Quote(s)
}

func formatField(f kv.Field) string {
	var v string
	switch f.Type {
	case kv.FieldInt64:
		v = strconv.FormatInt(f.Int, 10)
	case kv.FieldFloat64:
		if math.IsNaN(f.Float) {
			v = fmt.Sprintf("nan:0x%016x", math.Float64bits(f.Float))
		} else {
			v = strconv.FormatFloat(f.Float, 'g', -1, 64)
		}
	case kv.FieldBool:
		v = strconv.FormatBool(f.Bool)
	case kv.FieldString:
		v = strconv.Quote(f.Str)
	case kv.FieldBytes:
		v = "hex:" + strings.Join(hexTokens(f.Bytes), " ")
	}
	return strings.TrimSuffix(formatName(f.Name)+" "+f.Type.String()+" "+v, " ")
}

func parseField(line string) (kv.Field, error) {
	var f kv.Field
	q, err := strconv.QuotedPrefix(line)
	if err != nil {
		return f, fmt.Errorf("field line %q does not start with a quoted name", line)
	}
	f.Name, _ = strconv.Unquote(q)
	rest := line[len(q):]
	if strings.HasPrefix(rest, "*") {
		var nstr string
		nstr, rest, _ = strings.Cut(rest[1:], " ")
		n, err := strconv.Atoi(nstr)
		if err != nil {
			return f, fmt.Errorf("bad name repeat count in %q", line)
		}
		f.Name = strings.Repeat(f.Name, n)
	}
	typ, val, _ := strings.Cut(strings.TrimSpace(rest), " ")
	val = strings.TrimSpace(val)
	switch typ {
	case "int64":
		f.Type = kv.FieldInt64
		f.Int, err = strconv.ParseInt(val, 10, 64)
	case "float64":
		f.Type = kv.FieldFloat64
		if bitsHex, ok := strings.CutPrefix(val, "nan:0x"); ok {
			var bits uint64
			bits, err = strconv.ParseUint(bitsHex, 16, 64)
			f.Float = math.Float64frombits(bits)
		} else {
			f.Float, err = strconv.ParseFloat(val, 64)
		}
	case "bool":
		f.Type = kv.FieldBool
		f.Bool, err = strconv.ParseBool(val)
	case "string":
		f.Type = kv.FieldString
		f.Str, err = strconv.Unquote(val)
	case "bytes":
		f.Type = kv.FieldBytes
		h, ok := strings.CutPrefix(val, "hex:")
		if !ok {
			return f, fmt.Errorf("bytes value %q does not start with hex:", val)
		}
		f.Bytes, err = parseHex(h)
	default:
		n, ok := strings.CutPrefix(typ, "FieldType(")
		n, ok2 := strings.CutSuffix(n, ")")
		t, perr := strconv.ParseUint(n, 10, 8)
		if !ok || !ok2 || perr != nil {
			return f, fmt.Errorf("unknown type %q in %q", typ, line)
		}
		f.Type = kv.FieldType(t)
	}
	if err != nil {
		return f, fmt.Errorf("bad %s value in %q: %v", typ, line, err)
	}
	return f, nil
}

func fieldEqual(a, b kv.Field) bool {
	if a.Name != b.Name || a.Type != b.Type {
		return false
	}
	switch a.Type {
	case kv.FieldInt64:
		return a.Int == b.Int
	case kv.FieldFloat64:
		return math.Float64bits(a.Float) == math.Float64bits(b.Float)
	case kv.FieldBool:
		return a.Bool == b.Bool
	case kv.FieldString:
		return a.Str == b.Str
	case kv.FieldBytes:
		return bytes.Equal(a.Bytes, b.Bytes)
	}
	return true
}

func dictEqual(a, b kv.Dict) bool { return slices.EqualFunc(a, b, fieldEqual) }

func sortedCopy(d kv.Dict) kv.Dict {
	s := slices.Clone(d)
	s.Sort()
	return s
}

// checkDictError holds for every error EncodeDict and DecodeDict return.
// inputLen is the decoded input's length, or -1 for an encode error.
func checkDictError(t testing.TB, err error, inputLen int) {
	t.Helper()
	if !errors.Is(err, kv.ErrBadValue) {
		t.Errorf("error does not wrap kv.ErrBadValue: %v", err)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || !utf8.ValidString(msg) {
		t.Errorf("error is not one line of UTF-8: %q", msg)
	}
	var de *kv.DictError
	var ve *kv.DictVersionError
	switch {
	case errors.As(err, &ve):
		if inputLen < 0 {
			t.Errorf("encode returned a version error: %v", err)
		}
		if ve.Found == kv.DictFormatVersion || ve.Supported != kv.DictFormatVersion {
			t.Errorf("version error with Found %d, Supported %d: %v", ve.Found, ve.Supported, err)
		}
	case errors.As(err, &de):
		if inputLen < 0 && de.Offset != -1 {
			t.Errorf("encode error has offset %d: %v", de.Offset, err)
		}
		if inputLen >= 0 && (de.Offset < 0 || de.Offset > inputLen) {
			t.Errorf("offset %d is outside the %d-byte input: %v", de.Offset, inputLen, err)
		}
		if de.Field < -1 || de.Field > kv.MaxDictFields {
			t.Errorf("field index %d: %v", de.Field, err)
		}
		if de.Reason == "" {
			t.Errorf("error has no reason: %v", err)
		}
	default:
		t.Errorf("error %T is neither *kv.DictError nor *kv.DictVersionError: %v", err, err)
	}
}

func runDecodeCase(t *testing.T, in []byte) []string {
	d, err := kv.DecodeDict(in)
	if err != nil {
		checkDictError(t, err, len(in))
		return []string{"error: " + err.Error()}
	}
	re, err := kv.EncodeDict(d)
	if err != nil || !bytes.Equal(re, in) {
		t.Errorf("decoded dict re-encodes to %x, %v; want the input %x", re, err, in)
	}
	if len(d) == 0 {
		return []string{"(empty)"}
	}
	out := make([]string, len(d))
	for i, f := range d {
		out[i] = formatField(f)
	}
	return out
}

func runEncodeCase(t *testing.T, d kv.Dict) []string {
	b, err := kv.EncodeDict(d)
	size, serr := kv.EncodedDictSize(d)
	if err != nil {
		checkDictError(t, err, -1)
		if serr == nil || serr.Error() != err.Error() {
			t.Errorf("EncodedDictSize error %v differs from EncodeDict error %v", serr, err)
		}
		return []string{"error: " + err.Error()}
	}
	if serr != nil || size != len(b) {
		t.Errorf("EncodedDictSize = %d, %v; the encoding has %d bytes", size, serr, len(b))
	}
	got, err := kv.DecodeDict(b)
	if err != nil || !dictEqual(got, sortedCopy(d)) {
		t.Errorf("encoding decodes to %v, %v; want %v", got, err, sortedCopy(d))
	}
	return hexLines(b)
}

func TestDictTestdata(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(dictTestdata, "*.txt"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no case files in %s: %v", dictTestdata, err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f := readDD(t, path)
			for _, c := range f.cases {
				var got []string
				switch c.cmd {
				case "decode":
					in, err := parseHex(c.input...)
					if err != nil {
						t.Fatalf("%s:%d: %v", path, c.line, err)
					}
					got = runDecodeCase(t, in)
				case "encode":
					var d kv.Dict
					for _, line := range c.input {
						fl, err := parseField(line)
						if err != nil {
							t.Fatalf("%s:%d: %v", path, c.line, err)
						}
						d = append(d, fl)
					}
					got = runEncodeCase(t, d)
				}
				if rewriting() {
					c.output = got
					continue
				}
				if !slices.Equal(got, c.output) {
					t.Errorf("%s:%d: %s\n got: %s\nwant: %s\n(if the new output is right, run with -rewrite and review the diff)",
						path, c.line, c.cmd, strings.Join(got, "\n      "), strings.Join(c.output, "\n      "))
				}
			}
			if rewriting() {
				if err := os.WriteFile(path, []byte(f.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// ---- round trips ----

func TestDictRoundTrip(t *testing.T) {
	many := make(kv.Dict, kv.MaxDictFields)
	for i := range many {
		many[i] = kv.Int(fmt.Sprintf("f%05d", i), int64(i))
	}
	for _, tc := range []struct {
		name string
		d    kv.Dict
	}{
		{"empty", kv.Dict{}},
		{"nil", nil},
		{"one of each", kv.Dict{
			kv.Int("i", -42), kv.Float("f", 1.5), kv.Bool("b", true), kv.String("s", "héllo"), kv.Bytes("x", []byte{0, 1, 0xff}),
		}},
		{"int edges", kv.Dict{kv.Int("min", math.MinInt64), kv.Int("max", math.MaxInt64), kv.Int("zero", 0), kv.Int("m1", -1)}},
		{"float edges", kv.Dict{
			kv.Float("negzero", math.Copysign(0, -1)), kv.Float("zero", 0), kv.Float("inf", math.Inf(1)),
			kv.Float("ninf", math.Inf(-1)), kv.Float("nan", math.NaN()), kv.Float("nanpayload", math.Float64frombits(0x7ff0_0000_dead_beef)),
			kv.Float("tiny", math.SmallestNonzeroFloat64), kv.Float("max", math.MaxFloat64),
		}},
		{"bool false", kv.Dict{kv.Bool("b", false)}},
		{"empty values", kv.Dict{kv.String("s", ""), kv.Bytes("nil", nil), kv.Bytes("empty", []byte{})}},
		{"unicode names", kv.Dict{kv.Int("日本", 1), kv.Int("é", 2), kv.Int("🙂", 3), kv.Int("A", 4), kv.Int("\x00", 5)}},
		{"longest name", kv.Dict{kv.Int(strings.Repeat("n", kv.MaxFieldNameLen), 1)}},
		{"multi-byte lengths", kv.Dict{
			kv.String("s127", strings.Repeat("a", 127)), kv.String("s128", strings.Repeat("b", 128)),
			kv.Bytes("b16384", bytes.Repeat([]byte{7}, 16384)), kv.Int(strings.Repeat("n", 128), 1),
		}},
		{"most fields", many},
		{"tensor", tensorDict(4096)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRoundTrip(t, tc.d)
		})
	}
}

// checkRoundTrip checks every encoder against the decoder for one valid dict.
func checkRoundTrip(t testing.TB, d kv.Dict) {
	t.Helper()
	orig := slices.Clone(d)
	enc, err := kv.EncodeDict(d)
	if err != nil {
		t.Fatalf("EncodeDict: %v", err)
	}
	if !slices.EqualFunc(d, orig, fieldEqual) {
		t.Fatal("EncodeDict changed the caller's dict")
	}
	if size, err := kv.EncodedDictSize(d); err != nil || size != len(enc) {
		t.Fatalf("EncodedDictSize = %d, %v; the encoding has %d bytes", size, err, len(enc))
	}
	got, err := kv.DecodeDict(enc)
	if err != nil {
		t.Fatalf("DecodeDict: %v", err)
	}
	if want := sortedCopy(d); !dictEqual(got, want) {
		t.Fatalf("round trip:\n got %v\nwant %v", got, want)
	}
	// Get scans, so look up at most 64 fields of a big dict.
	for i := 0; i < len(d); i += 1 + len(d)/64 {
		f := d[i]
		if g, ok := got.Get(f.Name); !ok || !fieldEqual(g, f) {
			t.Fatalf("Get(%q) = %v, %v; want %v", f.Name, g, ok, f)
		}
	}

	// In place, into a buffer bigger than needed and full of garbage.
	buf := bytes.Repeat([]byte{0xa5}, len(enc)+3)
	n, err := kv.EncodeDictTo(buf, d)
	if err != nil || n != len(enc) || !bytes.Equal(buf[:n], enc) || !bytes.Equal(buf[n:], []byte{0xa5, 0xa5, 0xa5}) {
		t.Fatalf("EncodeDictTo = %d, %v; buffer %x; want %x then a5a5a5", n, err, buf, enc)
	}
	// Appending keeps what is there.
	app, err := kv.AppendDict([]byte("pre"), d)
	if err != nil || string(app[:3]) != "pre" || !bytes.Equal(app[3:], enc) {
		t.Fatalf("AppendDict = %x, %v; want \"pre\" then %x", app, err, enc)
	}
	// The order given does not matter.
	rev := slices.Clone(d)
	slices.Reverse(rev)
	if enc2, err := kv.EncodeDict(rev); err != nil || !bytes.Equal(enc2, enc) {
		t.Fatalf("reversed dict encodes to %x, %v; want %x", enc2, err, enc)
	}
}

// randomDict returns a valid dict that leans towards edge cases.
func randomDict(r *rand.Rand) kv.Dict {
	n := r.IntN(12)
	if r.IntN(20) == 0 {
		n = r.IntN(400)
	}
	names := map[string]bool{}
	d := make(kv.Dict, 0, n)
	for len(d) < n {
		name := randomString(r, 1+r.IntN(12))
		if r.IntN(50) == 0 {
			name = strings.Repeat("x", 1+r.IntN(kv.MaxFieldNameLen))
		}
		if name == "" || len(name) > kv.MaxFieldNameLen || names[name] {
			continue
		}
		names[name] = true
		d = append(d, randomField(r, name))
	}
	return d
}

var (
	runePalette = []rune{'a', 'b', 'z', 'A', '_', '.', '0', 0, 0x7f, 'é', 'ß', '日', '本', '🙂', utf8.MaxRune, 0xfffd}
	intEdges    = []int64{0, 1, -1, math.MinInt64, math.MaxInt64, 1 << 32, -1 << 31}
	floatEdges  = []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), math.SmallestNonzeroFloat64,
		math.MaxFloat64, math.Float64frombits(0x7ff0_0000_0000_0001), math.Float64frombits(0xfff8_0000_0000_1234)}
)

func randomString(r *rand.Rand, runes int) string {
	var b strings.Builder
	for range runes {
		if r.IntN(3) == 0 {
			b.WriteRune(runePalette[r.IntN(len(runePalette))])
		} else {
			b.WriteRune(rune('a' + r.IntN(26)))
		}
	}
	return b.String()
}

func randomBytes(r *rand.Rand) []byte {
	switch r.IntN(8) {
	case 0:
		return nil
	case 1:
		return []byte{}
	case 2:
		return bytes.Repeat([]byte{byte(r.Uint32())}, r.IntN(20000))
	}
	b := make([]byte, r.IntN(300))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func randomField(r *rand.Rand, name string) kv.Field {
	switch kv.FieldType(1 + r.IntN(5)) {
	case kv.FieldInt64:
		if r.IntN(2) == 0 {
			return kv.Int(name, intEdges[r.IntN(len(intEdges))])
		}
		return kv.Int(name, int64(r.Uint64()))
	case kv.FieldFloat64:
		switch r.IntN(3) {
		case 0:
			return kv.Float(name, floatEdges[r.IntN(len(floatEdges))])
		case 1:
			return kv.Float(name, math.Float64frombits(r.Uint64())) // any bits, NaNs included
		}
		return kv.Float(name, r.NormFloat64())
	case kv.FieldBool:
		return kv.Bool(name, r.IntN(2) == 0)
	case kv.FieldString:
		n := r.IntN(10)
		if r.IntN(10) == 0 {
			n = r.IntN(300)
		}
		return kv.String(name, randomString(r, n))
	default:
		return kv.Bytes(name, randomBytes(r))
	}
}

// TestDictRoundTripRandom is the property test: every valid dict round-trips
// through every encoder, encodes the same whatever its order, and no prefix
// or one-byte change of its encoding decodes to something that does not
// re-encode to exactly those bytes.
func TestDictRoundTripRandom(t *testing.T) {
	seed := *dictSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -dictseed=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	iters := 2000
	if testing.Short() {
		iters = 300
	}
	for range iters {
		d := randomDict(r)
		checkRoundTrip(t, d)
		// Shuffled, not just reversed.
		enc, _ := kv.EncodeDict(d)
		sh := slices.Clone(d)
		r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
		if enc2, err := kv.EncodeDict(sh); err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("seed %d: shuffled dict encodes to %x, %v; want %x", seed, enc2, err, enc)
		}
		// Every proper prefix is refused (a few of them for big encodings).
		for k := 0; k < min(len(enc), 64); k++ {
			cut := k
			if len(enc) > 64 {
				cut = r.IntN(len(enc))
			}
			if _, err := kv.DecodeDict(enc[:cut]); err == nil {
				t.Fatalf("seed %d: %d-byte prefix of %d-byte encoding decodes", seed, cut, len(enc))
			} else {
				checkDictError(t, err, cut)
			}
		}
		// A changed byte either fails cleanly or gives a dict that encodes
		// to the changed bytes.
		mut := slices.Clone(enc)
		mut[r.IntN(len(mut))] ^= byte(1 + r.IntN(255))
		checkDecodeReencodes(t, mut)
	}
}

// checkDecodeReencodes is the fuzz property: DecodeDict either fails with a
// proper error or returns a dict whose encoding is b itself.
func checkDecodeReencodes(t testing.TB, b []byte) {
	t.Helper()
	d, err := kv.DecodeDict(b)
	if err != nil {
		checkDictError(t, err, len(b))
		return
	}
	enc, err := kv.EncodeDict(d)
	if err != nil {
		t.Fatalf("decoded dict does not encode: %v\ninput %x", err, b)
	}
	if !bytes.Equal(enc, b) {
		t.Fatalf("decoded dict re-encodes differently\ninput %x\n got  %x", b, enc)
	}
}

// ---- ordering, aliasing, the in-place writer ----

func TestDictCanonicalOrder(t *testing.T) {
	// Byte order, not locale order: upper case before lower, ASCII before
	// multi-byte UTF-8, a prefix before its extensions.
	want := []string{"A", "B", "a", "ab", "b", "é", "日"}
	d := kv.Dict{kv.Int("日", 0), kv.Int("b", 0), kv.Int("ab", 0), kv.Int("é", 0), kv.Int("a", 0), kv.Int("B", 0), kv.Int("A", 0)}
	enc, err := kv.EncodeDict(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kv.DecodeDict(enc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range got {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, want) {
		t.Errorf("decoded order %q; want %q", names, want)
	}
	if d[0].Name != "日" {
		t.Error("EncodeDict sorted the caller's dict")
	}
	d.Sort()
	if enc2, err := kv.EncodeDict(d); err != nil || !bytes.Equal(enc2, enc) {
		t.Errorf("sorted dict encodes to %x, %v; want %x", enc2, err, enc)
	}
	// Equal dicts built in every rotation encode identically.
	for i := range d {
		rot := append(slices.Clone(d[i:]), d[:i]...)
		if enc2, err := kv.EncodeDict(rot); err != nil || !bytes.Equal(enc2, enc) {
			t.Errorf("rotation %d encodes to %x, %v; want %x", i, enc2, err, enc)
		}
	}
}

func TestDictEncodeErrors(t *testing.T) {
	tooMany := make(kv.Dict, kv.MaxDictFields+1)
	for i := range tooMany {
		tooMany[i] = kv.Bool(strconv.Itoa(i), true)
	}
	for _, tc := range []struct {
		name string
		d    kv.Dict
		want string
	}{
		{"too many fields", tooMany, "kv: malformed dict value: 65537 fields; a dict holds at most 65536"},
		{"zero field", kv.Dict{kv.Int("a", 1), {}}, "kv: malformed dict value, field 1: empty name; names are 1 to 1024 bytes of UTF-8"},
		{"zero type", kv.Dict{{Name: "a"}}, "kv: malformed dict value, field 0: name \"a\": field type 0 is unknown; build fields with Int, Float, Bool, String or Bytes"},
		{"duplicate unsorted", kv.Dict{kv.Int("b", 1), kv.Int("a", 1), kv.String("b", "")}, "kv: malformed dict value, field 2: name \"b\" is also the name of field 0; names must be unique"},
		{"duplicate sorted", kv.Dict{kv.Int("a", 1), kv.Int("a", 1)}, "kv: malformed dict value, field 1: name \"a\" is also the name of field 0; names must be unique"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []func() error{
				func() error { _, err := kv.EncodeDict(tc.d); return err },
				func() error { _, err := kv.EncodedDictSize(tc.d); return err },
				func() error { _, err := kv.EncodeDictTo(make([]byte, 1<<20), tc.d); return err },
				func() error {
					dst, err := kv.AppendDict([]byte("keep"), tc.d)
					if string(dst) != "keep" {
						t.Errorf("AppendDict changed dst to %q on error", dst)
					}
					return err
				},
			} {
				err := f()
				if err == nil {
					t.Fatal("no error")
				}
				checkDictError(t, err, -1)
				if err.Error() != tc.want {
					t.Errorf("error:\n got %s\nwant %s", err, tc.want)
				}
			}
		})
	}
}

func TestDecodeDictAliasesBytes(t *testing.T) {
	enc, err := kv.EncodeDict(kv.Dict{kv.Bytes("data", []byte("tensor")), kv.String("dtype", "f16"), kv.Bytes("tail", []byte("zz"))})
	if err != nil {
		t.Fatal(err)
	}
	d, err := kv.DecodeDict(enc)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := d.Get("data")
	i := bytes.Index(enc, []byte("tensor"))
	if &data.Bytes[0] != &enc[i] {
		t.Fatal("bytes field does not alias the input")
	}
	if cap(data.Bytes) != len(data.Bytes) {
		t.Errorf("bytes field has cap %d > len %d: an append would overwrite the input", cap(data.Bytes), len(data.Bytes))
	}
	// Names and strings are copies: they survive the input changing.
	for j := range enc {
		enc[j] = 'X'
	}
	if string(data.Bytes) != "XXXXXX" {
		t.Errorf("bytes field %q does not follow the input", data.Bytes)
	}
	if dtype, ok := d.Get("dtype"); !ok || dtype.Str != "f16" || d[0].Name != "data" {
		t.Errorf("strings changed with the input: %v", d)
	}
}

func TestEncodeDictTo(t *testing.T) {
	d := kv.Dict{kv.Int("a", 1), kv.String("b", "two")}
	size, err := kv.EncodedDictSize(d)
	if err != nil {
		t.Fatal(err)
	}
	short := bytes.Repeat([]byte{0xee}, size-1)
	n, err := kv.EncodeDictTo(short, d)
	if !errors.Is(err, io.ErrShortBuffer) || n != 0 {
		t.Errorf("short buffer: n %d, err %v; want 0, io.ErrShortBuffer", n, err)
	}
	if errors.Is(err, kv.ErrBadValue) {
		t.Errorf("a short buffer is not a bad value: %v", err)
	}
	if !bytes.Equal(short, bytes.Repeat([]byte{0xee}, size-1)) {
		t.Errorf("short buffer was written: %x", short)
	}
	// A slice with spare capacity but too short a length is still short:
	// the writer owns only len(dst).
	if _, err := kv.EncodeDictTo(make([]byte, size-1, 2*size), d); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("len < size with cap > size: %v; want io.ErrShortBuffer", err)
	}
}

func TestDictGet(t *testing.T) {
	d := kv.Dict{kv.Int("a", 1), kv.Bool("b", true)}
	if f, ok := d.Get("b"); !ok || f.Type != kv.FieldBool || !f.Bool {
		t.Errorf("Get(b) = %v, %v", f, ok)
	}
	if f, ok := d.Get("c"); ok || f.Type != 0 {
		t.Errorf("Get(c) = %v, %v; want nothing", f, ok)
	}
	if _, ok := kv.Dict(nil).Get(""); ok {
		t.Error("nil dict has a field")
	}
}

func TestDictVersionError(t *testing.T) {
	for _, v := range []byte{0, 2, 255} {
		_, err := kv.DecodeDict([]byte{'F', 'X', 'D', v, 0})
		var ve *kv.DictVersionError
		if !errors.As(err, &ve) || ve.Found != v || ve.Supported != kv.DictFormatVersion {
			t.Fatalf("version %d: %v; want a DictVersionError", v, err)
		}
		checkDictError(t, err, 5)
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("version %d,", v)) || !strings.Contains(msg, "reads version 1") {
			t.Errorf("message does not name both versions: %s", msg)
		}
	}
}

func TestFieldTypeWireNumbers(t *testing.T) {
	// These numbers are on the wire; changing one breaks every stored dict.
	for typ, want := range map[kv.FieldType]uint8{kv.FieldInt64: 1, kv.FieldFloat64: 2, kv.FieldBool: 3, kv.FieldString: 4, kv.FieldBytes: 5} {
		if uint8(typ) != want {
			t.Errorf("%s is %d on the wire; it must stay %d", typ, uint8(typ), want)
		}
	}
	if kv.DictFormatVersion != 1 {
		t.Errorf("DictFormatVersion %d: a new version needs docs/values.md and new testdata", kv.DictFormatVersion)
	}
}

func TestDictAllocs(t *testing.T) {
	d := tensorDict(1 << 16) // 16 fields, not in name order
	sorted := sortedCopy(d)
	enc, err := kv.EncodeDict(d)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(enc))
	for name, d := range map[string]kv.Dict{"unsorted": d, "sorted": sorted} {
		if a := testing.AllocsPerRun(20, func() { _, _ = kv.EncodeDictTo(buf, d) }); a != 0 {
			t.Errorf("EncodeDictTo of a %s dict allocates %.0f times; want 0", name, a)
		}
		if a := testing.AllocsPerRun(20, func() { _, _ = kv.EncodedDictSize(d) }); a != 0 {
			t.Errorf("EncodedDictSize of a %s dict allocates %.0f times; want 0", name, a)
		}
		if a := testing.AllocsPerRun(20, func() { _, _ = kv.EncodeDict(d) }); a != 1 {
			t.Errorf("EncodeDict of a %s dict allocates %.0f times; want 1, the output", name, a)
		}
	}
	// One for the fields, one for all names and strings; the bytes field
	// is not copied.
	if a := testing.AllocsPerRun(20, func() { _, _ = kv.DecodeDict(enc) }); a > 2 {
		t.Errorf("DecodeDict allocates %.0f times; want at most 2", a)
	}
}

// ---- fuzzing ----

// FuzzDecodeDict: decoding never panics, every error is a proper one, and
// whatever decodes re-encodes to exactly the input. Its seeds are every
// decode case in testdata/dict (corpus.txt holds inputs the fuzzer found).
func FuzzDecodeDict(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(dictTestdata, "*.txt"))
	for _, path := range paths {
		for _, c := range readDD(f, path).cases {
			if c.cmd != "decode" {
				continue
			}
			in, err := parseHex(c.input...)
			if err != nil {
				f.Fatalf("%s:%d: %v", path, c.line, err)
			}
			f.Add(in)
		}
	}
	// Valid dicts of many shapes, so mutations start past the header.
	r := rand.New(rand.NewPCG(1, 2))
	for range 48 {
		enc, err := kv.EncodeDict(randomDict(r))
		if err != nil {
			f.Fatal(err)
		}
		if len(enc) <= 1<<12 {
			f.Add(enc)
		}
	}
	enc, err := kv.EncodeDict(tensorDict(64))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeReencodes(t, b)
	})
}

// ---- benchmarks ----

// tensorDict is a 16-field dict: a tensor's data and its metadata.
func tensorDict(dataLen int) kv.Dict {
	data := make([]byte, dataLen)
	for i := range data {
		data[i] = byte(i * 31)
	}
	return kv.Dict{
		kv.String("dtype", "float16"),
		kv.Int("ndim", 4),
		kv.Int("shape0", 1), kv.Int("shape1", 32), kv.Int("shape2", 128), kv.Int("shape3", int64(dataLen/(32*128*2))),
		kv.Int("stride0", 0), kv.Int("stride1", 128), kv.Int("stride2", 1),
		kv.Bool("contiguous", true),
		kv.Float("scale", 0.125),
		kv.Int("layer", 17),
		kv.String("model", "llama-3-8b"),
		kv.String("device", "cuda:0"),
		kv.Int("checksum", 0x1234_5678_9abc),
		kv.Bytes("data", data),
	}
}

const benchDataLen = 1 << 20

func BenchmarkEncodeDict(b *testing.B) {
	d := tensorDict(benchDataLen)
	size, err := kv.EncodedDictSize(d)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("EncodeDictTo", func(b *testing.B) {
		// The writer's path: size, reserve, encode in place.
		buf := make([]byte, size)
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := kv.EncodeDictTo(buf, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EncodeDict", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := kv.EncodeDict(d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("copy-peer", func(b *testing.B) {
		// The floor: copying the data field alone.
		data, _ := d.Get("data")
		buf := make([]byte, len(data.Bytes))
		b.SetBytes(int64(size))
		for b.Loop() {
			copy(buf, data.Bytes)
		}
	})
}

func BenchmarkDecodeDict(b *testing.B) {
	enc, err := kv.EncodeDict(tensorDict(benchDataLen))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("DecodeDict", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		b.ReportAllocs()
		for b.Loop() {
			d, err := kv.DecodeDict(enc)
			if err != nil || len(d) != 16 {
				b.Fatal(len(d), err)
			}
		}
	})
	b.Run("copy-peer", func(b *testing.B) {
		// What a decoder that copied the data field would at least pay.
		buf := make([]byte, len(enc))
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			copy(buf, enc)
		}
	})
}

// ---- examples ----

func ExampleEncodeDict() {
	d := kv.Dict{
		kv.String("dtype", "f16"),
		kv.Int("rows", 2),
		kv.Bytes("data", []byte{0xde, 0xad}),
	}
	b, err := kv.EncodeDict(d)
	if err != nil {
		panic(err)
	}
	fmt.Printf("% x\n", b)

	got, err := kv.DecodeDict(b) // got's "data" aliases b
	if err != nil {
		panic(err)
	}
	for _, f := range got {
		fmt.Println(f.Name, f.Type)
	}
	rows, _ := got.Get("rows")
	fmt.Println("rows =", rows.Int)
	// Output:
	// 46 58 44 01 03 04 64 61 74 61 05 02 de ad 05 64 74 79 70 65 04 03 66 31 36 04 72 6f 77 73 01 02 00 00 00 00 00 00 00
	// data bytes
	// dtype string
	// rows int64
	// rows = 2
}

func ExampleEncodeDictTo() {
	d := kv.Dict{kv.Int("step", 1000), kv.Float("loss", 0.25)}
	size, err := kv.EncodedDictSize(d)
	if err != nil {
		panic(err)
	}
	// A writer reserves size bytes in the pool and encodes into them; a
	// plain slice stands in for the reservation here.
	reserved := make([]byte, size)
	n, err := kv.EncodeDictTo(reserved, d)
	if err != nil {
		panic(err)
	}
	got, err := kv.DecodeDict(reserved[:n])
	if err != nil {
		panic(err)
	}
	fmt.Println(n, len(got), got[0].Name, got[0].Float)
	// Output:
	// 33 2 loss 0.25
}

func ExampleDecodeDict_version() {
	// A value from a future format version.
	_, err := kv.DecodeDict([]byte{'F', 'X', 'D', 2, 0})
	var ve *kv.DictVersionError
	fmt.Println(errors.Is(err, kv.ErrBadValue), errors.As(err, &ve), ve.Found)
	fmt.Println(err)
	// Output:
	// true true 2
	// kv: malformed dict value at byte 3: dict format version 2, this build reads version 1 only: a newer fluxon wrote it: upgrade this process to read it
}
