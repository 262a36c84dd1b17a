package mqgrpc_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/fluxon-dev/fluxon"
	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/services/mq"
	"github.com/fluxon-dev/fluxon/services/mq/mqgrpc"
	"github.com/fluxon-dev/fluxon/services/owner"
)

// serve runs the MQ service over a real owner's pool (through a client
// attached to it) and an etcd process, and returns a client of it.
func serve(t *testing.T) *mqgrpc.Client {
	etcd := metatest.StartProcess(t).URL
	shared := t.TempDir()
	shmDir, err := os.MkdirTemp("/dev/shm", "fluxon-mqgrpc-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(shmDir) })
	cfg, err := config.Parse([]byte(fmt.Sprintf("cluster_name: g\ninstance_key: o1\netcd_endpoints: [%q]\nshared_memory_path: %s\nshared_file_path: %s\ncontribute_to_cluster_pool_size: {dram: 64MiB}\npool: {segment_size: 4MiB}\n",
		etcd, shmDir, shared)), config.RoleOwner)
	require.NoError(t, err)
	o, err := owner.Start(cfg, "o1", slog.New(slog.DiscardHandler), nil, owner.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { o.Close() })
	c, err := fluxon.Open(context.Background(), fluxon.Config{ClusterName: "g", SharedFilePath: shared})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	store, err := meta.Connect(context.Background(), []string{etcd}, "g", nil)
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })

	srv := mqgrpc.NewServer(c, store, "o1", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	gs := grpc.NewServer()
	srv.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go gs.Serve(ln)
	t.Cleanup(func() { srv.Close(); gs.Stop() })
	cl, err := mqgrpc.Dial(context.Background(), ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { cl.Close() })
	return cl
}

func TestServiceRoundTripAndErrors(t *testing.T) {
	cl := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch := &fluxonv1.MQChannelConfig{UniqueKey: "g1", Type: "mpmc", Capacity: 3}
	st, err := cl.Create(ctx, ch)
	require.NoError(t, err)
	assert.EqualValues(t, 3, st.Capacity)

	r, err := cl.Put(ctx, &fluxonv1.MQPutRequest{Channel: ch, ProducerId: "p", Messages: [][]byte{[]byte("a"), []byte("b"), []byte("c")}})
	require.NoError(t, err)
	assert.EqualValues(t, 3, r.GetAccepted())
	_, err = cl.Put(ctx, &fluxonv1.MQPutRequest{Channel: ch, ProducerId: "p", Messages: [][]byte{[]byte("d")}, FailWhenFull: true})
	assert.ErrorIs(t, err, mq.ErrChannelFull)

	// A consumer that idles out hands its unacknowledged messages on.
	g, err := cl.Get(ctx, &fluxonv1.MQGetRequest{Channel: ch, ConsumerId: "k", Batch: 3, WaitMs: 5000, IdleMs: 300})
	require.NoError(t, err)
	require.NotEmpty(t, g.GetMessages())
	first := g.GetMessages()[0]
	assert.Equal(t, "a", string(first.GetData()))
	assert.False(t, first.GetRedelivered())
	time.Sleep(2500 * time.Millisecond) // idle 300 ms, reaped within a second
	g, err = cl.Get(ctx, &fluxonv1.MQGetRequest{Channel: ch, ConsumerId: "k", Batch: 3, WaitMs: 5000})
	require.NoError(t, err)
	require.NotEmpty(t, g.GetMessages())
	assert.Equal(t, "a", string(g.GetMessages()[0].GetData()))
	assert.True(t, g.GetMessages()[0].GetRedelivered())
	var refs []*fluxonv1.MQAckRef
	for _, m := range g.GetMessages() {
		refs = append(refs, &fluxonv1.MQAckRef{ProducerId: m.GetProducerId(), Offset: m.GetOffset()})
	}
	require.NoError(t, cl.Ack(ctx, &fluxonv1.MQAckRequest{UniqueKey: "g1", ConsumerId: "k", Messages: refs}))
	err = cl.Ack(ctx, &fluxonv1.MQAckRequest{UniqueKey: "g1", ConsumerId: "k", Messages: []*fluxonv1.MQAckRef{{ProducerId: "p", Offset: 99}}})
	assert.ErrorIs(t, err, mq.ErrUnknownMessage)

	_, err = cl.Stat(ctx, "nope")
	assert.ErrorIs(t, err, mq.ErrNoChannel)
	_, err = cl.Put(ctx, &fluxonv1.MQPutRequest{Channel: &fluxonv1.MQChannelConfig{UniqueKey: "g1", Type: "mpsc"}, ProducerId: "p2", Messages: [][]byte{nil}})
	assert.ErrorIs(t, err, mq.ErrTypeMismatch)
	_, err = cl.Get(ctx, &fluxonv1.MQGetRequest{Channel: ch, Batch: mqgrpc.MaxBatch + 1})
	assert.ErrorIs(t, err, mq.ErrBadConfig)
	_, err = cl.Create(ctx, &fluxonv1.MQChannelConfig{UniqueKey: "", Type: "mpmc"})
	assert.ErrorIs(t, err, mq.ErrBadConfig)

	ls, err := cl.List(ctx)
	require.NoError(t, err)
	require.Len(t, ls, 1)
	assert.Equal(t, "g1", ls[0].UniqueKey)
	assert.EqualValues(t, 3, ls[0].Producers[0].ProduceOffset)
}
