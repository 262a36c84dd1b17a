package resp

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// toolLimit bounds one run of a Redis tool: a guard against a hang, not a
// timing assertion.
const toolLimit = 2 * time.Minute

// redisTool returns the path of a Redis command-line tool (Debian's
// redis-tools), skipping the test when it is not installed.
func redisTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install redis-tools)", name)
	}
	return path
}

// runTool runs bin with args and stdin, and returns its standard output.
func runTool(t *testing.T, stdin []byte, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %.2000s\nstderr: %.2000s", bin, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func hostPort(s *Server) []string {
	return []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port(s.Addr()))}
}

func TestRedisCLI(t *testing.T) {
	bin := redisTool(t, "redis-cli")
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	cli := func(args ...string) string {
		t.Helper()
		return strings.TrimSuffix(runTool(t, nil, bin, append(hostPort(srv), args...)...), "\n")
	}
	cliIn := func(stdin []byte, args ...string) string {
		t.Helper()
		return strings.TrimSuffix(runTool(t, stdin, bin, append(hostPort(srv), args...)...), "\n")
	}

	require.Equal(t, "PONG", cli("PING"))
	require.Equal(t, "OK", cli("SET", "foo", "bar"))
	require.Equal(t, "bar", cli("GET", "foo"))
	require.Equal(t, "", cli("GET", "missing"))
	require.Equal(t, "3", cli("STRLEN", "foo"))
	require.Equal(t, "1", cli("EXISTS", "foo", "missing"))
	require.Equal(t, "OK", cli("SET", "gone", "x"))
	require.Equal(t, "2", cli("DEL", "gone", "foo", "missing"))
	require.Equal(t, "0", cli("EXISTS", "foo"))

	require.Equal(t, "OK", cli("SET", "t", "v"))
	require.Equal(t, "-1", cli("TTL", "t"))
	require.Equal(t, "1", cli("EXPIRE", "t", "100"))
	ttl, err := strconv.Atoi(cli("TTL", "t"))
	require.NoError(t, err)
	require.True(t, ttl > 0 && ttl <= 100, "TTL %d", ttl)
	require.Equal(t, "-2", cli("TTL", "missing"))
	require.Equal(t, "ERR invalid expire time in 'set' command", strings.TrimSpace(cli("SET", "t", "v", "PX", "10")))

	var users []string
	for i := range 50 {
		k := fmt.Sprintf("user:%d", i)
		users = append(users, k)
		require.Equal(t, "OK", cli("SET", k, "u"))
	}
	// SCAN by hand: the first line is the next cursor, then the keys.
	var scanned []string
	for cursor := "0"; ; {
		lines := strings.Split(cli("SCAN", cursor, "MATCH", "user:*", "COUNT", "10"), "\n")
		cursor = lines[0]
		for _, k := range lines[1:] {
			if k != "" {
				scanned = append(scanned, k)
			}
		}
		if cursor == "0" {
			break
		}
	}
	slices.Sort(scanned)
	slices.Sort(users)
	require.Equal(t, users, scanned)
	// redis-cli's own SCAN loop.
	scanned = strings.Split(cli("--scan", "--pattern", "user:*"), "\n")
	slices.Sort(scanned)
	require.Equal(t, users, scanned)

	require.Equal(t, "51", cli("DBSIZE"))
	info := cli("INFO")
	require.Contains(t, info, "redis_version:7.0.0")
	require.Contains(t, info, "db0:keys=51,expires=1,avg_ttl=0")
	require.Contains(t, cli("INFO", "memory"), "used_memory:")

	// A value of several MiB, from stdin (-x) and back.
	big := make([]byte, 5*mib+3)
	r := rand.New(rand.NewPCG(3, 4))
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range big {
		big[i] = letters[r.IntN(len(letters))]
	}
	require.Equal(t, "OK", cliIn(big, "-x", "SET", "big"))
	require.Equal(t, string(big), cli("GET", "big"))
	require.Equal(t, strconv.Itoa(len(big)), cli("STRLEN", "big"))
	got, _, err := st.GetCopy("big", nil)
	require.NoError(t, err)
	require.True(t, bytes.Equal(big, got), "the store holds another value than redis-cli sent")
}

// TestRedisCLIPipe: mass insertion with redis-cli --pipe, checked by DBSIZE
// and in the store.
func TestRedisCLIPipe(t *testing.T) {
	bin := redisTool(t, "redis-cli")
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	const n = 10_000
	var in bytes.Buffer
	for i := range n {
		in.Write(encode([]string{"SET", fmt.Sprintf("mass:%d", i), fmt.Sprintf("value-%d", i)}))
	}
	out := runTool(t, in.Bytes(), bin, append(hostPort(srv), "--pipe")...)
	t.Logf("redis-cli --pipe: %s", strings.TrimSpace(out))
	require.Contains(t, out, fmt.Sprintf("errors: 0, replies: %d", n))
	require.Equal(t, strconv.Itoa(n)+"\n", runTool(t, nil, bin, append(hostPort(srv), "DBSIZE")...))
	require.Equal(t, n, st.Len())
	for _, i := range []int{0, 1234, n - 1} {
		v, _, err := st.GetCopy(fmt.Sprintf("mass:%d", i), nil)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("value-%d", i), string(v))
	}
}

// TestRedisBenchmark runs the real redis-benchmark against the server, with
// and without pipelining. It checks that the runs complete and that the
// store then holds the benchmark's key; the rates are only logged.
func TestRedisBenchmark(t *testing.T) {
	bin := redisTool(t, "redis-benchmark")
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	for _, pipeline := range []string{"16", "1"} {
		args := append(hostPort(srv), "-t", "set,get", "-n", "20000", "-c", "20", "-P", pipeline, "-q")
		out := runTool(t, nil, bin, args...)
		var results []string
		for _, l := range strings.FieldsFunc(out, func(r rune) bool { return r == '\n' || r == '\r' }) {
			if strings.Contains(l, "requests per second") {
				results = append(results, strings.TrimSpace(l))
			}
		}
		t.Logf("redis-benchmark -P %s:\n%s", pipeline, strings.Join(results, "\n"))
		require.Len(t, results, 2, "output:\n%s", out)
		require.True(t, strings.HasPrefix(results[0], "SET: "), results[0])
		require.True(t, strings.HasPrefix(results[1], "GET: "), results[1])
		require.NotContains(t, strings.ToLower(out), "error")

		// Without -r every request uses this one key; the value is 3 bytes
		// (-d's default) of redis-benchmark's filler.
		v, _, err := st.GetCopy("key:__rand_int__", nil)
		require.NoError(t, err)
		require.Len(t, v, 3)
		require.Equal(t, 1, st.Len())
		require.NoError(t, st.Remove("key:__rand_int__"))
	}
}
