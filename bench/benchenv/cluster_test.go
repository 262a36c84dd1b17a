package benchenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/control/config"
)

// testdata/etcd-3.4-metrics.txt is the etcd_mvcc and proposal lines of
// Debian's etcd 3.4.23 /metrics after 3 puts and 1 delete.
func TestParseEtcdCounters(t *testing.T) {
	f, err := os.Open("testdata/etcd-3.4-metrics.txt")
	require.NoError(t, err)
	defer f.Close()
	c, err := ParseEtcdCounters(f)
	require.NoError(t, err)
	require.Equal(t, EtcdCounters{Writes: 4, Proposals: 8}, c)
	require.Equal(t, EtcdCounters{Writes: 3, Proposals: 5}, c.Sub(EtcdCounters{Writes: 1, Proposals: 3}))
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP a_total Things.
# TYPE a_total counter
a_total 12
a_total_bucket{le="1"} 3
b{x="y"} 7
c 1.5e+06
`
	m, err := ParseMetrics(strings.NewReader(text), "a_total", "c")
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"a_total": 12, "c": 1.5e6}, m)
	_, err = ParseMetrics(strings.NewReader(text), "b")
	require.ErrorContains(t, err, "metric b missing", "only unlabelled samples count")
	_, err = ParseMetrics(strings.NewReader("a_total x\n"), "a_total")
	require.Error(t, err)
}

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis; utime 250, stime 50 ticks.
	line := "4242 (fluxon (x) m) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 1000000 500 18446744073709551615\n"
	d, err := ParseStatCPU([]byte(line))
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, d)
	for _, bad := range []string{"no parens here", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 ten 12 13"} {
		_, err := ParseStatCPU([]byte(bad))
		require.Error(t, err, bad)
	}
	self, err := CPUTime(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, self, time.Duration(0))
}

func TestParseIperf3(t *testing.T) {
	b, err := os.ReadFile("testdata/iperf3-R.json")
	require.NoError(t, err)
	bps, err := ParseIperf3(b)
	require.NoError(t, err)
	require.InDelta(t, 16413081105.621206/8, bps, 1)
	_, err = ParseIperf3([]byte(`{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`))
	require.ErrorContains(t, err, "Connection refused")
	_, err = ParseIperf3([]byte(`{"end":{}}`))
	require.Error(t, err)
}

func TestClusterConfigsAreValid(t *testing.T) {
	dir := t.TempDir()
	o := OwnerOptions{Dir: dir, Key: "o2", NS: "fb1-h2", IP: "10.213.1.12", Etcd: "http://10.213.1.1:2379", PoolSize: 100 << 20, PollMode: "event_driven"}
	path := filepath.Join(dir, "owner.yaml")
	require.NoError(t, os.WriteFile(path, []byte(OwnerConfig(o, "/dev/shm/x", filepath.Join(dir, "shared"))), 0o644))
	cfg, err := config.Load(path, config.Role("owner"))
	require.NoError(t, err, OwnerConfig(o, "/dev/shm/x", "/tmp/s"))
	require.Equal(t, "o2", cfg.InstanceKey)
	require.Equal(t, ClusterName, cfg.ClusterName)

	path = filepath.Join(dir, "master.yaml")
	require.NoError(t, os.WriteFile(path, []byte(MasterConfig("http://10.213.1.1:2379", "10.213.1.1", dir)), 0o644))
	_, err = config.Load(path, config.Role("master"))
	require.NoError(t, err)
}
