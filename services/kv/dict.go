package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A dict value is a flat map from field names to typed scalars, stored with
// Kind KindDict. Its encoding is specified byte by byte in docs/values.md;
// change that file in the same commit as this one.

// Dict format limits and constants.
const (
	// DictFormatVersion is the dict encoding this build writes and the only
	// one it reads. A new version gets a new number; readers reject numbers
	// they do not know (DictVersionError) instead of guessing.
	DictFormatVersion = 1
	// MaxDictFields is the most fields one dict may hold.
	MaxDictFields = 1 << 16
	// MaxFieldNameLen is the longest field name, in bytes.
	MaxFieldNameLen = 1 << 10

	// dictMagic starts every encoded dict; the version byte follows it.
	dictMagic     = "FXD"
	dictHeaderLen = len(dictMagic) + 1
	// minEncodedField is the fewest bytes one field takes: a 1-byte name
	// length, a 1-byte name, the type byte and a 1-byte payload (a bool, or
	// the length of an empty string or bytes). It bounds the field count a
	// decoder believes before it allocates.
	minEncodedField = 4
	// maxQuotedName is how much of a field name an error message quotes.
	maxQuotedName = 40
)

// FieldType is the type of one dict field. Its value is the type byte on the
// wire, so the numbers never change.
type FieldType uint8

// Field types. 0 is not a type, so a zero Field does not encode.
const (
	FieldInt64   FieldType = 1 // signed 64-bit integer
	FieldFloat64 FieldType = 2 // IEEE-754 binary64; every bit pattern (NaN payloads, -0) survives
	FieldBool    FieldType = 3 // false or true
	FieldString  FieldType = 4 // valid UTF-8 text
	FieldBytes   FieldType = 5 // opaque bytes, e.g. a tensor's data
)

func (t FieldType) valid() bool { return t >= FieldInt64 && t <= FieldBytes }

func (t FieldType) String() string {
	switch t {
	case FieldInt64:
		return "int64"
	case FieldFloat64:
		return "float64"
	case FieldBool:
		return "bool"
	case FieldString:
		return "string"
	case FieldBytes:
		return "bytes"
	}
	return "FieldType(" + strconv.Itoa(int(t)) + ")"
}

// Field is one named, typed value of a Dict. Only the member that Type names
// is meaningful: encoding ignores the others, and decoding leaves them zero.
type Field struct {
	Name  string
	Type  FieldType
	Int   int64
	Float float64
	Bool  bool
	Str   string
	Bytes []byte
}

// Int returns an int64 field.
func Int(name string, v int64) Field { return Field{Name: name, Type: FieldInt64, Int: v} }

// Float returns a float64 field.
func Float(name string, v float64) Field { return Field{Name: name, Type: FieldFloat64, Float: v} }

// Bool returns a bool field.
func Bool(name string, v bool) Field { return Field{Name: name, Type: FieldBool, Bool: v} }

// String returns a string field; v must be valid UTF-8 (use Bytes otherwise).
func String(name, v string) Field { return Field{Name: name, Type: FieldString, Str: v} }

// Bytes returns a bytes field. It keeps v, not a copy.
func Bytes(name string, v []byte) Field { return Field{Name: name, Type: FieldBytes, Bytes: v} }

// Dict is a flat dict: fields with unique names. Any order may be encoded;
// the encoding is always sorted by name, so equal dicts encode to equal
// bytes, and DecodeDict returns fields in that order.
type Dict []Field

// Get returns the field with this name. It scans the dict: dicts are small
// (tensor metadata), and a scan costs less than building an index.
func (d Dict) Get(name string) (Field, bool) {
	for i := range d {
		if d[i].Name == name {
			return d[i], true
		}
	}
	return Field{}, false
}

// Sort orders the fields by name, in place, as they are encoded. Encoding
// never needs it: a sorted dict, or an unsorted one of up to 32 fields,
// encodes without allocating beyond the output; a bigger unsorted one costs
// a temporary index of 4 bytes a field.
func (d Dict) Sort() {
	slices.SortStableFunc(d, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
}

// DictError says what is wrong with a dict value and where. It wraps
// ErrBadValue.
type DictError struct {
	// Offset is the byte offset in the encoded value where the problem is;
	// -1 when the error comes from encoding a Dict.
	Offset int
	// Field is the index of the field concerned: in the encoding when
	// decoding, in the caller's Dict when encoding; -1 when the problem is
	// not in one field.
	Field int
	// Reason says what is wrong.
	Reason string
}

func (e *DictError) Error() string {
	var b strings.Builder
	b.WriteString("kv: malformed dict value")
	if e.Offset >= 0 {
		b.WriteString(" at byte ")
		b.WriteString(strconv.Itoa(e.Offset))
	}
	if e.Field >= 0 {
		b.WriteString(", field ")
		b.WriteString(strconv.Itoa(e.Field))
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrBadValue) hold.
func (e *DictError) Unwrap() error { return ErrBadValue }

// DictVersionError is returned for a dict written in a format version this
// build does not read. It wraps ErrBadValue. The version byte is always at
// byte offset 3.
type DictVersionError struct {
	Found     uint8 // the version byte in the value
	Supported uint8 // DictFormatVersion of this build
}

func (e *DictVersionError) Error() string {
	hint := "the value is corrupt or was not written by EncodeDict"
	if e.Found > e.Supported {
		hint = "a newer fluxon wrote it: upgrade this process to read it"
	}
	return fmt.Sprintf("kv: malformed dict value at byte 3: dict format version %d, this build reads version %d only: %s",
		e.Found, e.Supported, hint)
}

// Unwrap makes errors.Is(err, ErrBadValue) hold.
func (e *DictVersionError) Unwrap() error { return ErrBadValue }

func quoteName[S ~string | ~[]byte](name S) string {
	if len(name) > maxQuotedName {
		return strconv.Quote(string(name[:maxQuotedName])) + "..."
	}
	return strconv.Quote(string(name))
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// payloadSize is the encoded size of f after its type byte.
func payloadSize(f *Field) int {
	switch f.Type {
	case FieldInt64, FieldFloat64:
		return 8
	case FieldBool:
		return 1
	case FieldString:
		return uvarintLen(uint64(len(f.Str))) + len(f.Str)
	default: // FieldBytes; prepare rejected the rest
		return uvarintLen(uint64(len(f.Bytes))) + len(f.Bytes)
	}
}

func encodeError(field int, format string, args ...any) error {
	return &DictError{Offset: -1, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// sortScratch is how many fields an unsorted dict may have and still be
// ordered without allocating: the order goes in a caller's stack array.
const sortScratch = 32

// prepare validates d and returns its encoded size and, when d is not sorted,
// the order in which to encode its fields, in scratch if it fits.
func prepare(d Dict, scratch []int32) (size int, order []int32, err error) {
	if len(d) > MaxDictFields {
		return 0, nil, encodeError(-1, "%d fields; a dict holds at most %d", len(d), MaxDictFields)
	}
	size = dictHeaderLen + uvarintLen(uint64(len(d)))
	sorted := true
	for i := range d {
		f := &d[i]
		switch {
		case f.Name == "":
			return 0, nil, encodeError(i, "empty name; names are 1 to %d bytes of UTF-8", MaxFieldNameLen)
		case len(f.Name) > MaxFieldNameLen:
			return 0, nil, encodeError(i, "name %s is %d bytes; names are at most %d", quoteName(f.Name), len(f.Name), MaxFieldNameLen)
		case !utf8.ValidString(f.Name):
			return 0, nil, encodeError(i, "name %s is not valid UTF-8", quoteName(f.Name))
		case !f.Type.valid():
			return 0, nil, encodeError(i, "name %s: field type %d is unknown; build fields with Int, Float, Bool, String or Bytes",
				quoteName(f.Name), f.Type)
		case f.Type == FieldString && !utf8.ValidString(f.Str):
			return 0, nil, encodeError(i, "name %s: string value is not valid UTF-8; use a bytes field for binary data", quoteName(f.Name))
		}
		if i > 0 {
			switch c := strings.Compare(d[i-1].Name, f.Name); {
			case c == 0:
				return 0, nil, encodeError(i, "name %s is also the name of field %d; names must be unique", quoteName(f.Name), i-1)
			case c > 0:
				sorted = false
			}
		}
		size += uvarintLen(uint64(len(f.Name))) + len(f.Name) + 1 + payloadSize(f)
	}
	if sorted {
		return size, nil, nil
	}
	order = scratch[:0]
	for i := range d {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(d[a].Name, d[b].Name) })
	for k := 1; k < len(order); k++ {
		if d[order[k-1]].Name == d[order[k]].Name {
			i, j := min(order[k-1], order[k]), max(order[k-1], order[k])
			return 0, nil, encodeError(int(j), "name %s is also the name of field %d; names must be unique", quoteName(d[j].Name), i)
		}
	}
	return size, order, nil
}

// appendDict appends the encoding of d, already validated by prepare, to dst.
func appendDict(dst []byte, d Dict, order []int32) []byte {
	dst = append(dst, dictMagic...)
	dst = append(dst, DictFormatVersion)
	dst = binary.AppendUvarint(dst, uint64(len(d)))
	for k := range d {
		f := &d[k]
		if order != nil {
			f = &d[order[k]]
		}
		dst = binary.AppendUvarint(dst, uint64(len(f.Name)))
		dst = append(dst, f.Name...)
		dst = append(dst, byte(f.Type))
		switch f.Type {
		case FieldInt64:
			dst = binary.LittleEndian.AppendUint64(dst, uint64(f.Int))
		case FieldFloat64:
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f.Float))
		case FieldBool:
			b := byte(0)
			if f.Bool {
				b = 1
			}
			dst = append(dst, b)
		case FieldString:
			dst = binary.AppendUvarint(dst, uint64(len(f.Str)))
			dst = append(dst, f.Str...)
		case FieldBytes:
			dst = binary.AppendUvarint(dst, uint64(len(f.Bytes)))
			dst = append(dst, f.Bytes...)
		}
	}
	return dst
}

// EncodedDictSize returns the size of d's encoding, or the error that
// encoding it would return.
func EncodedDictSize(d Dict) (int, error) {
	var scratch [sortScratch]int32
	size, _, err := prepare(d, scratch[:])
	return size, err
}

// EncodeDict returns the encoding of d. Errors are *DictError and wrap
// ErrBadValue.
func EncodeDict(d Dict) ([]byte, error) { return AppendDict(nil, d) }

// AppendDict appends the encoding of d to dst. On error dst is returned
// unchanged.
func AppendDict(dst []byte, d Dict) ([]byte, error) {
	var scratch [sortScratch]int32
	size, order, err := prepare(d, scratch[:])
	if err != nil {
		return dst, err
	}
	if cap(dst)-len(dst) < size {
		// One allocation of exactly what is needed; the 1 MiB tensor
		// case should not pay for append's growth slack.
		grown := make([]byte, len(dst), len(dst)+size)
		copy(grown, dst)
		dst = grown
	}
	return appendDict(dst, d, order), nil
}

// EncodeDictTo encodes d into dst[:n], in place: a writer sizes a
// reservation with EncodedDictSize and encodes straight into the pool. If dst
// is shorter than the encoding it writes nothing and returns an error
// wrapping io.ErrShortBuffer; an invalid dict gives a *DictError.
func EncodeDictTo(dst []byte, d Dict) (n int, err error) {
	var scratch [sortScratch]int32
	size, order, err := prepare(d, scratch[:])
	if err != nil {
		return 0, err
	}
	if len(dst) < size {
		return 0, fmt.Errorf("kv: dict encoding needs %d bytes but the buffer holds %d; size it with EncodedDictSize: %w",
			size, len(dst), io.ErrShortBuffer)
	}
	// len(dst) >= size, so these appends stay in dst's array.
	return len(appendDict(dst[:0], d, order)), nil
}

// rawField is one field as it lies in the input.
type rawField struct {
	name []byte
	typ  FieldType
	num  uint64 // int64 or float64 bits, or the bool
	data []byte // string or bytes payload, capacity clipped
}

// dictReader walks an encoded dict, checking as it goes.
type dictReader struct {
	b     []byte
	p     int    // offset of the next unread byte
	field int    // index of the field being read, -1 in the header
	name  []byte // its name, once checked
	prev  []byte // the previous field's name
}

func (r *dictReader) fail(at int, format string, args ...any) error {
	reason := fmt.Sprintf(format, args...)
	if r.name != nil {
		reason = "name " + quoteName(r.name) + ": " + reason
	}
	return &DictError{Offset: at, Field: r.field, Reason: reason}
}

// uvarint reads a canonical uvarint: at most 64 bits, in the fewest bytes,
// so that every value has exactly one encoding and re-encoding a decoded
// dict gives back the input.
func (r *dictReader) uvarint(what string) (uint64, error) {
	start := r.p
	var v uint64
	for i := 0; ; i++ {
		if r.p >= len(r.b) {
			return 0, r.fail(start, "%s: varint runs past the end of the input", what)
		}
		c := r.b[r.p]
		r.p++
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, r.fail(start, "%s: varint overflows 64 bits", what)
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, r.fail(start, "%s: varint is not in its shortest form", what)
			}
			return v, nil
		}
	}
}

// length reads a uvarint length and checks it against the limit and what is
// left of the input, before anyone trusts it.
func (r *dictReader) length(what string, limit uint64) (int, error) {
	start := r.p
	n, err := r.uvarint(what)
	if err != nil {
		return 0, err
	}
	if n > limit {
		return 0, r.fail(start, "%s %d exceeds the limit of %d", what, n, limit)
	}
	if left := uint64(len(r.b) - r.p); n > left {
		return 0, r.fail(start, "%s %d exceeds the %d bytes left in the input", what, n, left)
	}
	return int(n), nil
}

// invalidUTF8 returns the offset in b of the first byte that is not valid
// UTF-8, or -1.
func invalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	i := 0
	for i < len(b) {
		c, size := utf8.DecodeRune(b[i:])
		if c == utf8.RuneError && size <= 1 {
			break
		}
		i += size
	}
	return i
}

// header checks the magic and version and returns the field count.
func (r *dictReader) header() (int, error) {
	r.field = -1
	n := min(len(r.b), len(dictMagic))
	for i := range n {
		if r.b[i] != dictMagic[i] {
			return 0, r.fail(i, "input starts %q, not the magic %q: not a dict value", r.b[:n], dictMagic)
		}
	}
	if len(r.b) == 0 {
		return 0, r.fail(0, "empty input; a dict value is at least %d bytes", dictHeaderLen+1)
	}
	if len(r.b) < dictHeaderLen {
		return 0, r.fail(len(r.b), "input ends inside the %d-byte header", dictHeaderLen)
	}
	if v := r.b[len(dictMagic)]; v != DictFormatVersion {
		return 0, &DictVersionError{Found: v, Supported: DictFormatVersion}
	}
	r.p = dictHeaderLen
	start := r.p
	count, err := r.uvarint("field count")
	if err != nil {
		return 0, err
	}
	if count > MaxDictFields {
		return 0, r.fail(start, "field count %d exceeds the limit of %d", count, MaxDictFields)
	}
	if left := uint64(len(r.b) - r.p); count > left/minEncodedField {
		return 0, r.fail(start, "field count %d needs at least %d bytes but %d are left", count, count*minEncodedField, left)
	}
	return int(count), nil
}

// next reads field r.field. With check false it trusts input that a
// checking pass has accepted, and skips the costly checks.
func (r *dictReader) next(check bool) (rawField, error) {
	var f rawField
	r.name = nil
	start := r.p
	n, err := r.length("name length", MaxFieldNameLen)
	if err != nil {
		return f, err
	}
	f.name = r.b[r.p : r.p+n]
	r.p += n
	if check {
		if n == 0 {
			return f, r.fail(start, "empty name; names are 1 to %d bytes", MaxFieldNameLen)
		}
		if i := invalidUTF8(f.name); i >= 0 {
			return f, r.fail(start+uvarintLen(uint64(n))+i, "name %s is not valid UTF-8", quoteName(f.name))
		}
		if r.field > 0 {
			switch c := bytes.Compare(r.prev, f.name); {
			case c == 0:
				return f, r.fail(start, "name %s repeats the previous field's name; names must be unique", quoteName(f.name))
			case c > 0:
				return f, r.fail(start, "name %s sorts before the previous name %s; fields must be in ascending byte order of name",
					quoteName(f.name), quoteName(r.prev))
			}
		}
		r.prev = f.name
	}
	r.name = f.name
	if r.p >= len(r.b) {
		return f, r.fail(r.p, "input ends before the type byte")
	}
	f.typ = FieldType(r.b[r.p])
	r.p++
	switch f.typ {
	case FieldInt64, FieldFloat64:
		if left := len(r.b) - r.p; left < 8 {
			return f, r.fail(r.p, "%s needs 8 bytes but %d are left", f.typ, left)
		}
		f.num = binary.LittleEndian.Uint64(r.b[r.p:])
		r.p += 8
	case FieldBool:
		if r.p >= len(r.b) {
			return f, r.fail(r.p, "input ends before the bool byte")
		}
		f.num = uint64(r.b[r.p])
		if f.num > 1 {
			return f, r.fail(r.p, "bool byte 0x%02x is neither 0 nor 1", f.num)
		}
		r.p++
	case FieldString, FieldBytes:
		// The input bounds both: nothing is allocated from this length.
		what := "bytes length"
		if f.typ == FieldString {
			what = "string length"
		}
		n, err := r.length(what, math.MaxUint64)
		if err != nil {
			return f, err
		}
		f.data = r.b[r.p : r.p+n : r.p+n]
		if check && f.typ == FieldString {
			if i := invalidUTF8(f.data); i >= 0 {
				return f, r.fail(r.p+i, "string value is not valid UTF-8")
			}
		}
		r.p += n
	default:
		return f, r.fail(r.p-1, "unknown type byte 0x%02x; this build knows %d (%s) to %d (%s)",
			byte(f.typ), FieldInt64, FieldInt64, FieldBytes, FieldBytes)
	}
	return f, nil
}

// DecodeDict decodes and fully checks a dict encoded by EncodeDict. It
// accepts exactly one encoding per dict (the one EncodeDict writes), so a
// decoded dict re-encodes to b.
//
// Bytes fields alias b, with their capacity clipped to their length: they
// are valid only while b is, which for a value read from the store means
// while its Holder is open. Names and string values are copied (into one
// shared allocation), so they outlive b.
//
// Errors wrap ErrBadValue: a *DictVersionError for a format version this
// build does not read, and a *DictError, giving the byte offset, otherwise.
func DecodeDict(b []byte) (Dict, error) {
	r := dictReader{b: b}
	count, err := r.header()
	if err != nil {
		return nil, err
	}
	fieldsAt := r.p
	// First pass: check everything and add up the string bytes, so the
	// second can copy every name and string into one allocation.
	strBytes := 0
	for r.field = 0; r.field < count; r.field++ {
		f, err := r.next(true)
		if err != nil {
			return nil, err
		}
		strBytes += len(f.name)
		if f.typ == FieldString {
			strBytes += len(f.data)
		}
	}
	if r.p != len(b) {
		r.field, r.name = -1, nil
		return nil, r.fail(r.p, "%d trailing byte(s) after the last field; the field count is %d", len(b)-r.p, count)
	}

	d := make(Dict, count)
	var sb strings.Builder
	sb.Grow(strBytes)
	str := func(p []byte) string {
		// The builder never reallocates (it was grown to fit) nor changes
		// bytes it holds, so this substring stays valid and immutable.
		start := sb.Len()
		sb.Write(p)
		return sb.String()[start:]
	}
	r.p = fieldsAt
	for i := range d {
		f, _ := r.next(false)
		out := &d[i]
		out.Name = str(f.name)
		out.Type = f.typ
		switch f.typ {
		case FieldInt64:
			out.Int = int64(f.num)
		case FieldFloat64:
			out.Float = math.Float64frombits(f.num)
		case FieldBool:
			out.Bool = f.num == 1
		case FieldString:
			out.Str = str(f.data)
		case FieldBytes:
			out.Bytes = f.data
		}
	}
	return d, nil
}
