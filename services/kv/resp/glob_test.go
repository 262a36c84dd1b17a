package resp

import (
	"bufio"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var globTests = []struct {
	pattern, s string
	want       bool
}{
	{"", "", true},
	{"", "a", false},
	{"*", "", true},
	{"*", "anything", true},
	{"**", "x", true},
	{"a*", "a", true},
	{"a*", "abc", true},
	{"a*", "ba", false},
	{"*a", "bca", true},
	{"*a", "ab", false},
	{"a*b*c", "aXXbYYc", true},
	{"a*b*c", "aXXbYY", false},
	{"*a*b", "xaybzb", true},
	{"?", "a", true},
	{"?", "", false},
	{"?", "ab", false},
	{"a?c", "abc", true},
	{"a?c", "ac", false},
	{"user:*", "user:1", true},
	{"user:?", "user:10", false},
	{"[abc]", "b", true},
	{"[abc]", "d", false},
	{"[^abc]", "d", true},
	{"[^abc]", "a", false},
	{"[a-c]x", "bx", true},
	{"[a-c]x", "dx", false},
	{"[c-a]", "b", true}, // a reversed range is the same range
	{"[^a-c]", "b", false},
	{"[a-c0-9]", "5", true},
	{"[]", "a", false}, // an empty class matches nothing
	{"[]a]", "a", false},
	{"[\\]]", "]", true},
	{"[\\^]", "^", true},
	{"[a\\-z]", "-", true},
	{"[a\\-z]", "b", false},
	{"[abc", "b", true}, // an unterminated class ends with the pattern
	{"[abc", "d", false},
	{"[", "a", false},
	{"[a-", "-", true},
	{"\\*", "*", true},
	{"\\*", "a", false},
	{"\\?", "?", true},
	{"\\[a]", "[a]", true},
	{"a\\", "a\\", true}, // a trailing lone backslash is literal
	{"\\\\", "\\", true},
	{"*\\*", "abc*", true},
	{"*\\*", "abc", false},
	{"h[ae]llo", "hello", true},
	{"h[ae]llo", "hallo", true},
	{"h[ae]llo", "hillo", false},
	{"h*llo", "heeeello", true},
	{"*.txt", "a.b.txt", true},
	{"A*", "abc", false}, // case-sensitive
	{"\xff*", "\xff\x00", true},
	// Backtracking stays polynomial on patterns that are exponential
	// for naive recursion.
	{strings.Repeat("a*", 30) + "b", strings.Repeat("a", 100), false},
	{strings.Repeat("*a", 30), strings.Repeat("a", 100), true},
}

func TestGlobMatch(t *testing.T) {
	for _, tt := range globTests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// TestGlobMatchesRedis compares globMatch with a real redis-server's KEYS on
// the table's patterns and on random ones, when redis-server is installed.
func TestGlobMatchesRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	var nc net.Conn
	waitFor(t, func() bool {
		nc, err = net.Dial("unix", sock)
		return err == nil
	})
	defer nc.Close()
	c := &client{nc: nc, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc)}

	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab-^]\\[*?"
	randStr := func(n int) string {
		b := make([]byte, r.IntN(n+1))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	keys := map[string]bool{}
	for range 300 {
		if k := randStr(5); k != "" {
			keys[k] = true
		}
	}
	for _, k := range []string{"a", "b", "ab", "ba", "aab", "-", "]", "^", "\\", "[", "*", "?"} {
		keys[k] = true
	}
	for _, tt := range globTests {
		if tt.s != "" {
			keys[tt.s] = true
		}
	}
	c.send("FLUSHALL")
	for k := range keys {
		c.send("SET", k, "1")
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	for range len(keys) + 1 {
		if _, err := c.read(); err != nil {
			t.Fatal(err)
		}
	}
	var patterns []string
	for _, tt := range globTests {
		patterns = append(patterns, tt.pattern)
	}
	for range 2000 {
		patterns = append(patterns, randStr(6))
	}
	for _, p := range patterns {
		rep := c.must(t, "KEYS", p)
		var got, want []string
		for _, e := range rep.arr {
			want = append(want, e.str)
		}
		for k := range keys {
			if globMatch(p, k) {
				got = append(got, k)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("pattern %q: globMatch picks %q, redis-server %q", p, got, want)
		}
	}
}
