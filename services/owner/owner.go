// Package owner assembles an owner's data plane on one host: the
// shared-memory pool, the KV store over it, the local attach server for
// externals (shared memory + rings), the gRPC and RESP endpoints, and
// shared.json, which tells externals where all of it is.
package owner

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/cgo/ring"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/cluster"
	"github.com/fluxon-dev/fluxon/services/kv/shm"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/dpdk"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
	"github.com/fluxon-dev/fluxon/services/transport/rdma"
	"github.com/fluxon-dev/fluxon/services/transport/relay"
)

// SharedFileVersion is the version of shared.json's layout.
const SharedFileVersion = 1

// Shared is shared.json: what an external on this host needs to attach.
type Shared struct {
	Version         int               `json:"version"`
	ProtocolVersion int               `json:"protocol_version"`
	ClusterName     string            `json:"cluster_name"`
	SubCluster      string            `json:"sub_cluster,omitempty"`
	InstanceKey     string            `json:"instance_key"`
	PID             int               `json:"pid"`
	StartTime       time.Time         `json:"start_time"`
	PoolPath        string            `json:"pool_path"`
	PoolSize        uint64            `json:"pool_size"`
	SegmentSize     uint64            `json:"segment_size"`
	ControlSocket   string            `json:"control_socket"`
	EtcdEndpoints   []string          `json:"etcd_endpoints"`
	Endpoints       map[string]string `json:"endpoints"`
	Transports      []string          `json:"transports"`
}

// Paths derives where an owner of cfg keeps its files.
type Paths struct {
	Dir, Pool, Rings, SharedDir, SharedFile, Socket string
}

// PathsFor returns the owner's paths for a cluster.
func PathsFor(sharedMemoryPath, sharedFilePath, cluster string) Paths {
	dir := filepath.Join(sharedMemoryPath, cluster)
	sdir := filepath.Join(sharedFilePath, cluster)
	return Paths{Dir: dir, Pool: filepath.Join(dir, "pool"), Rings: filepath.Join(dir, "rings"),
		SharedDir: sdir, SharedFile: filepath.Join(sdir, "shared.json"), Socket: filepath.Join(sdir, "owner.sock")}
}

// ReadShared reads shared.json.
func ReadShared(path string) (Shared, error) {
	var s Shared
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if s.Version != SharedFileVersion {
		return s, fmt.Errorf("%s: layout version %d, this build reads %d", path, s.Version, SharedFileVersion)
	}
	return s, nil
}

// Owner is a running owner data plane.
type Owner struct {
	// Store is this owner's pool: the keys and copies held here.
	Store *kv.Store
	// KV is what the frontends (shm, gRPC, RESP) serve: Store itself for an
	// owner on its own, the cross-host KV (through Cluster) in a cluster.
	KV kv.Backend
	// Cluster is the owner's part of the cross-host KV (nil without
	// Deps.Meta); it follows the routing table through SetRouting.
	Cluster   *cluster.Node
	Pool      *pool.Pool
	Paths     Paths
	Endpoints map[string]string

	log *slog.Logger
	shm *shm.Server
	// RPC is the owner's node-to-node RPC endpoint (nil without Deps.Meta).
	RPC     *rpc.Node
	closers []func() error
	// relayRouter finds relay paths (nil: this owner dials directly only).
	relayRouter relay.Router
	relaySelf   string
	// tstats counts both nodes' transports; skipLogged: the transports
	// that cannot run were logged once.
	tstats     *multi.Stats
	skipLogged bool
	// rdma and dpdkEP are opened once and shared by both nodes; rdmaErr
	// and dpdkErr say why they could not be.
	openRDMA func(rdma.Options) (ClosableTransport, error)
	rdma     ClosableTransport
	rdmaErr  error
	dpdkEP   *dpdk.Endpoint
	dpdkErr  error
}

// Deps are what an owner running inside a cluster member gets from it.
type Deps struct {
	// Meta, when set, lets the owner resolve other members for RPC.
	Meta *meta.Store
	// StartTime is the member's registered start time (its incarnation).
	StartTime time.Time
	// OpenRDMA opens the RDMA transport (nil: rdma.New); tests stand in
	// for a device, which no host they run on has.
	OpenRDMA func(rdma.Options) (ClosableTransport, error)
}

// ClosableTransport is a transport the owner closes when it stops.
type ClosableTransport interface {
	transport.Transport
	Close() error
}

// Start creates the pool and starts every endpoint. Members of the routing
// table learn the returned Endpoints through the owner's registration.
func Start(cfg *config.Config, instanceKey string, log *slog.Logger, reg prometheus.Registerer, deps Deps) (*Owner, error) {
	paths := PathsFor(cfg.SharedMemoryPath, cfg.SharedFilePath, cfg.ClusterName)
	o := &Owner{Paths: paths, log: log, Endpoints: map[string]string{}, openRDMA: deps.OpenRDMA}
	if o.openRDMA == nil {
		o.openRDMA = openRDMA
	}
	ok := false
	defer func() {
		if !ok {
			_ = o.Close()
		}
	}()
	if c, err := net.Dial("unix", paths.Socket); err == nil {
		c.Close()
		return nil, fmt.Errorf("another owner of cluster %q is running on this host (it answers on %s); one owner per host and cluster", cfg.ClusterName, paths.Socket)
	}
	if err := os.MkdirAll(paths.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("shared_memory_path: %w", err)
	}
	if err := os.MkdirAll(paths.SharedDir, 0o755); err != nil {
		return nil, fmt.Errorf("shared_file_path: %w", err)
	}
	// A pool or rings left by a crashed owner of this cluster are stale: nobody
	// answers on the socket, so replace them.
	_ = os.RemoveAll(paths.Rings)
	var err error
	o.Pool, err = pool.CreateWith(paths.Pool, uint64(cfg.ContributeToClusterPoolSize.DRAM), uint64(cfg.Pool.SegmentSize), pool.Options{Replace: true})
	if err != nil {
		return nil, fmt.Errorf("creating the pool (contribute_to_cluster_pool_size.dram %s at %s): %w", cfg.ContributeToClusterPoolSize.DRAM, paths.Pool, err)
	}
	o.closers = append(o.closers, o.Pool.Destroy)
	o.Store, err = kv.New(o.Pool, kv.Options{Log: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	o.closers = append(o.closers, o.Store.Close)
	o.KV = o.Store
	if err := o.startRelay(cfg, instanceKey, log, deps); err != nil {
		return nil, err
	}
	if err := o.startClusterKV(cfg, instanceKey, log, reg, deps); err != nil {
		return nil, err
	}
	if o.Cluster != nil {
		o.KV = &clusterKV{store: o.Store, node: o.Cluster, opTimeout: DefaultKVOpTimeout}
	}
	mode, err := ring.ParsePollMode(cfg.Network.PollMode)
	if err != nil {
		return nil, err
	}
	o.shm, err = shm.Listen(o.KV, shm.ServerOptions{
		SocketPath: paths.Socket, RingDir: paths.Rings, PoolPath: paths.Pool, Owner: instanceKey,
		PollMode: mode, Log: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	o.closers = append(o.closers, o.shm.Close)
	o.Endpoints["socket"] = paths.Socket

	if err := o.startRPC(cfg, instanceKey, log, reg, deps); err != nil {
		return nil, err
	}
	if err := o.startNetwork(cfg, instanceKey, log, reg, deps); err != nil {
		return nil, err
	}
	info, _ := o.Pool.Info()
	sh := Shared{
		Version: SharedFileVersion, ProtocolVersion: shm.ProtocolVersion, ClusterName: cfg.ClusterName, SubCluster: cfg.SubCluster,
		InstanceKey: instanceKey, PID: os.Getpid(), StartTime: time.Now().UTC(), PoolPath: paths.Pool, PoolSize: info.Size,
		SegmentSize: info.SegmentSize, ControlSocket: paths.Socket, EtcdEndpoints: cfg.EtcdURLs(), Endpoints: o.Endpoints,
		Transports: o.transports(),
	}
	if err := writeJSON(paths.SharedFile, sh); err != nil {
		return nil, fmt.Errorf("writing %s: %w", paths.SharedFile, err)
	}
	o.closers = append(o.closers, func() error { return os.Remove(paths.SharedFile) })
	log.Info("owner data plane up", "pool", paths.Pool, "size", config.Size(info.Size), "segment", config.Size(info.SegmentSize), "socket", paths.Socket)
	ok = true
	return o, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// transports lists the transports this owner serves on.
func (o *Owner) transports() []string {
	if o.RPC == nil {
		return []string{}
	}
	return multi.Names(o.RPC.Addr())
}

// Attached returns how many externals are attached.
func (o *Owner) Attached() int { return o.shm.Attached() }

// Close stops every endpoint (detaching externals) and removes the pool.
func (o *Owner) Close() error {
	var errs []error
	for i := len(o.closers) - 1; i >= 0; i-- {
		errs = append(errs, o.closers[i]())
	}
	o.closers = nil
	return errors.Join(errs...)
}
