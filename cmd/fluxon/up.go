package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/node"
	"github.com/fluxon-dev/fluxon/control/telemetry"
	"github.com/fluxon-dev/fluxon/internal/selfsigned"
)

type upFlags struct {
	dir, cfgPath, etcdClient, etcdPeer, http string
}

func newUpCmd() *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a single-host cluster: embedded etcd + master + owner",
		Long: `Start a working single-host cluster in one process: an embedded etcd, a master
and an owner contributing a shared-memory pool (256MiB unless the config says
otherwise). State lives in the work directory (--dir, default ./.fluxon):
etcd data, logs and cluster.json, which lets 'fluxon status' in the same
directory find the cluster. Ctrl-C or SIGTERM stops everything cleanly; running
'fluxon up' again resumes on the same state.

With --config, the file uses the schema of docs/config.md (role "up": owner
and master fields). If it names etcd_endpoints, no etcd is embedded and the
master and owner join that etcd instead.`,
		Example: `  fluxon up
  fluxon up --dir /var/lib/fluxon --config up.yaml
  fluxon up --etcd-client 127.0.0.1:12379 --etcd-peer 127.0.0.1:12380 --http 127.0.0.1:0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(cmd, f) },
	}
	cmd.Flags().StringVar(&f.dir, "dir", defaultWorkDir, "work directory for etcd data, logs and cluster.json")
	cmd.Flags().StringVarP(&f.cfgPath, "config", "c", "", "optional YAML config (docs/config.md)")
	cmd.Flags().StringVar(&f.etcdClient, "etcd-client", "127.0.0.1:2379", "embedded etcd client address (kept across restarts)")
	cmd.Flags().StringVar(&f.etcdPeer, "etcd-peer", "127.0.0.1:2380", "embedded etcd peer address (kept across restarts)")
	cmd.Flags().StringVar(&f.http, "http", "127.0.0.1:7070", "master HTTP address: /metrics, /healthz and the panel")
	return cmd
}

// lockWorkDir makes sure one `fluxon up` at a time uses dir. The lock is
// released by the kernel when the process exits, however it exits.
func lockWorkDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		return nil, fmt.Errorf("another 'fluxon up' (pid %s) is using %s; stop it or pass another --dir", strings.TrimSpace(string(b)), dir)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func runUp(cmd *cobra.Command, f upFlags) error {
	out := cmd.OutOrStdout()
	var cfg *config.Config
	var err error
	if f.cfgPath != "" {
		cfg, err = config.Load(f.cfgPath, config.RoleUp)
	} else {
		cfg, err = config.Parse([]byte("{}\n"), config.RoleUp)
	}
	if err != nil {
		return usageError{err}
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return usageError{err}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	lock, err := lockWorkDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(dir, "logs")
	}
	log, err := telemetry.NewLogger(cmd.ErrOrStderr(), cfg.LogDir, "up")
	if err != nil {
		return usageError{err}
	}
	defer log.Close()

	ctx, stop := signalContext()
	defer stop()

	var emb *meta.Embedded
	etcdNote := "external"
	if len(cfg.EtcdEndpoints) == 0 {
		client, peer := f.etcdClient, f.etcdPeer
		if prev, err := readClusterFile(dir); err == nil && prev.EtcdPeer != "" && !cmd.Flags().Changed("etcd-client") && !cmd.Flags().Changed("etcd-peer") {
			// etcd's own data records its peer address: resume on the same addresses.
			client, peer = strings.TrimPrefix(prev.EtcdEndpoints[0], "http://"), prev.EtcdPeer
		}
		emb, err = meta.StartEmbedded(filepath.Join(dir, "etcd"), client, peer)
		if err != nil {
			return err
		}
		defer emb.Close()
		cfg.EtcdEndpoints = []string{emb.ClientURL()}
		etcdNote = "embedded, data " + filepath.Join(dir, "etcd")
		f.etcdPeer = peer
	}

	// The encrypted transports get certificates from the first start on: a
	// CA and a member certificate under <dir>/tls, kept across restarts.
	tlsNote := "from the config"
	if cfg.Network.TLS.CertFile == "" {
		hosts := []string{"127.0.0.1", "::1", "localhost", cfg.Network.AdvertiseAddress}
		if h, err := os.Hostname(); err == nil {
			hosts = append(hosts, h)
		}
		certs, err := selfsigned.Ensure(filepath.Join(dir, "tls"), hosts, 10*365*24*time.Hour)
		if err != nil {
			return fmt.Errorf("making the cluster's TLS certificates under %s: %w", filepath.Join(dir, "tls"), err)
		}
		cfg.Network.TLS = config.TLSConfig{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
		tlsNote = "self-signed CA " + certs.CA
	}

	mcfg, ocfg := *cfg, *cfg
	mcfg.InstanceKey = cfg.InstanceKey + "-master"
	mcfg.NodeID, mcfg.MemberID = mcfg.InstanceKey, mcfg.InstanceKey
	if cmd.Flags().Changed("http") || f.cfgPath == "" {
		mcfg.Listen.HTTP = f.http
	}
	ocfg.Listen.HTTP = "127.0.0.1:0"

	m, err := node.Start(ctx, meta.RoleMaster, &mcfg, log.Logger)
	if err != nil {
		return err
	}
	o, err := node.Start(ctx, meta.RoleOwner, &ocfg, log.Logger)
	if err != nil {
		_ = m.Close()
		return err
	}
	if err := writeClusterFile(dir, clusterFile{ClusterName: cfg.ClusterName, EtcdEndpoints: cfg.EtcdEndpoints, EtcdPeer: f.etcdPeer, PID: os.Getpid()}); err != nil {
		log.Warn("cannot write cluster.json; 'fluxon status' will need --etcd", "err", err)
	}

	fmt.Fprintf(out, "Fluxon is up: cluster %q, state in %s\n", cfg.ClusterName, dir)
	fmt.Fprintf(out, "  etcd     %s (%s)\n", strings.Join(cfg.EtcdEndpoints, ","), etcdNote)
	fmt.Fprintf(out, "  master   %-24s http://%s/metrics  /healthz\n", mcfg.InstanceKey, m.Endpoints()["http"])
	ep := o.Endpoints()
	fmt.Fprintf(out, "  owner    %-24s http://%s/metrics  pool %s at %s\n", ocfg.InstanceKey, ep["http"], cfg.ContributeToClusterPoolSize.DRAM, o.Owner.Paths.Pool)
	fmt.Fprintf(out, "  gRPC     %s\n", ep["grpc"])
	if ep["resp"] != "" {
		fmt.Fprintf(out, "  RESP     %s (redis-cli -p %s)\n", ep["resp"], ep["resp"][strings.LastIndex(ep["resp"], ":")+1:])
	}
	fmt.Fprintf(out, "  local    %s (Go clients: fluxon.Open with shared_file_path %s)\n", ep["socket"], cfg.SharedFilePath)
	fmt.Fprintf(out, "  tls      %s (quic, wss)\n", tlsNote)
	fmt.Fprintf(out, "  logs     %s\n", cfg.LogDir)
	fmt.Fprintf(out, "Inspect with 'fluxon status' (from this directory, or --etcd %s --cluster %s). Stop with Ctrl-C.\n", cfg.EtcdEndpoints[0], cfg.ClusterName)

	var etcdErr <-chan error
	if emb != nil {
		etcdErr = emb.Err()
	}
	select {
	case <-ctx.Done():
		log.Info("signal received; stopping")
	case err := <-etcdErr:
		log.Error("embedded etcd failed; stopping", "err", err)
	}
	err = errors.Join(o.Close(), m.Close())
	fmt.Fprintln(out, "Fluxon stopped.")
	return err
}
