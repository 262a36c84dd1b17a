package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Error kinds. Every error this package returns is a *FieldError whose Err is
// one of these (or, for Load, the underlying file-system error), so callers
// can branch with errors.Is without matching message text.
var (
	// ErrSyntax: the bytes are not well-formed YAML, or hold more than one
	// document, or the document is not a mapping.
	ErrSyntax = errors.New("config: invalid YAML")
	// ErrUnknownField: a field name the schema does not have.
	ErrUnknownField = errors.New("config: unknown field")
	// ErrDuplicate: a field, map key or list entry given twice.
	ErrDuplicate = errors.New("config: duplicate")
	// ErrType: a value of the wrong shape (a list where a string belongs, …)
	// or one that does not parse (a size, a duration).
	ErrType = errors.New("config: wrong type")
	// ErrRequired: a field the role needs is missing or empty.
	ErrRequired = errors.New("config: required field missing")
	// ErrRoleField: a field that belongs to another role (master.* on an
	// owner, contribute_to_cluster_pool_size on an external, …).
	ErrRoleField = errors.New("config: field not accepted by this role")
	// ErrInvalid: a value that parses but is out of range or malformed.
	ErrInvalid = errors.New("config: invalid value")
	// ErrRole: the role itself is not one of master, owner, external, up.
	ErrRole = errors.New("config: unknown role")
)

// FieldError is the one error type of this package. Its message is always a
// single line: "config[ FILE][ line N]: [FIELD: ]MSG".
type FieldError struct {
	// File is the path given to Load; empty for Parse and Validate.
	File string
	// Line is the 1-based YAML line the error points at; 0 when the error is
	// about something absent from the document (a missing required field) or
	// the Config did not come from YAML.
	Line int
	// Field is the full dotted path, e.g. "network.poll_mode",
	// "etcd_endpoints[1]", "contribute_to_cluster_pool_size.vram.0"; empty
	// for errors about the document as a whole.
	Field string
	// Msg says what is wrong and what to do.
	Msg string
	// Err is the kind (ErrUnknownField, …) or an underlying cause; see Unwrap.
	Err error
}

// Error implements error. The result never contains a newline.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, " line %d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return oneLine(b.String())
}

// Unwrap returns the error kind or underlying cause.
func (e *FieldError) Unwrap() error { return e.Err }

// oneLine folds any line break (a YAML library message, a file name) into a
// visible escape so an error is always a single log line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\r`).Replace(s)
}

// maxQuoted bounds how much of a user's value is echoed back in a message.
const maxQuoted = 48

// quote renders a user-supplied value for a message: Go-quoted (so control
// characters and newlines are escaped) and truncated when long.
func quote(s string) string {
	if utf8.RuneCountInString(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	r := []rune(s)
	return fmt.Sprintf("%q…", string(r[:maxQuoted]))
}

func errAt(kind error, p pos, field, format string, args ...any) *FieldError {
	return &FieldError{Line: p.line, Field: field, Msg: fmt.Sprintf(format, args...), Err: kind}
}
