package benchenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// iperfPort is iperf3's port inside the host that serves it; each namespace
// has its own ports.
const iperfPort = 5201

// ErrNoIperf3 reports that iperf3 is missing.
var ErrNoIperf3 = errors.New("iperf3 not found on PATH; run `make deps` (scripts/install-deps.sh installs it)")

// Iperf3 measures TCP throughput over the same link the benchmark's
// cross-host gets cross: a server in one namespace host, a client in
// another, one stream, as one Get pulls one value.
type Iperf3 struct {
	Version string
	bin     string
}

// NewIperf3 finds iperf3.
func NewIperf3() (*Iperf3, error) {
	bin, err := exec.LookPath("iperf3")
	if err != nil {
		return nil, ErrNoIperf3
	}
	ver, _ := exec.Command(bin, "--version").Output()
	return &Iperf3{bin: bin, Version: strings.SplitN(strings.TrimSpace(string(ver)), "\n", 2)[0]}, nil
}

// Measure runs `iperf3 -s` in serverNS on serverIP and `iperf3 -c -R` in
// clientNS for d (whole seconds, at least 1) and returns the bytes per
// second the client received. -R makes the server send, so the bytes flow
// the way a get's do: from the host that holds the value to the one that
// asked. Logs go to dir.
func (i *Iperf3) Measure(ctx context.Context, dir, serverNS, serverIP, clientNS string, d time.Duration) (float64, error) {
	server, err := Start("iperf3 -s", filepath.Join(dir, "iperf3-server.log"), nil, "ip", "netns", "exec", serverNS,
		i.bin, "-s", "-B", serverIP, "-p", strconv.Itoa(iperfPort), "--forceflush")
	if err != nil {
		return 0, err
	}
	defer server.Stop()
	if err := server.WaitFor(ctx, 10*time.Second, "\"Server listening\"", func() bool {
		return strings.Contains(server.Output(), "Server listening")
	}); err != nil {
		return 0, err
	}
	secs := max(int((d+time.Second-1)/time.Second), 1)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", clientNS, i.bin, "-c", serverIP, "-p", strconv.Itoa(iperfPort),
		"-R", "-t", strconv.Itoa(secs), "-J")
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("iperf3 -c %s: %v: %s", serverIP, err, strings.TrimSpace(string(out)))
	}
	return ParseIperf3(out)
}

// ParseIperf3 returns the received bytes per second of iperf3's -J report
// (end.sum_received).
func ParseIperf3(b []byte) (float64, error) {
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived *struct {
				Seconds       float64 `json:"seconds"`
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("iperf3 report: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived == nil || r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3 report has no end.sum_received")
	}
	return r.End.SumReceived.BitsPerSecond / 8, nil
}
