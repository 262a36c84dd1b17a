package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/services/mq"
)

// TestMQCommandsAgainstUp drives `fluxon mq` against `fluxon up`: create,
// put, get with acknowledgement, a consumer that does not acknowledge and
// whose messages go to the next one, stat, ls, bad input; and the master's
// channel view for the panel.
func TestMQCommandsAgainstUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	upCfg := writeConfig(t, dir, "up.yaml", sharedPaths(t, "mqup")+"listen:\n  resp: \"\"\n")
	etcd := metatest.FreeAddrs(t, 2)
	up := start(t, dir, "up", "--config", upCfg, "--etcd-client", etcd[0], "--etcd-peer", etcd[1], "--http", "127.0.0.1:0")
	up.waitOutput(t, upBannerEnd, 30*time.Second)

	mqRun := func(args ...string) string {
		t.Helper()
		out, code := run(t, dir, append([]string{"mq"}, args...)...)
		require.Equal(t, 0, code, out)
		return out
	}
	require.Contains(t, mqRun("create", "jobs", "--capacity", "100", "--ttl", "1h"), "capacity 100")
	require.Contains(t, mqRun("put", "jobs", "one", "two", "three"), "put 3 message(s)")
	require.Equal(t, "one\ntwo\n", mqRun("get", "jobs", "--batch", "2", "--wait", "5s"))
	// A consumer that does not acknowledge: once it is closed (idle), the
	// next consumer gets its message again.
	require.Equal(t, "three\n", mqRun("get", "jobs", "--no-ack", "--wait", "5s"))
	out := mqRun("stat", "jobs")
	require.Contains(t, out, "backlog 1")
	require.Contains(t, out, "capacity 100")

	var st mq.ChannelStat
	require.NoError(t, json.Unmarshal([]byte(mqRun("stat", "jobs", "--json")), &st))
	require.Len(t, st.Producers, 1)
	require.EqualValues(t, 3, st.Producers[0].ProduceOffset)
	require.EqualValues(t, 2, st.Producers[0].ConsumeOffset)

	out, code := run(t, dir, "mq", "get", "jobs", "--batch", "0")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, "--batch 0")
	out, code = run(t, dir, "mq", "stat", "nope")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "no such channel")
	out, code = run(t, dir, "mq", "put", "jobs", "--type", "mpsc", "x")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "another type")

	ls := mqRun("ls")
	require.Contains(t, ls, "jobs")

	// The master serves the channel view as JSON.
	cs, err := status(t, dir)
	require.NoError(t, err)
	httpAddr := cs.Members[meta.RoleMaster][0].Endpoints["http"]
	require.NotEmpty(t, httpAddr)
	resp, err := http.Get(fmt.Sprintf("http://%s%s", httpAddr, mq.PanelPath))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var view struct {
		Channels []mq.ChannelStat `json:"channels"`
	}
	require.NoError(t, json.Unmarshal(body, &view))
	require.Len(t, view.Channels, 1)
	ch := view.Channels[0]
	require.Equal(t, "jobs", ch.UniqueKey)
	require.EqualValues(t, 1, ch.Backlog)
	require.NotEmpty(t, ch.Members, "the owner's producer and consumer are members")
	for _, m := range ch.Members {
		require.Equal(t, ch.ChanID, m.ChanID)
		require.NotEmpty(t, m.Owner, "members carry their owner")
	}
	require.True(t, strings.Contains(string(body), `"produce_offset":3`), string(body))
}
