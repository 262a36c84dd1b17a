//go:build ucx

package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/ucx"
)

// Over ucx, whose ReadRemote has the holder lease the range through
// ServeRead before a one-sided get, pulls name pool positions like any
// other: a value spanning several 1 MiB segments and one striped over
// every lane arrive intact.
func TestPullsOverUCX(t *testing.T) {
	var owners []*testOwner
	var peers []Peer
	for i := 0; i < 2; i++ {
		tr, err := ucx.New(ucx.Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}})
		require.NoError(t, err)
		o := startOwnerOver(t, tr, fmt.Sprint("u", i), time.Unix(2000+int64(i), 0), fmt.Sprint("h", i), 2*time.Second)
		owners, peers = append(owners, o), append(peers, o.peer)
	}
	for _, o := range owners {
		require.NoError(t, o.node.SetRouting(1, peers))
	}
	for key, size := range map[string]int{"spans": 3<<20 + 777, "striped": 2*stripeMin + 12345} {
		val := make([]byte, size)
		for i := range val {
			val[i] = byte(i*13 + len(key))
		}
		_, err := owners[0].node.Put(context.Background(), key, val, kv.PutOptions{})
		require.NoError(t, err)
		require.False(t, owners[1].store.Exists(key), "%s: the reader has no copy yet", key)
		got, err := read(t, owners[1], key)
		require.NoError(t, err, key)
		require.True(t, bytes.Equal(val, got), "%s differs after a pull over ucx", key)
		require.True(t, owners[1].store.Exists(key), "%s was pulled into the reader's pool", key)
	}
}
