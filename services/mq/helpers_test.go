package mq_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/services/mq"
	"github.com/fluxon-dev/fluxon/services/owner"
)

// env is one host's worth of cluster: a separate etcd server process and
// an owner (in this process) whose pool the test's clients attach to
// through shared memory, as business processes would.
type env struct {
	etcd    string
	shared  string
	cluster string
}

// Child processes (bind races, consumers killed -9) find the env here.
const (
	envEtcd    = "FLUXON_MQ_TEST_ETCD"
	envShared  = "FLUXON_MQ_TEST_SHARED"
	envCluster = "FLUXON_MQ_TEST_CLUSTER"
	envRole    = "FLUXON_MQ_TEST_ROLE"
	envArg     = "FLUXON_MQ_TEST_ARG"
)

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{etcd: metatest.StartProcess(t).URL, shared: t.TempDir(), cluster: "mq" + strings.ToLower(fmt.Sprint(time.Now().UnixNano()%1e6))}
	shmDir, err := os.MkdirTemp("/dev/shm", "fluxon-mq-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(shmDir) })
	cfg, err := config.Parse([]byte(fmt.Sprintf(`cluster_name: %s
instance_key: owner-1
etcd_endpoints: [%q]
shared_memory_path: %s
shared_file_path: %s
contribute_to_cluster_pool_size: {dram: 256MiB}
pool: {segment_size: 8MiB}
`, e.cluster, e.etcd, shmDir, e.shared)), config.RoleOwner)
	require.NoError(t, err)
	o, err := owner.Start(cfg, "owner-1", slog.New(slog.DiscardHandler), nil, owner.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { o.Close() })
	return e
}

// envFromChild is the env a child process was started with.
func envFromChild() *env {
	return &env{etcd: os.Getenv(envEtcd), shared: os.Getenv(envShared), cluster: os.Getenv(envCluster)}
}

func (e *env) childEnv(role, arg string) []string {
	return append(os.Environ(), envEtcd+"="+e.etcd, envShared+"="+e.shared, envCluster+"="+e.cluster,
		envRole+"="+role, envArg+"="+arg)
}

func (e *env) open() (*fluxon.Client, error) {
	return fluxon.Open(context.Background(), fluxon.Config{ClusterName: e.cluster, SharedFilePath: e.shared})
}

func (e *env) client(tb testing.TB) *fluxon.Client {
	c, err := e.open()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// cfg is a channel config for tests: etcd from shared.json (the client
// knows it), short member TTL, metrics in a registry of the test's own.
func (e *env) cfg() mq.Config {
	return mq.Config{MemberTTL: 2 * time.Second, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
}

func bind(t *testing.T, c *fluxon.Client, name string, cfg mq.Config, typ mq.Type, role mq.Role) *mq.Chan {
	t.Helper()
	ch, err := mq.NewOrBind(context.Background(), c, name, cfg, typ, role)
	require.NoError(t, err)
	t.Cleanup(func() { ch.Close(context.Background()) })
	return ch
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// drain gets until want messages came or timeout passes, acknowledging
// each batch, and returns them.
func drain(t *testing.T, ch *mq.Chan, want int, timeout time.Duration) []*mq.Message {
	t.Helper()
	var out []*mq.Message
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		msgs, err := ch.Get(context.Background(), 256, 200*time.Millisecond, 0)
		require.NoError(t, err)
		require.NoError(t, ch.Ack(msgs...))
		out = append(out, msgs...)
	}
	return out
}

// getN gets exactly n messages (Get returns what is ready; n may take a
// few calls) without acknowledging them.
func getN(t *testing.T, ch *mq.Chan, n int) []*mq.Message {
	t.Helper()
	var out []*mq.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		msgs, err := ch.Get(context.Background(), n-len(out), 200*time.Millisecond, 0)
		require.NoError(t, err)
		out = append(out, msgs...)
	}
	require.Len(t, out, n)
	return out
}

// metric sums a counter's values (or a histogram's sample counts) across
// labels in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// Producers attached to a local owner encode batches in place.
var _ mq.Filler = (*fluxon.Client)(nil)
