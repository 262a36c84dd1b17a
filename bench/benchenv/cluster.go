package benchenv

// The multi-host benchmark's servers: one etcd process and one `fluxon
// master` in the root namespace (on the lab's gateway address), and one
// `fluxon owner` inside each namespace host.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Start-up bounds and fixed ports of the cluster's processes.
const (
	etcdStartTimeout  = 30 * time.Second
	roleStartTimeout  = 60 * time.Second
	clusterUpTimeout  = 60 * time.Second
	metricsGetTimeout = 5 * time.Second
	// OwnerRESPPort, OwnerGRPCPort and OwnerTransportPort are the owner's
	// ports on its host's address. Each namespace has its own ports, so
	// fixed ones never collide, and the benchmark needs no output parsing
	// to find them.
	OwnerRESPPort      = 6380
	OwnerGRPCPort      = 7100
	OwnerTransportPort = 7200
)

// ErrNoEtcd reports that the etcd binary is missing.
var ErrNoEtcd = errors.New("etcd not found on PATH; run `make deps` (it installs Debian's etcd-server)")

// Etcd is an etcd server process.
type Etcd struct {
	*Proc
	// URL is the client URL (http://host:port); /metrics is served there.
	URL     string
	Version string
}

// StartEtcd runs Debian's etcd binary with its data under dir, its client
// port on a free port of host (an address of this namespace, e.g. a lab's
// gateway) and its peer port on loopback, and waits until /health answers.
func StartEtcd(ctx context.Context, dir, host string) (*Etcd, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, ErrNoEtcd
	}
	client, err1 := FreeAddrOn(host)
	peer, err2 := FreeAddr()
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	url := "http://" + client
	ver, _ := exec.Command(bin, "--version").Output()
	p, err := Start("etcd", filepath.Join(dir, "etcd.log"), nil, bin,
		"--name", "bench", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "bench=http://"+peer, "--log-level", "error")
	if err != nil {
		return nil, err
	}
	e := &Etcd{Proc: p, URL: url, Version: strings.SplitN(strings.TrimSpace(string(ver)), "\n", 2)[0]}
	hc := http.Client{Timeout: time.Second}
	if err := p.WaitFor(ctx, etcdStartTimeout, "answer on "+url+"/health", func() bool {
		resp, err := hc.Get(url + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"true"`)
	}); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return e, nil
}

// The etcd counters the benchmark reads from /metrics.
const (
	metricPuts      = "etcd_mvcc_put_total"
	metricDeletes   = "etcd_mvcc_delete_total"
	metricProposals = "etcd_server_proposals_committed_total"
)

// EtcdCounters are etcd's write counters at one moment.
type EtcdCounters struct {
	// Writes is keys written: etcd_mvcc_put_total + etcd_mvcc_delete_total
	// (a transaction counts each put and delete it makes).
	Writes float64
	// Proposals is etcd_server_proposals_committed_total: every change the
	// raft log agreed on, lease grants and revokes included.
	Proposals float64
}

// Sub returns the counters' growth from o to c.
func (c EtcdCounters) Sub(o EtcdCounters) EtcdCounters {
	return EtcdCounters{Writes: c.Writes - o.Writes, Proposals: c.Proposals - o.Proposals}
}

// Counters reads the write counters from etcd's /metrics.
func (e *Etcd) Counters(ctx context.Context) (EtcdCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsGetTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/metrics", nil)
	if err != nil {
		return EtcdCounters{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return EtcdCounters{}, err
	}
	defer resp.Body.Close()
	return ParseEtcdCounters(resp.Body)
}

// ParseEtcdCounters reads the write counters from a Prometheus text
// exposition; a counter missing from it is an error.
func ParseEtcdCounters(r io.Reader) (EtcdCounters, error) {
	m, err := ParseMetrics(r, metricPuts, metricDeletes, metricProposals)
	if err != nil {
		return EtcdCounters{}, err
	}
	return EtcdCounters{Writes: m[metricPuts] + m[metricDeletes], Proposals: m[metricProposals]}, nil
}

// ParseMetrics returns the values of the named unlabelled samples of a
// Prometheus text exposition. Every name must be present.
func ParseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || !want[f[0]] {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", f[0], err)
		}
		out[f[0]] = v
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("metric %s missing from the exposition", n)
		}
	}
	return out, nil
}

// MasterConfig is the YAML of the benchmark's `fluxon master`: on host (the
// lab's gateway), against etcd.
func MasterConfig(etcd, host, logDir string) string {
	return fmt.Sprintf(`cluster_name: %s
instance_key: m1
etcd_endpoints: [%q]
log_dir: %s
listen:
  http: %s:0
  grpc: %s:0
`, ClusterName, strings.TrimPrefix(etcd, "http://"), logDir, host, host)
}

// OwnerOptions configure one `fluxon owner` of the multi-host benchmark.
type OwnerOptions struct {
	// Bin is the fluxon binary.
	Bin string
	// Dir is the owner's own work directory (config, logs, shared files);
	// it must exist.
	Dir string
	// Key is the owner's instance_key.
	Key string
	// NS is the network namespace it runs in; IP its address there.
	NS, IP string
	// Etcd is etcd's client URL, reachable from NS.
	Etcd string
	// PoolSize is the DRAM it contributes, in bytes; rounded up to a MiB.
	PoolSize uint64
	// PollMode, if set, is network.poll_mode.
	PollMode string
	// TCPReactor, if set, is network.tcp_reactor_mode.
	TCPReactor string
}

// OwnerConfig is an owner's YAML: its own pool (shmDir) and shared files
// (sharedDir), every listener on its host's address.
func OwnerConfig(o OwnerOptions, shmDir, sharedDir string) string {
	mibs := max((o.PoolSize+(1<<20)-1)>>20, minPool>>20)
	var b strings.Builder
	fmt.Fprintf(&b, "cluster_name: %s\ninstance_key: %s\n", ClusterName, o.Key)
	fmt.Fprintf(&b, "etcd_endpoints: [%q]\n", strings.TrimPrefix(o.Etcd, "http://"))
	fmt.Fprintf(&b, "shared_memory_path: %s\nshared_file_path: %s\n", shmDir, sharedDir)
	fmt.Fprintf(&b, "log_dir: %s\n", filepath.Join(o.Dir, "logs"))
	fmt.Fprintf(&b, "contribute_to_cluster_pool_size:\n  dram: %dMiB\n", mibs)
	fmt.Fprintf(&b, "listen:\n  http: %s:0\n  grpc: %s:%d\n  transport: %s:%d\n  resp: %s:%d\n",
		o.IP, o.IP, OwnerGRPCPort, o.IP, OwnerTransportPort, o.IP, OwnerRESPPort)
	b.WriteString(networkSection(o.PollMode, o.TCPReactor))
	return b.String()
}

// networkSection is the config's network section for the modes set.
func networkSection(pollMode, tcpReactor string) string {
	if pollMode == "" && tcpReactor == "" {
		return ""
	}
	s := "network:\n"
	if pollMode != "" {
		s += "  poll_mode: " + pollMode + "\n"
	}
	if tcpReactor != "" {
		s += "  tcp_reactor_mode: " + tcpReactor + "\n"
	}
	return s
}

// Owner is a running `fluxon owner` inside a namespace host.
type Owner struct {
	*Proc
	// RESP and GRPC are its endpoints on its host's address.
	RESP, GRPC string
	// SharedFilePath is what fluxon.Config needs to attach through shared
	// memory from the same host.
	SharedFilePath string
	shmDir         string
}

// StartOwner starts `ip netns exec NS fluxon owner` with its pool under
// /dev/shm and waits until it runs.
func StartOwner(ctx context.Context, o OwnerOptions) (*Owner, error) {
	bin, err := fluxonBin(o.Bin)
	if err != nil {
		return nil, err
	}
	shmDir, err := os.MkdirTemp(shmRoot, "fluxon-bench-"+o.Key+"-")
	if err != nil {
		return nil, err
	}
	shared := filepath.Join(o.Dir, "shared")
	cfg := filepath.Join(o.Dir, "owner.yaml")
	if err := os.WriteFile(cfg, []byte(OwnerConfig(o, shmDir, shared)), 0o644); err != nil {
		os.RemoveAll(shmDir)
		return nil, err
	}
	// ip netns exec execs fluxon in place: the process (and its pid, whose
	// CPU time the benchmark reads) is the owner itself.
	p, err := Start("fluxon owner "+o.Key, filepath.Join(o.Dir, "owner.log"), []string{"FLUXON_LOG=warn"},
		"ip", "netns", "exec", o.NS, bin, "owner", "--config", cfg)
	if err != nil {
		os.RemoveAll(shmDir)
		return nil, err
	}
	w := &Owner{Proc: p, SharedFilePath: shared, shmDir: shmDir,
		RESP: fmt.Sprintf("%s:%d", o.IP, OwnerRESPPort), GRPC: fmt.Sprintf("%s:%d", o.IP, OwnerGRPCPort)}
	if err := p.WaitFor(ctx, roleStartTimeout, `"running"`, func() bool { return strings.Contains(p.Output(), " running") }); err != nil {
		_ = w.Stop()
		return nil, err
	}
	return w, nil
}

// Stop stops the owner and removes its pool.
func (w *Owner) Stop() error {
	return errors.Join(w.Proc.Stop(), os.RemoveAll(w.shmDir))
}

// StartMaster starts `fluxon master` in this namespace and waits until it
// runs.
func StartMaster(ctx context.Context, fluxon, dir, etcd, host string) (*Proc, error) {
	bin, err := fluxonBin(fluxon)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "master.yaml")
	if err := os.WriteFile(cfg, []byte(MasterConfig(etcd, host, filepath.Join(dir, "logs"))), 0o644); err != nil {
		return nil, err
	}
	p, err := Start("fluxon master", filepath.Join(dir, "master.log"), []string{"FLUXON_LOG=warn"}, bin, "master", "--config", cfg)
	if err != nil {
		return nil, err
	}
	if err := p.WaitFor(ctx, roleStartTimeout, `"running"`, func() bool { return strings.Contains(p.Output(), " running") }); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// WaitForOwners waits until the master's routing table lists n owners, as
// `fluxon status` reports it.
func WaitForOwners(ctx context.Context, fluxon, etcd string, n int) error {
	bin, err := fluxonBin(fluxon)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(clusterUpTimeout)
	var last string
	for {
		out, err := exec.CommandContext(ctx, bin, "status", "-o", "json", "--etcd", etcd, "--cluster", ClusterName).Output()
		var st struct {
			Routing *struct {
				Owners []json.RawMessage `json:"owners"`
			} `json:"routing"`
		}
		switch {
		case err != nil:
			last = err.Error()
		case json.Unmarshal(out, &st) != nil:
			last = "unreadable status: " + string(out)
		case st.Routing == nil:
			last = "no routing table yet"
		case len(st.Routing.Owners) == n:
			return nil
		default:
			last = fmt.Sprintf("%d of %d owners in the routing table", len(st.Routing.Owners), n)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not list %d owners within %s: %s", n, clusterUpTimeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval * 4):
		}
	}
}

func fluxonBin(path string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w (%v)", ErrNoFluxon, err)
	}
	return filepath.Abs(path)
}
