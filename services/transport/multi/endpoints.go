package multi

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrBadEndpoints: an endpoint string that Parse cannot read.
var ErrBadEndpoints = errors.New("multi transport: bad endpoint string")

// DefaultName is the transport a bare "host:port" endpoint means: what
// members advertised before they offered several transports.
const DefaultName = "tcp"

// Endpoints maps a transport name to the address it listens on.
type Endpoints map[string]string

// Encode writes e as one string, "tcp=10.0.0.1:7200,quic=10.0.0.1:7201",
// so that the single-string endpoint fields of member records carry every
// transport. Names are sorted, so equal maps encode alike. A name or an
// address holding ',' or '=' (a name) cannot be encoded.
func Encode(e Endpoints) (string, error) {
	names := make([]string, 0, len(e))
	for n := range e {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		a := e[n]
		if n == "" || strings.ContainsAny(n, ",= ") || a == "" || strings.ContainsAny(a, ", ") {
			return "", fmt.Errorf("%w: cannot encode %q=%q (names and addresses must be non-empty, without ',' or spaces; names without '=')", ErrBadEndpoints, n, a)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(a)
	}
	return b.String(), nil
}

// Parse reads an Encode string. A string without '=' is a bare address of
// DefaultName (tcp), as older members advertise.
func Parse(s string) (Endpoints, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadEndpoints)
	}
	if !strings.Contains(s, "=") {
		if strings.ContainsAny(s, ", ") {
			return nil, fmt.Errorf("%w: %q is neither host:port nor name=addr,...", ErrBadEndpoints, s)
		}
		return Endpoints{DefaultName: s}, nil
	}
	e := Endpoints{}
	for _, part := range strings.Split(s, ",") {
		n, a, ok := strings.Cut(part, "=")
		if !ok || n == "" || a == "" || strings.Contains(n, " ") || strings.Contains(a, " ") {
			return nil, fmt.Errorf("%w: %q in %q is not name=addr", ErrBadEndpoints, part, s)
		}
		if _, dup := e[n]; dup {
			return nil, fmt.Errorf("%w: %q offers %s twice", ErrBadEndpoints, s, n)
		}
		e[n] = a
	}
	return e, nil
}

// Names returns the transports an endpoint string offers, sorted; nil if
// it cannot be parsed.
func Names(s string) []string {
	e, err := Parse(s)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(e))
	for n := range e {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
