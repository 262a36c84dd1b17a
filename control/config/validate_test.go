package config

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:2379":             "http://10.0.0.1:2379",
		"etcd-1:2379":               "http://etcd-1:2379",
		"etcd-1.internal.:2379":     "http://etcd-1.internal.:2379",
		"localhost:02379":           "http://localhost:2379",
		"http://10.0.0.1:2379":      "http://10.0.0.1:2379",
		"http://10.0.0.1:2379/":     "http://10.0.0.1:2379",
		"HTTP://etcd:2379":          "http://etcd:2379",
		"https://etcd.example:2379": "https://etcd.example:2379",
		"[::1]:2379":                "http://[::1]:2379",
		"https://[fd00::1]:2379":    "https://[fd00::1]:2379",
		"[fe80::1%eth0]:2379":       "http://[fe80::1%eth0]:2379",
		"etcd_1:2379":               "http://etcd_1:2379",
		"1.2.3.4:65535":             "http://1.2.3.4:65535",
		"http://a:1":                "http://a:1",
	} {
		got, err := NormalizeEndpoint(in)
		if err != nil || got != want {
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
		// Normalizing is idempotent.
		if again, err := NormalizeEndpoint(got); err != nil || again != got {
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want it unchanged", got, again, err)
		}
	}
}

func TestNormalizeEndpointErrors(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "empty endpoint",
		"etcd-1":                   `"etcd-1" has no port; add one (etcd listens on 2379 by default), e.g. "etcd-1:2379"`,
		"http://etcd-1":            `has no port`,
		"https://etcd-1/":          `has no port`,
		"etcd-1:":                  `port "" is not a number from 1 to 65535`,
		"etcd-1:0":                 `port "0" is not a number`,
		"etcd-1:65536":             `port "65536" is not a number`,
		"etcd-1:http":              `port "http" is not a number`,
		"etcd-1:-1":                `port "-1" is not a number`,
		"etcd-1:2379/v3":           `has a path or query`,
		"http://etcd-1:2379/v3":    `has a path or query`,
		"http://etcd-1:2379?x=1":   `has a path or query`,
		"http://etcd-1:2379#frag":  `has a path or query`,
		"unix:///run/etcd.sock":    `scheme "unix" is not supported`,
		"grpc://etcd-1:2379":       `scheme "grpc" is not supported`,
		"://etcd-1:2379":           `scheme "" is not supported`,
		"http://user:pw@etcd:2379": `contains user info`,
		":2379":                    `has no host`,
		"http://:2379":             `has no host`,
		"::1:2379":                 `put an IPv6 address in brackets`,
		"etcd 1:2379":              `contains spaces`,
		" etcd-1:2379":             `contains spaces`,
		"et/cd:2379":               `has a path or query`,
		"-etcd:2379":               `host "-etcd" is not a valid hostname or IP address`,
		"999.1.1.1:2379":           `host "999.1.1.1" is not a valid`,
		"a..b:2379":                `host "a..b" is not a valid`,
		"[::1]2379":                `is not host:port`,
	} {
		_, err := NormalizeEndpoint(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NormalizeEndpoint(%q) = %v, want an error containing %q", in, err, want)
		} else if strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("NormalizeEndpoint(%q): multi-line error", in)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "0", "prod", "Prod-1", "a.b_c-d", "x..y", "9lives", strings.Repeat("n", MaxNameLen)} {
		if err := ValidName("cluster_name", ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"":                                `config: cluster_name: must not be empty; use 1-63 of [A-Za-z0-9._-]`,
		".":                               `config: cluster_name: "." must start with a letter or digit`,
		"..":                              `config: cluster_name: ".." must start with a letter or digit`,
		".hidden":                         `must start with a letter or digit`,
		"-x":                              `must start with a letter or digit`,
		"_x":                              `must start with a letter or digit`,
		"a/b":                             `config: cluster_name: "a/b" has characters unsafe for paths and etcd keys; use 1-63 of [A-Za-z0-9._-]`,
		"a b":                             `unsafe for paths`,
		"a:b":                             `unsafe for paths`,
		"a\x00b":                          `"a\x00b" has characters unsafe`,
		"a\nb":                            `"a\nb" has characters unsafe`,
		"ünï":                             `unsafe for paths`,
		"a*":                              `unsafe for paths`,
		strings.Repeat("n", MaxNameLen+1): `is 64 bytes long; use at most 63`,
	} {
		err := ValidName("cluster_name", in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidName(%q) = %v, want an error containing %q", in, err, want)
			continue
		}
		if strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("ValidName(%q): multi-line error %q", in, err)
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "cluster_name" || fe.Line != 0 {
			t.Errorf("ValidName(%q) = %#v, want a *FieldError for cluster_name", in, err)
		}
	}
}

func TestFieldErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{Msg: "m"}, "config: m"},
		{FieldError{Field: "a.b", Msg: "m"}, "config: a.b: m"},
		{FieldError{Line: 3, Field: "a.b", Msg: "m"}, "config line 3: a.b: m"},
		{FieldError{Line: 3, Msg: "m"}, "config line 3: m"},
		{FieldError{File: "/etc/f.yaml", Line: 3, Field: "a", Msg: "m"}, "config /etc/f.yaml line 3: a: m"},
		{FieldError{File: "/etc/f.yaml", Msg: "m"}, "config /etc/f.yaml: m"},
		{FieldError{File: "odd\nname", Msg: "two\nlines\r\n"}, `config odd\nname: two\nlines\n`},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.e, got, tc.want)
		}
	}
	if !errors.Is(&FieldError{Err: ErrRequired}, ErrRequired) {
		t.Errorf("FieldError does not unwrap to its kind")
	}
}

func TestQuoteTruncates(t *testing.T) {
	long := strings.Repeat("é", 100)
	got := quote(long)
	if want := `"` + strings.Repeat("é", maxQuoted) + `"…`; got != want {
		t.Errorf("quote = %s", got)
	}
}

func TestErrorKinds(t *testing.T) {
	for doc, kind := range map[string]error{
		"a: [":                              ErrSyntax,
		"- a\n":                             ErrSyntax,
		"a: 1\n---\nb: 2\n":                 ErrSyntax,
		"netwrok: {}\n":                     ErrUnknownField,
		"lease: {ttl: 5s, ttl: 6s}\n":       ErrDuplicate,
		"cluster_name: [a]\n":               ErrType,
		"lease: {ttl: 5}\n":                 ErrType,
		"cluster_name: \"\"\n":              ErrRequired,
		"network: {poll_mode: x}\n":         ErrInvalid,
		"network: {transports: [tcp, tcp]}": ErrDuplicate,
		"contribute_to_cluster_pool_size: &a {vram: *a}": ErrType, // a cycle ends at a leaf
		"cluster_name: !!int abc\n":                      ErrType,
		"network: !!seq {}\n":                            ErrType,
		"? [a]\n: b\n":                                   ErrType,
		"cluster_name: x\n---\n~\n":                      ErrSyntax,
	} {
		_, err := Parse([]byte(doc), RoleUp)
		if !errors.Is(err, kind) {
			t.Errorf("%q: got %v, want kind %v", doc, err, kind)
		}
	}
	_, err := Parse([]byte("master: {}\n"), RoleOwner)
	if !errors.Is(err, ErrRoleField) {
		t.Errorf("master on owner: got %v, want ErrRoleField", err)
	}
}

func TestValidHost(t *testing.T) {
	for _, h := range []string{"a", "a-b", "a.b.c", "A1", "10.0.0.1", "::1", "fe80::1%eth0", "host.", "x_y", "1a.example"} {
		if !validHost(h) {
			t.Errorf("validHost(%q) = false", h)
		}
	}
	for _, h := range []string{"", ".", "a..b", "-a", "a-", "a b", "a/b", "999.1.1.1", "1.2.3", strings.Repeat("a", 64), "[::1]"} {
		if validHost(h) {
			t.Errorf("validHost(%q) = true", h)
		}
	}
}
