package resp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/services/kv"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestRepliesComeFromTheStore: a value put through kv is read by GET, a SET
// is visible through kv, and large values take the reservation path (read
// from the socket straight into the pool) both ways.
func TestRepliesComeFromTheStore(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.Addr())
	ctx := context.Background()

	_, err := st.Put(ctx, "from-kv", []byte("written by kv"), kv.PutOptions{})
	require.NoError(t, err)
	require.Equal(t, "written by kv", c.must(t, "GET", "from-kv").str)

	require.Equal(t, "+OK", c.must(t, "SET", "from-resp", "written over RESP").String())
	got, _, err := st.GetCopy("from-resp", nil)
	require.NoError(t, err)
	require.Equal(t, "written over RESP", string(got))

	for _, n := range []int{directSetMin - 1, directSetMin, 3*mib + 17} {
		key := fmt.Sprintf("big-%d", n)
		val := randomBytes(uint64(n), n)
		require.Equal(t, "+OK", c.must(t, "SET", key, string(val)).String(), "SET of %d bytes", n)
		got, _, err := st.GetCopy(key, nil)
		require.NoError(t, err)
		require.True(t, bytes.Equal(val, got), "value of %d bytes differs in the store", n)
		require.Equal(t, string(val), c.must(t, "GET", key).str)
		require.EqualValues(t, n, c.must(t, "STRLEN", key).n)
	}

	// A large value with options goes through memory, and the options hold.
	val := randomBytes(7, 2*mib)
	require.Equal(t, "+OK", c.must(t, "SET", "big-ex", string(val), "EX", "100").String())
	require.EqualValues(t, 100, c.must(t, "TTL", "big-ex").n)
	require.Equal(t, string(val), c.must(t, "GET", "big-ex").str)
	require.Equal(t, "(nil)", c.must(t, "SET", "big-ex", string(val), "NX").String())
	require.Equal(t, "+OK", c.must(t, "SET", "big-ex", "small", "XX").String())
	require.Equal(t, "small", c.must(t, "GET", "big-ex").str)

	// Overwriting a large value in place, many times, leaks nothing.
	for i := range 5 {
		v := randomBytes(uint64(100+i), mib)
		require.Equal(t, "+OK", c.must(t, "SET", "over", string(v)).String())
		require.Equal(t, string(v), c.must(t, "GET", "over").str)
	}
}

// TestLargeSetAbandoned: a client that dies while sending a large value
// leaves nothing behind: the reservation is aborted.
func TestLargeSetAbandoned(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	before := st.Stats().Used

	nc, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	_, err = fmt.Fprintf(nc, "*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$%d\r\n%s", 4*mib, strings.Repeat("x", mib))
	require.NoError(t, err)
	// The reservation exists once the server has reserved room for it.
	waitFor(t, func() bool { return st.Stats().Used >= before+4*mib })
	nc.Close()
	waitFor(t, func() bool { return st.Stats().Used == before })
	_, err = st.Stat("half")
	require.ErrorIs(t, err, kv.ErrNotFound)

	// Same when the value arrives whole but its CRLF is wrong.
	c := dial(t, srv.Addr())
	fmt.Fprintf(c.bw, "*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$%d\r\n%sXX", directSetMin, strings.Repeat("y", directSetMin))
	require.NoError(t, c.flush())
	r, err := c.read()
	require.NoError(t, err)
	require.Equal(t, "-ERR Protocol error: bulk string not terminated by CRLF", r.String())
	_, err = c.read()
	require.ErrorIs(t, err, io.EOF)
	waitFor(t, func() bool { return st.Stats().Used == before })
	_, err = st.Stat("half")
	require.ErrorIs(t, err, kv.ErrNotFound)
}

// TestPoolFull: when leased keys (never evicted) fill the pool, a SET gets
// Redis's OOM error, on both the small and the reservation path, and the
// connection stays usable.
func TestPoolFull(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.Addr())
	chunk := make([]byte, 256<<10)
	for i := 0; ; i++ {
		_, err := st.Put(context.Background(), fmt.Sprintf("pin-%d", i), chunk, kv.PutOptions{TTL: time.Hour})
		if errors.Is(err, kv.ErrPoolFull) {
			break
		}
		require.NoError(t, err)
	}
	for _, n := range []int{200 << 10, 4 * mib} {
		r := c.must(t, "SET", "more", strings.Repeat("z", n))
		require.Equal(t, byte('-'), r.kind, "SET of %d bytes: %v", n, r)
		require.True(t, strings.HasPrefix(r.str, "OOM command not allowed when used memory > 'maxmemory'. (pool full: "), r.str)
		require.Equal(t, "+PONG", c.must(t, "PING").String())
	}
	require.Equal(t, byte('-'), c.must(t, "MSET", "a", "1", "b", string(chunk)).kind)
}

// TestValueLargerThanPool: a bulk longer than the pool can ever hold is
// refused from its header, before any of it is read.
func TestValueLargerThanPool(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	require.Less(t, srv.Options().MaxBulkLen, int64(testPoolSize))
	c := dial(t, srv.Addr())
	fmt.Fprintf(c.bw, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n", testPoolSize)
	require.NoError(t, c.flush())
	r, err := c.read()
	require.NoError(t, err)
	require.Equal(t, "-ERR Protocol error: invalid bulk length", r.String())
}

func TestConcurrentClients(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	const clients, rounds = 50, 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for g := range clients {
		c := dial(t, srv.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for i := range rounds {
					key := fmt.Sprintf("c%d:k%d", g, i)
					val := fmt.Sprintf("%s=%x", key, randomBytes(uint64(g*rounds+i), 1+i*37%3000))
					if r, err := c.do("SET", key, val); err != nil || r.String() != "+OK" {
						return fmt.Errorf("SET %s: %v %v", key, r, err)
					}
					// Pipelined: a GET of this key and of an earlier one.
					prev := fmt.Sprintf("c%d:k%d", g, i/2)
					c.send("GET", key)
					c.send("GET", prev)
					if err := c.flush(); err != nil {
						return err
					}
					for _, k := range []string{key, prev} {
						r, err := c.read()
						if err != nil {
							return err
						}
						if !strings.HasPrefix(r.str, k+"=") {
							return fmt.Errorf("GET %s = %v", k, r)
						}
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, clients*rounds, st.Len())
	c := dial(t, srv.Addr())
	require.EqualValues(t, clients*rounds, c.must(t, "DBSIZE").n)
}

// TestBigPipeline: a client may write a long pipeline without reading; the
// replies come back in order and the server never deadlocks on it.
func TestBigPipeline(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.Addr())
	const n = 20000
	go func() {
		for i := range n {
			c.send("SET", fmt.Sprintf("p%d", i), strings.Repeat("v", i%100))
			c.send("GET", fmt.Sprintf("p%d", i))
		}
		_ = c.flush()
	}()
	for i := range n {
		r, err := c.read()
		require.NoError(t, err)
		require.Equal(t, "+OK", r.String())
		r, err = c.read()
		require.NoError(t, err)
		require.Equal(t, strings.Repeat("v", i%100), r.str)
	}
}

func TestScanWalk(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.Addr())
	want := map[string]bool{}
	for i := range 1000 {
		k := fmt.Sprintf("key:%d", i)
		want[k] = true
		c.send("SET", k, "v")
	}
	require.NoError(t, c.flush())
	for range 1000 {
		_, err := c.read()
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		match string
		keep  func(string) bool
	}{
		{"*", func(string) bool { return true }},
		{"key:1?", func(k string) bool { return len(k) == 6 && strings.HasPrefix(k, "key:1") }},
		{"key:[2-3]*0", func(k string) bool { return (k[4] == '2' || k[4] == '3') && strings.HasSuffix(k, "0") }},
	} {
		seen := map[string]int{}
		cursor := "0"
		for steps := 0; ; steps++ {
			require.Less(t, steps, 1000, "SCAN does not end")
			r := c.must(t, "SCAN", cursor, "MATCH", tc.match, "COUNT", "7")
			require.Len(t, r.arr, 2)
			for _, k := range r.arr[1].arr {
				seen[k.str]++
			}
			if cursor = r.arr[0].str; cursor == "0" {
				break
			}
		}
		for k := range want {
			if tc.keep(k) {
				require.Equal(t, 1, seen[k], "MATCH %s: key %s seen %d times", tc.match, k, seen[k])
				delete(seen, k)
			}
		}
		require.Empty(t, seen, "MATCH %s returned keys it should not have", tc.match)
	}
}

func TestInfo(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.Addr())
	c.must(t, "SET", "a", "1")
	c.must(t, "SET", "b", "2", "EX", "100")
	c.must(t, "GET", "a")
	c.must(t, "GET", "nope")
	info := c.must(t, "INFO").str
	fields := map[string]string{}
	for _, l := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = v
		}
	}
	for _, h := range []string{"# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"} {
		require.Contains(t, info, h+"\r\n")
	}
	require.Equal(t, "7.0.0", fields["redis_version"])
	require.Equal(t, "1", fields["connected_clients"])
	require.Equal(t, "keys=2,expires=1,avg_ttl=0", fields["db0"])
	require.Equal(t, "1", fields["keyspace_hits"])
	require.Equal(t, "1", fields["keyspace_misses"])
	require.Equal(t, fmt.Sprint(st.Stats().Used), fields["used_memory"])
	require.Equal(t, fmt.Sprint(st.Stats().PoolCapacity), fields["maxmemory"])
	require.Equal(t, fmt.Sprint(port(srv.Addr())), fields["tcp_port"])
	require.Contains(t, c.must(t, "INFO", "memory").str, "used_memory_human:")
}

func TestMaxClients(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{MaxClients: 2})
	a, b := dial(t, srv.Addr()), dial(t, srv.Addr())
	require.Equal(t, "+PONG", a.must(t, "PING").String())
	require.Equal(t, "+PONG", b.must(t, "PING").String())

	over := dial(t, srv.Addr())
	r, err := over.do("PING")
	require.NoError(t, err)
	require.Equal(t, "-ERR max number of clients reached", r.String())
	_, err = over.read()
	require.ErrorIs(t, err, io.EOF)

	a.nc.Close()
	waitFor(t, func() bool { return srv.connectedClients() == 1 })
	c := dial(t, srv.Addr())
	require.Equal(t, "+PONG", c.must(t, "PING").String())
	require.Contains(t, c.must(t, "INFO", "stats").str, "rejected_connections:1\r\n")
}

func TestIdleTimeout(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{IdleTimeout: 50 * time.Millisecond})
	c := dial(t, srv.Addr())
	require.Equal(t, "+PONG", c.must(t, "PING").String())
	// Nothing more is sent: the server hangs up on its own.
	_, err := c.read()
	require.ErrorIs(t, err, io.EOF)
	waitFor(t, func() bool { return srv.connectedClients() == 0 })
}

// TestIdleTimeoutLargeValues: with a timeout set, large values still go
// both ways whole (written in pieces, each under its own deadline).
func TestIdleTimeoutLargeValues(t *testing.T) {
	st := newStore(t, nil)
	srv := startServer(t, st, Options{IdleTimeout: waitLimit})
	c := dial(t, srv.Addr())
	val := string(randomBytes(9, 3*writePiece+5))
	require.Equal(t, "+OK", c.must(t, "SET", "big", val).String())
	require.Equal(t, val, c.must(t, "GET", "big").str)
}

func TestCloseEndsEverything(t *testing.T) {
	st := newStore(t, nil)
	srv := NewServer(st, Options{Log: quietLog()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var clients []*client
	for range 5 {
		c := dial(t, ln.Addr())
		require.Equal(t, "+PONG", c.must(t, "PING").String())
		clients = append(clients, c)
	}
	// One client is half way through a large SET: its reservation must go.
	fmt.Fprintf(clients[0].bw, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\nabc", 2*mib)
	require.NoError(t, clients[0].flush())
	waitFor(t, func() bool { return st.Stats().Used >= 2*mib })

	require.NoError(t, srv.Close())
	require.ErrorIs(t, <-done, ErrServerClosed)
	for _, c := range clients[1:] {
		_, err := c.read()
		require.Error(t, err)
	}
	require.Zero(t, st.Stats().Used)
	require.NoError(t, srv.Close(), "a second Close")
	require.ErrorIs(t, srv.Serve(ln), ErrServerClosed)
	require.ErrorIs(t, srv.ListenAndServe("127.0.0.1:0"), ErrServerClosed)
}

func TestListenAndServe(t *testing.T) {
	st := newStore(t, nil)
	srv := NewServer(st, Options{Log: quietLog()})
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe("127.0.0.1:0") }()
	waitFor(t, func() bool { return srv.Addr() != nil })
	c := dial(t, srv.Addr())
	require.Equal(t, "+PONG", c.must(t, "PING").String())
	require.NoError(t, srv.Close())
	require.ErrorIs(t, <-done, ErrServerClosed)

	require.Error(t, NewServer(st, Options{}).ListenAndServe("256.0.0.1:bad"))
}

// metricValue reads one counter or gauge from reg; label may be "" for
// none, else "name=value".
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName()+"="+lp.GetValue() == label {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	st := newStore(t, nil)
	reg := prometheus.NewRegistry()
	srv := startServer(t, st, Options{Registerer: reg})
	c := dial(t, srv.Addr())
	c.must(t, "SET", "a", "1")
	c.must(t, "get", "a")
	c.must(t, "GET", "a")
	c.must(t, "NOSUCH")
	c.must(t, "GET")
	require.EqualValues(t, 1, metricValue(t, reg, "fluxon_resp_commands_total", "command=set"))
	require.EqualValues(t, 3, metricValue(t, reg, "fluxon_resp_commands_total", "command=get"))
	require.EqualValues(t, 1, metricValue(t, reg, "fluxon_resp_commands_total", "command=unknown"))
	require.EqualValues(t, 2, metricValue(t, reg, "fluxon_resp_errors_total", "kind=command"))
	require.EqualValues(t, 1, metricValue(t, reg, "fluxon_resp_connected_clients", ""))

	bad := dial(t, srv.Addr())
	_, _ = bad.nc.Write([]byte("*x\r\n"))
	out, err := io.ReadAll(bad.br)
	require.NoError(t, err)
	require.Equal(t, "-ERR Protocol error: invalid multibulk length\r\n", string(out))
	require.EqualValues(t, 1, metricValue(t, reg, "fluxon_resp_errors_total", "kind=protocol"))
	waitFor(t, func() bool { return metricValue(t, reg, "fluxon_resp_connected_clients", "") == 1 })
}

// TestExpiredHolderReleased: a GET that finds a key whose lease has ended
// drops its reference (the pool check in newStore's cleanup would see a leak).
func TestExpiredHolderReleased(t *testing.T) {
	clock := newFakeClock()
	st := newStore(t, clock.Now)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.Addr())
	require.Equal(t, "+OK", c.must(t, "SET", "k", "v", "EX", "1").String())
	clock.Advance(time.Second)
	require.Equal(t, "(nil)", c.must(t, "GET", "k").String())
	require.Equal(t, "[(nil)]", c.must(t, "MGET", "k").String())
	require.Equal(t, "(nil)", c.must(t, "SET", "k", "w", "GET").String())
	require.Equal(t, "w", c.must(t, "GET", "k").str)
}

// TestRandomCommands throws random, well-framed commands built from every
// command's words at the server: every reply must be well formed, none a
// protocol error, and no handler may panic.
func TestRandomCommands(t *testing.T) {
	st := newStore(t, nil)
	reg := prometheus.NewRegistry()
	srv := startServer(t, st, Options{Registerer: reg})
	c := dial(t, srv.Addr())
	words := []string{
		"k0", "k1", "k2", "", "v", "0", "1", "-1", "2", "100", "1000", "abc", "9223372036854775807",
		"NX", "XX", "GT", "LT", "EX", "PX", "GET", "KEEPTTL", "MATCH", "COUNT", "TYPE", "string",
		"SYNC", "ASYNC", "DOCS", "COUNT", "LIST", "SETNAME", "GETNAME", "SETINFO", "ID", "lib-name",
		"AUTH", "*", "k?", "[", "\\", "save", "maxmemory*", "keyspace", "all", "GET", "SET",
	}
	r := rand.New(rand.NewPCG(5, 6))
	var cmds [][]string
	for len(cmds) < 20000 {
		name := commandList[r.IntN(len(commandList))].name
		if name == "quit" {
			continue
		}
		if r.IntN(2) == 0 {
			name = strings.ToUpper(name)
		}
		args := []string{name}
		for range r.IntN(6) {
			args = append(args, words[r.IntN(len(words))])
		}
		cmds = append(cmds, args)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i, args := range cmds {
			c.send(args...)
			if i%16 == 15 {
				if c.flush() != nil {
					return
				}
			}
		}
		_ = c.flush()
	}()
	for _, args := range cmds {
		rep, err := c.read()
		require.NoError(t, err, "after %q", args)
		require.False(t, rep.kind == '-' && strings.Contains(rep.str, "Protocol error"), "%q: %v", args, rep)
	}
	<-sent
	require.Equal(t, "+PONG", c.must(t, "PING").String())
	require.Zero(t, metricValue(t, reg, "fluxon_resp_errors_total", "kind=panic"))
}
