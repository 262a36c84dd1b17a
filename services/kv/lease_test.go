package kv

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLeaseTableStateMachine(t *testing.T) {
	lt := NewLeaseTable()
	t0 := time.Unix(100, 0)
	_, err := lt.Grant(t0, 10*time.Millisecond, false)
	require.ErrorIs(t, err, ErrLeaseTTL)
	_, err = lt.Grant(t0, MaxLeaseTTL+time.Second, false)
	require.ErrorIs(t, err, ErrLeaseTTL)

	a, err := lt.Grant(t0, 10*time.Second, false)
	require.NoError(t, err)
	b, err := lt.Grant(t0, 2*time.Second, true)
	require.NoError(t, err)
	require.NotEqual(t, a, b)
	require.NoError(t, lt.Attach(t0, a, "k1"))
	require.NoError(t, lt.Attach(t0, a, "k2"))
	require.NoError(t, lt.Attach(t0, b, "k3"))

	rem, err := lt.Remaining(t0.Add(4*time.Second), a)
	require.NoError(t, err)
	require.Equal(t, 6*time.Second, rem)

	// At the deadline exactly, a lease has ended.
	ended := lt.Expire(t0.Add(2 * time.Second))
	require.Equal(t, map[LeaseID][]string{b: {"k3"}}, ended)
	require.ErrorIs(t, lt.Attach(t0.Add(2*time.Second), b, "k4"), ErrLeaseNotFound)

	ttl, err := lt.KeepAlive(t0.Add(9*time.Second), a)
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, ttl)
	require.Empty(t, lt.Expire(t0.Add(18*time.Second)), "kept alive until 19s")

	lt.Detach(a, "k1")
	keys, err := lt.Revoke(a)
	require.NoError(t, err)
	require.Equal(t, []string{"k2"}, keys)
	_, err = lt.Revoke(a)
	require.ErrorIs(t, err, ErrLeaseNotFound)
	_, err = lt.KeepAlive(t0, a)
	require.ErrorIs(t, err, ErrLeaseNotFound)

	// A private lease goes with its only key.
	p, _ := lt.Grant(t0, time.Minute, true)
	require.NoError(t, lt.Attach(t0, p, "solo"))
	lt.Detach(p, "solo")
	_, err = lt.Remaining(t0, p)
	require.ErrorIs(t, err, ErrLeaseNotFound)
	require.Zero(t, lt.Len())
}
