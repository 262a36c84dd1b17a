package config

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// pos is a place in the YAML document (1-based).
type pos struct{ line, col int }

func nodePos(n *yaml.Node) pos { return pos{n.Line, n.Column} }

// less orders positions in document order; the zero pos (not in the
// document) sorts last.
func (p pos) less(q pos) bool {
	if (p.line == 0) != (q.line == 0) {
		return q.line == 0
	}
	if p.line != q.line {
		return p.line < q.line
	}
	return p.col < q.col
}

// fieldRoles lists the fields only some roles accept, with the reason shown
// to someone who set one on another role. Every other field is accepted by
// every role.
var fieldRoles = []struct {
	path  string
	roles []Role
	why   string
}{
	{"contribute_to_cluster_pool_size", []Role{RoleOwner, RoleUp}, "only owners contribute memory to the pool"},
	{"pool", []Role{RoleOwner, RoleUp}, "only owners hold a pool"},
	{"listen.resp", []Role{RoleOwner, RoleUp}, "only owners serve RESP"},
	{"master", []Role{RoleMaster, RoleUp}, "it configures the master's election"},
	{"network.dpdk", []Role{RoleOwner, RoleUp}, "only owners serve the dpdk transport"},
}

// roleFieldError reports whether path is another role's field, and if so the
// error (without position) to give.
func roleFieldError(path string, role Role) (string, bool) {
	for _, f := range fieldRoles {
		if f.path != path {
			continue
		}
		for _, r := range f.roles {
			if r == role {
				return "", false
			}
		}
		owner := "owner"
		if f.roles[0] == RoleMaster {
			owner = "master"
		}
		return fmt.Sprintf("%s-only field on %s; remove it (%s)", owner, role.article(), f.why), true
	}
	return "", false
}

// schemaField is one YAML key of a struct in the schema.
type schemaField struct {
	name  string
	index int
	typ   reflect.Type
}

var (
	schemaMu    sync.Mutex
	schemaCache = map[reflect.Type][]schemaField{}

	configType   = reflect.TypeOf(Config{})
	sizeType     = reflect.TypeOf(Size(0))
	durationType = reflect.TypeOf(Duration(0))
)

// fieldsOf lists a schema struct's YAML fields in declaration order.
func fieldsOf(t reflect.Type) []schemaField {
	schemaMu.Lock()
	defer schemaMu.Unlock()
	if fs, ok := schemaCache[t]; ok {
		return fs
	}
	var fs []schemaField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fs = append(fs, schemaField{name: name, index: i, typ: f.Type})
	}
	schemaCache[t] = fs
	return fs
}

// decode parses data into a Config, checking it against the schema on the
// way: syntax, one document, a mapping at the top, no unknown or duplicate
// keys, every value of the right shape, sizes and durations that parse, and
// no field of another role. It returns the first problem in document order.
func decode(data []byte, role Role) (*Config, *FieldError) {
	root, ferr := parseDocument(data)
	if ferr != nil {
		return nil, ferr
	}
	w := &walker{role: role, pos: map[string]pos{}}
	if root != nil {
		if root.Kind != yaml.MappingNode && !isNull(root) {
			return nil, errAt(ErrSyntax, nodePos(root), "",
				"the document is %s, not a mapping of fields; write one \"field: value\" per line, e.g. cluster_name: prod", describe(root))
		}
		if ferr := w.walk(root, configType, ""); ferr != nil {
			return nil, ferr
		}
	}
	c := &Config{}
	if ferr := decodeYAML(data, c); ferr != nil {
		return nil, ferr
	}
	c.pos = w.pos
	return c, nil
}

// parseDocument returns the single document's root node, nil for an empty
// document.
func parseDocument(data []byte) (root *yaml.Node, ferr *FieldError) {
	defer func() {
		if r := recover(); r != nil {
			root, ferr = nil, &FieldError{Msg: fmt.Sprintf("invalid YAML: the parser failed (%v); simplify the document", r), Err: ErrSyntax}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		return nil, yamlError(err, ErrSyntax)
	}
	// Later documents are an error unless empty (a trailing "---" left by a
	// template): a config is one document, and nothing may be ignored.
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, yamlError(err, ErrSyntax)
		}
		if len(next.Content) == 0 || isEmpty(next.Content[0]) {
			continue
		}
		return nil, errAt(ErrSyntax, nodePos(next.Content[0]), "",
			"a second YAML document (after a \"---\" separator) holds more settings; a config is one document, so merge them into the first or delete them")
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// walker checks a node tree against the schema and records where each field
// was written.
type walker struct {
	role Role
	pos  map[string]pos
}

// allowedTags are the explicit tags a node may carry, each only on its own
// kind of node: `!!str 123` forces a string. Anything else (!!int on text,
// !!binary, application tags like !secret) is refused rather than given a
// meaning here.
var allowedTags = map[string]yaml.Kind{
	"!!str": yaml.ScalarNode,
	"!!map": yaml.MappingNode,
	"!!seq": yaml.SequenceNode,
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) *FieldError {
	n = resolve(n)
	if kind, ok := allowedTags[n.Tag]; n.Style&yaml.TaggedStyle != 0 && (!ok || kind != n.Kind) {
		return errAt(ErrType, nodePos(n), path, "unsupported YAML tag %s; remove it", quote(n.Tag))
	}
	switch {
	case t == sizeType:
		if ferr := w.scalar(n, path, "a size such as 4GiB"); ferr != nil {
			return ferr
		}
		if _, err := ParseSize(n.Value); err != nil {
			return errAt(ErrType, nodePos(n), path, "%s", err.Error())
		}
		return nil
	case t == durationType:
		if ferr := w.scalar(n, path, "a duration such as 5s"); ferr != nil {
			return ferr
		}
		if _, err := ParseDuration(n.Value); err != nil {
			return errAt(ErrType, nodePos(n), path, "%s", err.Error())
		}
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		return w.scalar(n, path, "a single value")
	case reflect.Bool:
		if ferr := w.scalar(n, path, "true or false"); ferr != nil {
			return ferr
		}
		if v := n.Value; v != "true" && v != "false" {
			return errAt(ErrType, nodePos(n), path, "expected true or false, got %q", v)
		}
		return nil
	case reflect.Slice:
		return w.list(n, t, path)
	case reflect.Map:
		return w.dict(n, t, path)
	case reflect.Struct:
		return w.object(n, t, path)
	}
	// A schema type the walker does not know: a bug here, caught by the
	// schema test, never by a user.
	panic(fmt.Sprintf("config: schema type %v at %q not handled", t, path))
}

func (w *walker) scalar(n *yaml.Node, path, want string) *FieldError {
	if n.Kind != yaml.ScalarNode {
		hint := "write " + lastName(path) + ": <value> on one line"
		if strings.HasSuffix(path, "]") {
			hint = "each entry of the list must be a single value"
		}
		return errAt(ErrType, nodePos(n), path, "expected %s, got %s; %s", want, describe(n), hint)
	}
	if isNull(n) {
		if strings.HasSuffix(path, "]") {
			return errAt(ErrType, nodePos(n), path, "the list entry has no value; give it one or remove it")
		}
		return errAt(ErrType, nodePos(n), path, "has no value; give it one or remove the line to use the default")
	}
	return nil
}

func (w *walker) list(n *yaml.Node, t reflect.Type, path string) *FieldError {
	if n.Kind != yaml.SequenceNode {
		if isNull(n) {
			return errAt(ErrType, nodePos(n), path, "has no value; write [] for an empty list or remove the line")
		}
		return errAt(ErrType, nodePos(n), path,
			"expected a list, got %s; write [a, b] or one \"- item\" per line", describe(n))
	}
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		w.pos[p] = nodePos(resolve(item))
		if ferr := w.walk(item, t.Elem(), p); ferr != nil {
			return ferr
		}
	}
	return nil
}

// dict is a map with free keys (contribute_to_cluster_pool_size.vram). The
// keys' own rules (device indexes) are Validate's business.
func (w *walker) dict(n *yaml.Node, t reflect.Type, path string) *FieldError {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return errAt(ErrType, nodePos(n), path, "expected a mapping of key: value, got %s", describe(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, ferr := w.key(n.Content[i], path, seen)
		if ferr != nil {
			return ferr
		}
		p := join(path, pathKey(key))
		w.pos[p] = nodePos(resolve(n.Content[i]))
		if ferr := w.walk(n.Content[i+1], t.Elem(), p); ferr != nil {
			return ferr
		}
	}
	return nil
}

func (w *walker) object(n *yaml.Node, t reflect.Type, path string) *FieldError {
	if isNull(n) {
		return nil // "network:" with every line under it commented out
	}
	fields := fieldsOf(t)
	if n.Kind != yaml.MappingNode {
		return errAt(ErrType, nodePos(n), path, "expected a mapping of fields (%s), got %s; put its fields on the lines below it, indented",
			strings.Join(w.names(fields, path), ", "), describe(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		keyNode := resolve(n.Content[i])
		key, ferr := w.key(n.Content[i], path, seen)
		if ferr != nil {
			return ferr
		}
		var f *schemaField
		for j := range fields {
			if fields[j].name == key {
				f = &fields[j]
				break
			}
		}
		if f == nil {
			return w.unknown(keyNode, key, fields, path)
		}
		p := join(path, key)
		w.pos[p] = nodePos(keyNode)
		if msg, bad := roleFieldError(p, w.role); bad {
			return errAt(ErrRoleField, nodePos(keyNode), p, "%s", msg)
		}
		if ferr := w.walk(n.Content[i+1], f.typ, p); ferr != nil {
			return ferr
		}
	}
	return nil
}

// key checks one mapping key: a plain scalar, not a merge, not a repeat.
func (w *walker) key(k *yaml.Node, path string, seen map[string]int) (string, *FieldError) {
	k = resolve(k)
	if k.Kind != yaml.ScalarNode || isNull(k) {
		return "", errAt(ErrType, nodePos(k), path, "a key here is %s; keys must be plain names", describe(k))
	}
	if k.Tag == "!!merge" {
		return "", errAt(ErrType, nodePos(k), path, "YAML merge keys (<<) are not supported in a config; write the fields out")
	}
	if first, dup := seen[k.Value]; dup {
		return "", errAt(ErrDuplicate, nodePos(k), join(path, k.Value), "set twice (first on line %d); keep one", first)
	}
	seen[k.Value] = k.Line
	return k.Value, nil
}

func (w *walker) unknown(k *yaml.Node, key string, fields []schemaField, path string) *FieldError {
	names := w.names(fields, path)
	where := "top-level fields"
	if path != "" {
		where = "fields of " + path
	}
	hint := "remove it or check the spelling"
	if s := suggest(key, names); s != "" {
		hint = fmt.Sprintf("did you mean %q?", s)
	}
	return errAt(ErrUnknownField, nodePos(k), join(path, pathKey(key)), "unknown field; %s (known %s: %s)",
		hint, where, strings.Join(names, ", "))
}

// names lists the fields of a struct this role accepts.
func (w *walker) names(fields []schemaField, path string) []string {
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		if _, bad := roleFieldError(join(path, f.name), w.role); !bad {
			out = append(out, f.name)
		}
	}
	return out
}

// suggest returns the known name closest to key when it is plausibly a typo:
// the same once case and separators are ignored ("clusterName",
// "cluster-name"), or at most two edits away.
func suggest(key string, names []string) string {
	fold := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	for _, n := range names {
		if fold(n) == fold(key) {
			return n
		}
	}
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(strings.ToLower(key), n, bestD); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance, or max when it is at least max.
func editDistance(a, b string, max int) int {
	if len(a) > 64 || len(b) > 64 {
		return max
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], max)
}

func resolve(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// isEmpty is a document with nothing in it: an implicit null, not a
// written "~" or "null".
func isEmpty(n *yaml.Node) bool {
	return isNull(n) && n.Value == "" && n.Style&yaml.TaggedStyle == 0 && n.Anchor == ""
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's shape for messages: "a list", "the string \"x\"".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		}
		return "the string " + quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "an unexpected YAML node"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// pathKey renders a key inside a dotted path: as is when it is a plain name,
// quoted otherwise, so a path stays readable and on one line.
func pathKey(k string) string {
	if k != "" && len(k) <= maxQuoted && strings.IndexFunc(k, func(r rune) bool { return r > 0x7f || !isNameByte(byte(r)) }) < 0 {
		return k
	}
	return quote(k)
}

func lastName(path string) string {
	return path[strings.LastIndexByte(path, '.')+1:]
}

// sortedKeys returns a map's keys in order, for deterministic iteration.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		// Device indexes sort numerically when they are numbers.
		a, aerr := strconv.ParseUint(keys[i], 10, 64)
		b, berr := strconv.ParseUint(keys[j], 10, 64)
		if aerr == nil && berr == nil && a != b {
			return a < b
		}
		return keys[i] < keys[j]
	})
	return keys
}
