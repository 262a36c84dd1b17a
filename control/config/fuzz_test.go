package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; every error is a single-line *FieldError
// whose line lies inside the document; every accepted config is stable under
// a second ApplyDefaults+Validate, and parsing is deterministic.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for i := range Roles {
			f.Add(data, uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, r uint8) {
		role := Roles[int(r)%len(Roles)]
		c, err := Parse(data, role)
		if err != nil {
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("multi-line error: %q", msg)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError: %v", err, err)
			}
			if fe.Line < 0 || fe.Line > yamlLines(data)+1 {
				t.Fatalf("line %d outside a %d-byte document: %v", fe.Line, len(data), err)
			}
			if _, err2 := Parse(data, role); err2 == nil || err2.Error() != msg {
				t.Fatalf("Parse is not deterministic: %v, then %v", err, err2)
			}
			return
		}
		before := dump(c)
		c.ApplyDefaults(role)
		if err := c.Validate(role); err != nil {
			t.Fatalf("a parsed config fails a second Validate: %v", err)
		}
		if after := dump(c); after != before {
			t.Fatalf("ApplyDefaults+Validate changed a valid config:\n%s\n%s", before, after)
		}
		if c.NodeID != c.MemberID {
			t.Fatalf("node_id %q != member_id %q", c.NodeID, c.MemberID)
		}
	})
}

// yamlLines counts lines the way YAML does: \r\n, \r, \n and the Unicode
// breaks NEL, LS and PS each end one.
func yamlLines(data []byte) int {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	n := 1
	for _, r := range s {
		switch r {
		case '\n', '\r', '\u0085', '\u2028', '\u2029':
			n++
		}
	}
	return n
}
