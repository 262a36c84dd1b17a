package respclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/bench/benchenv"
	"github.com/fluxon-dev/fluxon/bench/respclient"
)

// dialRedis starts a redis-server of the test's own on a free port and
// connects to it. A machine without redis-server fails here, naming
// `make deps`.
func dialRedis(t *testing.T) (*respclient.Conn, string) {
	t.Helper()
	r, err := benchenv.StartRedis(context.Background(), benchenv.RedisOptions{Dir: t.TempDir(), MaxMemory: 256 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Stop()) })
	c, err := respclient.Dial(context.Background(), r.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, r.Addr
}

func TestAgainstRedis(t *testing.T) {
	c, _ := dialRedis(t)
	require.NoError(t, c.Ping())

	t.Run("set and get round trip", func(t *testing.T) {
		// Around the 64 KiB buffers, where payloads start bypassing them.
		for _, n := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 8 << 20} {
			v := make([]byte, n)
			for i := range v {
				v[i] = byte(i * 7)
			}
			key := fmt.Sprintf("k%d", n)
			require.NoError(t, c.Set(key, v))
			got, err := c.GetInto(key, nil)
			require.NoError(t, err)
			require.True(t, bytes.Equal(v, got), "%d bytes", n)
		}
	})

	t.Run("GetInto reuses a big enough buffer", func(t *testing.T) {
		require.NoError(t, c.Set("r", []byte("value")))
		buf := make([]byte, 100)
		got, err := c.GetInto("r", buf)
		require.NoError(t, err)
		require.Equal(t, "value", string(got))
		require.Same(t, &buf[0], &got[0])
	})

	t.Run("missing key", func(t *testing.T) {
		_, err := c.GetInto("never-written", nil)
		require.ErrorIs(t, err, respclient.ErrNil)
		r, err := c.Do("GET", "never-written")
		require.NoError(t, err)
		require.True(t, r.Nil)
	})

	t.Run("pipelining", func(t *testing.T) {
		const n = 200
		for i := range n {
			require.NoError(t, c.SendStrings("SET", fmt.Sprintf("p%d", i), fmt.Sprintf("v%d", i)))
		}
		require.NoError(t, c.Flush())
		for range n {
			r, err := c.Receive()
			require.NoError(t, err)
			require.Equal(t, respclient.Reply{Kind: respclient.KindStatus, Str: "OK"}, r)
		}
		for i := range n {
			require.NoError(t, c.SendStrings("GET", fmt.Sprintf("p%d", i)))
		}
		require.NoError(t, c.Flush())
		buf := make([]byte, 0, 16)
		for i := range n {
			got, err := c.ReceiveBulkInto(buf)
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("v%d", i), string(got), "replies come in order")
		}
		r, err := c.Do("DEL", "p0", "p1", "nope")
		require.NoError(t, err)
		require.Equal(t, int64(2), r.Int)
	})

	t.Run("error replies leave the connection usable", func(t *testing.T) {
		require.NoError(t, c.Set("text", []byte("abc")))
		_, err := c.Do("INCR", "text")
		var se respclient.ServerError
		require.ErrorAs(t, err, &se)
		require.Contains(t, string(se), "not an integer")
		_, err = c.Do("NOSUCHCOMMAND")
		require.ErrorAs(t, err, &se)
		require.NoError(t, c.Ping())
	})

	t.Run("arrays", func(t *testing.T) {
		require.NoError(t, c.Set("a1", []byte("x")))
		r, err := c.Do("MGET", "a1", "a-missing")
		require.NoError(t, err)
		require.Equal(t, respclient.KindArray, r.Kind)
		require.Len(t, r.Array, 2)
		require.Equal(t, "x", string(r.Array[0].Bulk))
		require.True(t, r.Array[1].Nil)
	})
}

func TestCancelInterruptsABlockedCall(t *testing.T) {
	_, addr := dialRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := respclient.Dial(ctx, addr)
	require.NoError(t, err)
	defer c.Close()
	// BLPOP on an empty list with no timeout blocks until cancelled.
	require.NoError(t, c.SendStrings("BLPOP", "empty-list", "0"))
	require.NoError(t, c.Flush())
	done := make(chan error, 1)
	go func() {
		_, err := c.Receive()
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		require.Error(t, err)
		require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "%v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled context did not interrupt a blocked Receive")
	}
}
