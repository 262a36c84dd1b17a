package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]string{"": "INFO", "debug": "DEBUG", "WARN": "WARN", "error": "ERROR"} {
		l, err := ParseLevel(in)
		require.NoError(t, err)
		require.Equal(t, want, l.String())
	}
	_, err := ParseLevel("loud")
	require.ErrorContains(t, err, "FLUXON_LOG")
}

func TestLoggerConsoleAndJSONFile(t *testing.T) {
	t.Setenv(LogEnv, "warn")
	dir := t.TempDir()
	var console bytes.Buffer
	l, err := NewLogger(&console, dir, "owner-1", "role", "owner")
	require.NoError(t, err)
	l.Info("hidden at warn")
	l.Warn("disk almost full", "free", 3)
	require.NoError(t, l.Close())

	require.NotContains(t, console.String(), "hidden")
	require.Contains(t, console.String(), `msg="disk almost full"`)
	require.Contains(t, console.String(), "role=owner")

	b, err := os.ReadFile(filepath.Join(dir, "owner-1.log"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 1)
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &rec))
	require.Equal(t, "disk almost full", rec["msg"])
	require.Equal(t, "owner", rec["role"])
	require.Equal(t, float64(3), rec["free"])
}

func TestServerMetricsAndHealth(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "fluxon_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(2)
	var unhealthy atomic.Bool
	s, err := Listen("127.0.0.1:0", reg, func() (map[string]any, error) {
		if !unhealthy.Load() {
			return map[string]any{"role": "owner"}, nil
		}
		return nil, errors.New("etcd unreachable")
	})
	require.NoError(t, err)
	defer s.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr() + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, "fluxon_test_total 2")
	require.Contains(t, body, "go_goroutines")

	code, body = get("/healthz")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"status":"ok"`)
	unhealthy.Store(true)
	code, body = get("/healthz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "etcd unreachable")

	_, err = Listen(s.Addr(), reg, nil)
	require.ErrorContains(t, err, "listen.http")
}
