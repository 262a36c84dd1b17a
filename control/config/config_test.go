package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expectations in testdata/*.yaml from the current output")

func TestMain(m *testing.M) {
	// Defaults that read the hostname must not depend on the machine.
	hostname = func() (string, error) { return "testhost", nil }
	os.Exit(m.Run())
}

// A case file is a YAML config whose leading comments say how to parse it and
// what must come out:
//
//	# free text saying what the case is about
//	# role: owner
//	# want: ok                 (or the exact, single-line error)
//	<the config>
//	# --- resolved (go test -rewrite) ---
//	# cluster_name = "prod"    (ok cases: every field after defaults and Validate)
//
// The whole file, comments included, is what Parse sees, so "line N" in a
// want line is line N of the file. `go test ./control/config -rewrite`
// rewrites the want lines and resolved blocks from the current output.
const (
	roleHeader     = "# role: "
	wantHeader     = "# want: "
	resolvedMarker = "# --- resolved (go test -rewrite) ---"
	wantOK         = "ok"
)

type caseFile struct {
	path     string
	role     Role
	want     string
	resolved string // the block after resolvedMarker, "" if none
	body     string // the file up to resolvedMarker
}

func readCase(t *testing.T, path string) caseFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cf := caseFile{path: path, body: string(data)}
	if i := strings.Index(cf.body, resolvedMarker+"\n"); i >= 0 {
		cf.resolved = cf.body[i+len(resolvedMarker)+1:]
		cf.body = cf.body[:i]
	}
	for _, line := range strings.Split(cf.body, "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		if v, ok := strings.CutPrefix(line, roleHeader); ok {
			cf.role = Role(v)
		}
		if v, ok := strings.CutPrefix(line, wantHeader); ok {
			cf.want = v
		}
	}
	if cf.role == "" || cf.want == "" {
		t.Fatalf("%s: the leading comments need %q and %q lines", path, roleHeader, wantHeader)
	}
	return cf
}

func (cf caseFile) write(t *testing.T, want, resolved string) {
	t.Helper()
	body := strings.Replace(cf.body, wantHeader+cf.want+"\n", wantHeader+want+"\n", 1)
	if resolved != "" {
		body += resolvedMarker + "\n" + resolved
	}
	if err := os.WriteFile(cf.path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCases(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 30 {
		t.Fatalf("found %d case files in testdata, want at least 30", len(paths))
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(t *testing.T) {
			cf := readCase(t, path)
			c, err := Parse([]byte(cf.body+cf.resolved), cf.role)
			got, resolved := wantOK, ""
			if err != nil {
				got = err.Error()
				checkError(t, err, yamlLines([]byte(cf.body+cf.resolved)))
			} else {
				resolved = dump(c)
				checkOK(t, c, cf.role, resolved)
			}
			if *rewrite {
				cf.write(t, got, resolved)
				return
			}
			if got != cf.want {
				t.Errorf("%s:\n got: %s\nwant: %s", path, got, cf.want)
			}
			if resolved != cf.resolved {
				t.Errorf("%s: resolved config differs (run with -rewrite and review the diff)\n got:\n%s\nwant:\n%s", path, resolved, cf.resolved)
			}
		})
	}
}

// checkError holds for every error Parse returns.
func checkError(t *testing.T, err error, lines int) {
	t.Helper()
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %T is not a *FieldError: %v", err, err)
	}
	if fe.Line < 0 || fe.Line > lines {
		t.Errorf("error line %d is outside the %d-line document", fe.Line, lines)
	}
	kinds := []error{ErrSyntax, ErrUnknownField, ErrDuplicate, ErrType, ErrRequired, ErrRoleField, ErrInvalid, ErrRole}
	found := false
	for _, k := range kinds {
		found = found || errors.Is(err, k)
	}
	if !found {
		t.Errorf("error %q has no kind (Err = %v)", msg, fe.Err)
	}
}

// checkOK holds for every Config Parse accepts.
func checkOK(t *testing.T, c *Config, role Role, resolved string) {
	t.Helper()
	if c.NodeID != c.MemberID {
		t.Errorf("node_id %q != member_id %q after Validate", c.NodeID, c.MemberID)
	}
	if !reflect.DeepEqual(c.EtcdURLs(), append([]string{}, c.EtcdEndpoints...)) {
		t.Errorf("EtcdURLs() = %q, endpoints %q: Validate did not normalize in place", c.EtcdURLs(), c.EtcdEndpoints)
	}
	// Validate is idempotent: a valid Config stays valid and unchanged.
	if err := c.Validate(role); err != nil {
		t.Errorf("second Validate: %v", err)
	}
	c.ApplyDefaults(role)
	if again := dump(c); again != resolved {
		t.Errorf("ApplyDefaults+Validate changed a valid config:\n%s\nthen\n%s", resolved, again)
	}
}

// dump renders every field as "# path = value", one per line, in schema
// order: the resolved block of an ok case.
func dump(c *Config) string {
	var b strings.Builder
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Type() {
		case sizeType, durationType:
			fmt.Fprintf(&b, "# %s = %v\n", path, v.Interface())
			return
		}
		switch v.Kind() {
		case reflect.Struct:
			for _, f := range fieldsOf(v.Type()) {
				walk(v.Field(f.index), join(path, f.name))
			}
		case reflect.Map:
			if v.Len() == 0 {
				fmt.Fprintf(&b, "# %s = {}\n", path)
			}
			m := v.Interface().(map[string]Size)
			for _, k := range sortedKeys(m) {
				fmt.Fprintf(&b, "# %s.%s = %v\n", path, k, m[k])
			}
		case reflect.Slice:
			fmt.Fprintf(&b, "# %s = %q\n", path, v.Interface())
		case reflect.Bool:
			fmt.Fprintf(&b, "# %s = %v\n", path, v.Bool())
		default:
			fmt.Fprintf(&b, "# %s = %q\n", path, v.Interface())
		}
	}
	walk(reflect.ValueOf(*c), "")
	return b.String()
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "owner.yaml")
	writeFile(t, good, "cluster_name: prod\ninstance_key: a\netcd_endpoints: [\"e:2379\"]\ncontribute_to_cluster_pool_size: {dram: 1GiB}\n")
	c, err := Load(good, RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterName != "prod" || c.ContributeToClusterPoolSize.DRAM != GiB {
		t.Errorf("loaded %+v", c)
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "cluster_name: prod\nnetwrok: {}\n")
	_, err = Load(bad, RoleOwner)
	wantErr := "config " + bad + ` line 2: netwrok: unknown field; did you mean "network"?`
	if err == nil || !strings.HasPrefix(err.Error(), wantErr) {
		t.Errorf("Load(bad) = %v, want prefix %q", err, wantErr)
	}

	missing := filepath.Join(dir, "nope.yaml")
	_, err = Load(missing, RoleOwner)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error matching os.ErrNotExist", err)
	}
	if err == nil || !strings.HasPrefix(err.Error(), "config "+missing+": cannot read the file: ") {
		t.Errorf("Load(missing) = %v, want it to name the path", err)
	}

	_, err = Load(dir, RoleOwner) // a directory
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Load(dir) = %v, want an error naming the path", err)
	}

	big := filepath.Join(dir, "big.yaml")
	writeFile(t, big, "# "+strings.Repeat("x", MaxConfigSize)+"\n")
	if _, err = Load(big, RoleUp); !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v, want a size error", err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseRejectsUnknownRole(t *testing.T) {
	for _, r := range []Role{"", "Owner", "client"} {
		if _, err := Parse(nil, r); !errors.Is(err, ErrRole) {
			t.Errorf("Parse(role %q) = %v, want ErrRole", r, err)
		}
		if err := Default(RoleUp).Validate(r); !errors.Is(err, ErrRole) {
			t.Errorf("Validate(role %q) = %v, want ErrRole", r, err)
		}
	}
	for _, r := range Roles {
		if got, err := ParseRole(string(r)); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	if _, err := ParseRole("client"); !errors.Is(err, ErrRole) {
		t.Errorf("ParseRole(client) = %v, want ErrRole", err)
	}
}

// minimal fills what Default leaves empty for role.
func minimal(role Role) *Config {
	c := Default(role)
	if role != RoleUp {
		c.ClusterName = "prod"
		c.InstanceKey = "host-a"
		c.EtcdEndpoints = []string{"10.0.0.1:2379"}
	}
	if role == RoleOwner {
		c.ContributeToClusterPoolSize.DRAM = 4 * GiB
	}
	return c
}

func TestDefaultsValidateForEveryRole(t *testing.T) {
	for _, role := range Roles {
		c := minimal(role)
		if err := c.Validate(role); err != nil {
			t.Errorf("%s: defaults + required fields: %v", role, err)
		}
		// The same through YAML: an empty document for up, the required
		// fields for the others.
		doc := ""
		if role != RoleUp {
			doc = "cluster_name: prod\ninstance_key: host-a\netcd_endpoints: [10.0.0.1:2379]\n"
		}
		if role == RoleOwner {
			doc += "contribute_to_cluster_pool_size: {dram: 4GiB}\n"
		}
		p, err := Parse([]byte(doc), role)
		if err != nil {
			t.Fatalf("%s: Parse: %v", role, err)
		}
		if dump(p) != dump(c) {
			t.Errorf("%s: Parse and Default+Validate disagree:\n%s\nvs\n%s", role, dump(p), dump(c))
		}
	}
}

func TestDefaultByRole(t *testing.T) {
	up := Default(RoleUp)
	if up.ClusterName != "fluxon" || up.InstanceKey != "testhost-up" || up.Listen.RESP != DefaultUpRESP || up.ContributeToClusterPoolSize.DRAM != 256*MiB {
		t.Errorf("Default(up) = %+v", up)
	}
	ext := Default(RoleExternal)
	if ext.Network.PollMode != PollEventDriven || ext.Network.TCPReactorMode != PollEventDriven {
		t.Errorf("external poll modes = %q/%q, want event_driven", ext.Network.PollMode, ext.Network.TCPReactorMode)
	}
	if ext.Pool.SegmentSize != 0 || ext.Listen.RESP != "" || ext.Master.ElectionTTL != 0 || ext.Listen.GRPC != "" {
		t.Errorf("Default(external) fills another role's fields: %+v", ext)
	}
	m := Default(RoleMaster)
	if m.Master.ElectionTTL != DefaultElectionTTL || m.Pool.SegmentSize != 0 || m.Listen.Transport != "" {
		t.Errorf("Default(master) = %+v", m)
	}
	o := Default(RoleOwner)
	if o.ClusterName != "" || o.InstanceKey != "" || o.ContributeToClusterPoolSize.DRAM != 0 || o.Listen.RESP != "" || o.Pool.SegmentSize != DefaultSegmentSize {
		t.Errorf("Default(owner) = %+v", o)
	}
	// Defaults never overwrite.
	o.Network.PollMode = PollEventDriven
	o.ApplyDefaults(RoleOwner)
	if o.Network.PollMode != PollEventDriven {
		t.Errorf("ApplyDefaults overwrote poll_mode")
	}
}

func TestUpInstanceKeySanitizesHostname(t *testing.T) {
	defer func(h func() (string, error)) { hostname = h }(hostname)
	for host, want := range map[string]string{
		"node-1.example.com":    "node-1.example.com-up",
		"ÜBER host":             "BER-host-up",
		"-x":                    "x-up",
		"":                      "fluxon-up",
		strings.Repeat("h", 80): strings.Repeat("h", MaxNameLen-3) + "-up",
	} {
		hostname = func() (string, error) { return host, nil }
		got := Default(RoleUp).InstanceKey
		if got != want {
			t.Errorf("hostname %q: instance_key %q, want %q", host, got, want)
		}
		if err := ValidName("instance_key", got); err != nil {
			t.Errorf("hostname %q: %v", host, err)
		}
	}
	hostname = func() (string, error) { return "", errors.New("no hostname") }
	if got := Default(RoleUp).InstanceKey; got != "fluxon-up" {
		t.Errorf("no hostname: instance_key %q", got)
	}
}

// A Config built in code has no document: a field counts as set when it is
// non-zero.
func TestValidateConfigBuiltInCode(t *testing.T) {
	c := minimal(RoleExternal)
	c.Pool.SegmentSize = 16 * MiB
	err := c.Validate(RoleExternal)
	want := "config: pool: owner-only field on an external; remove it (only owners hold a pool)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}

	c = minimal(RoleOwner)
	c.Master.ElectionTTL = DefaultElectionTTL
	if err := c.Validate(RoleOwner); !errors.Is(err, ErrRoleField) {
		t.Errorf("master.* on an owner: %v", err)
	}

	c = minimal(RoleOwner)
	c.NodeID, c.MemberID = "n-1", "other"
	if err := c.Validate(RoleOwner); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Errorf("member_id mismatch: %v", err)
	}

	c = minimal(RoleOwner)
	c.MemberID = "m-1"
	if err := c.Validate(RoleOwner); err != nil || c.NodeID != "m-1" {
		t.Errorf("member_id alone: %v, node_id %q", err, c.NodeID)
	}

	c = minimal(RoleOwner)
	c.Listen.Transport = "0.0.0.0:7000"
	if err := c.Validate(RoleOwner); err != nil || c.Network.AdvertiseAddress != "testhost" {
		t.Errorf("wildcard listen: %v, advertise %q", err, c.Network.AdvertiseAddress)
	}
}

// Errors come in document order, whatever order the checks run in.
func TestFirstErrorInDocumentOrder(t *testing.T) {
	doc := `network:
  poll_mode: fast
cluster_name: "a/b"
`
	_, err := Parse([]byte(doc), RoleMaster)
	want := `config line 2: network.poll_mode: "fast" is not a poll mode; use busy_poll (lowest latency, spins a core) or event_driven`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// The schema walk must know every type in Config; a new field of a new type
// would otherwise panic on the first document that sets it.
func TestWalkerCoversSchema(t *testing.T) {
	var visit func(t reflect.Type, path string)
	seen := 0
	visit = func(typ reflect.Type, path string) {
		if typ == sizeType || typ == durationType {
			seen++
			return
		}
		switch typ.Kind() {
		case reflect.Struct:
			for _, f := range fieldsOf(typ) {
				visit(f.typ, join(path, f.name))
			}
		case reflect.String, reflect.Bool:
			seen++
		case reflect.Slice:
			if typ.Elem().Kind() != reflect.String {
				t.Errorf("%s: list of %v not handled by the walker", path, typ.Elem())
			}
			seen++
		case reflect.Map:
			if typ.Key().Kind() != reflect.String || typ.Elem() != sizeType {
				t.Errorf("%s: map %v not handled by dump", path, typ)
			}
			seen++
		default:
			t.Errorf("%s: kind %v not handled by the walker", path, typ.Kind())
		}
	}
	visit(configType, "")
	if seen < 20 {
		t.Errorf("visited %d leaves, the schema has more", seen)
	}
}

// The yaml.v3 KnownFields decode is a safety net behind the walk; its errors
// must come out in the same shape.
func TestDecodeYAMLSafetyNet(t *testing.T) {
	var c Config
	ferr := decodeYAML([]byte("cluster_name: x\nbogus: 1\n"), &c)
	if ferr == nil || ferr.Line != 2 || !strings.Contains(ferr.Msg, "bogus") || !errors.Is(ferr, ErrType) {
		t.Errorf("decodeYAML = %#v", ferr)
	}
}

// yaml.v3 numbers its scanner's errors from 1 and its parser's from 0; the
// line we report must be the real one either way.
func TestSyntaxErrorLines(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		line int
	}{
		{"a: [1, 2\n", 2}, // parser: at the end of the input
		{"cluster_name: x\netcd_endpoints: [a:1, b:2\nk: v\n", 2}, // parser: the line the list opens on
		{"cluster_name: x\n  bad: indent\n", 2},                   // scanner
		{"network:\n\tpoll_mode: x\n", 2},                         // scanner: tab
		{"a: b\n- c\n", 2},                                        // parser: block collection
		{"a: \"unterminated\n", 2},                                // scanner: at the end of the input
		{"k: [1,\n  2\n", 3},                                      // parser: at the end of the input
		{"a: 1\nb: c: d\n", 2},                                    // scanner: mapping in a plain scalar
		{"x: 1\ny: {a: 1\n", 2},                                   // parser: flow mapping
	} {
		_, err := Parse([]byte(tc.doc), RoleUp)
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: got %v, want a syntax error", tc.doc, err)
			continue
		}
		if fe.Line != tc.line {
			t.Errorf("%q: line %d, want %d (%v)", tc.doc, fe.Line, tc.line, err)
		}
	}
}

// The examples in docs/config.md are configs that load, each for the role
// named by the heading above it.
func TestDocsExamples(t *testing.T) {
	data, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var role Role
	n := 0
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		if h, ok := strings.CutPrefix(lines[i], "### "); ok {
			role, _ = ParseRole(h)
			continue
		}
		if lines[i] != "```yaml" || role == "" {
			continue
		}
		var block []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			block = append(block, lines[i])
		}
		if _, err := Parse([]byte(strings.Join(block, "\n")), role); err != nil {
			t.Errorf("docs/config.md example for %s: %v", role, err)
		}
		n++
		role = ""
	}
	if n != len(Roles) {
		t.Errorf("found %d examples in docs/config.md, want one per role (%d)", n, len(Roles))
	}
}
