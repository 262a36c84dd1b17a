// Package node runs one member process of a given role: it connects to etcd,
// registers the member under a lease, serves /metrics and /healthz, and runs
// the role's loop (master election and routing; owner routing watch). The CLI
// and `fluxon up` are thin layers over it.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/master"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/telemetry"
	"github.com/fluxon-dev/fluxon/services/mq"
	"github.com/fluxon-dev/fluxon/services/owner"
)

// Version is the Fluxon release this binary reports; the linker may override it.
var Version = "0.1.0-dev"

// Running is a started member. Close stops it cleanly: it resigns leadership,
// revokes its registration and stops serving.
type Running struct {
	Role   meta.Role
	Member meta.Member
	Master *master.Master // masters only
	Owner  *owner.Owner   // owners only: the data plane

	log    *slog.Logger
	store  *meta.Store
	reg    *meta.Registration
	http   *telemetry.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	routing meta.RoutingTable
	closed  bool

	// kvJoined: a routing table listing this owner has gone to its cluster
	// KV. Only the followRouting goroutine touches it.
	kvJoined bool
}

// Endpoints returns where this member listens, by name ("http", …).
func (r *Running) Endpoints() map[string]string { return maps.Clone(r.Member.Endpoints) }

// Routing returns the latest routing table this member has seen.
func (r *Running) Routing() meta.RoutingTable {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routing
}

// Start runs a member of the given role (master or owner) from cfg.
func Start(ctx context.Context, role meta.Role, cfg *config.Config, log *slog.Logger) (*Running, error) {
	if role != meta.RoleMaster && role != meta.RoleOwner {
		return nil, fmt.Errorf("node.Start: role %q cannot run as a standalone member", role)
	}
	log = log.With("role", string(role), "instance_key", cfg.InstanceKey)
	store, err := meta.Connect(ctx, cfg.EtcdURLs(), cfg.ClusterName, log)
	if err != nil {
		return nil, err
	}
	r := &Running{Role: role, log: log, store: store}
	ok := false
	defer func() {
		if !ok {
			r.stop()
		}
	}()

	reg := telemetry.NewRegistry()
	r.http, err = telemetry.Listen(cfg.Listen.HTTP, reg, r.health)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	r.Member = meta.Member{
		InstanceKey: cfg.InstanceKey,
		NodeID:      cfg.NodeID,
		Role:        role,
		ClusterName: cfg.ClusterName,
		SubCluster:  cfg.SubCluster,
		Host:        host,
		PID:         os.Getpid(),
		StartTime:   time.Now().UTC(),
		Version:     Version,
		Endpoints:   map[string]string{"http": r.http.Addr()},
	}
	if role == meta.RoleOwner {
		r.Owner, err = owner.Start(cfg, cfg.InstanceKey, log, reg, owner.Deps{Meta: store, StartTime: r.Member.StartTime})
		if err != nil {
			return nil, err
		}
		for name, addr := range r.Owner.Endpoints {
			r.Member.Endpoints[name] = addr
		}
		r.Member.PoolDRAM = uint64(cfg.ContributeToClusterPoolSize.DRAM)
		if len(cfg.ContributeToClusterPoolSize.VRAM) > 0 {
			r.Member.PoolVRAM = map[string]uint64{}
			for dev, sz := range cfg.ContributeToClusterPoolSize.VRAM {
				r.Member.PoolVRAM[dev] = uint64(sz)
			}
		}
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "fluxon_member_info",
		Help:        "Constant 1, labelled with this member's identity.",
		ConstLabels: prometheus.Labels{"role": string(role), "instance_key": cfg.InstanceKey, "cluster": cfg.ClusterName, "version": Version},
	})
	info.Set(1)
	reg.MustRegister(info)

	r.reg, err = store.Register(ctx, r.Member, time.Duration(cfg.Lease.TTL))
	if err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	epoch := prometheus.NewGauge(prometheus.GaugeOpts{Name: "fluxon_routing_epoch", Help: "Epoch of the routing table this member follows."})
	reg.MustRegister(epoch)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.followRouting(runCtx, epoch)
	}()
	if role == meta.RoleMaster {
		r.http.Mux.Handle(mq.PanelPath, mq.PanelHandler(store))
		r.Master = master.New(master.Options{
			Store: store, ID: cfg.InstanceKey, ElectionTTL: time.Duration(cfg.Master.ElectionTTL),
			Log: log, Registerer: reg,
		})
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			_ = r.Master.Run(runCtx)
		}()
	}
	log.Info("member started", "http", r.http.Addr(), "etcd", cfg.EtcdURLs())
	ok = true
	return r, nil
}

// followRouting keeps the member's view of the routing table current.
func (r *Running) followRouting(ctx context.Context, epoch prometheus.Gauge) {
	var rev int64
	for ctx.Err() == nil {
		t, rv, err := r.store.Routing(ctx)
		if err == nil || errors.Is(err, meta.ErrNoRoutingTable) {
			rev = rv
			if err == nil {
				r.setRouting(t, epoch)
			}
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	for t := range r.store.WatchRouting(ctx, rev) {
		r.setRouting(t, epoch)
	}
}

func (r *Running) setRouting(t meta.RoutingTable, epoch prometheus.Gauge) {
	r.mu.Lock()
	changed := t.Epoch != r.routing.Epoch
	newer := t.Epoch > r.routing.Epoch
	if t.Epoch >= r.routing.Epoch {
		r.routing = t
	}
	r.mu.Unlock()
	if changed {
		epoch.Set(float64(t.Epoch))
		r.log.Debug("routing table", "epoch", t.Epoch, "owners", len(t.Owners))
	}
	if newer && r.Owner != nil && (r.kvJoined || r.listsSelf(t)) {
		// The owner's KV homes keys over the owners of this table; only
		// newer tables go to it (this goroutine is the only caller, so they
		// arrive in order), and none from before this owner first appears
		// in one: those were published while its registration was on the
		// way and have no part for it. An error is logged and the member
		// keeps following: the next table may be accepted.
		r.kvJoined = true
		if err := r.Owner.SetRouting(r.Member.ClusterName, t); err != nil {
			r.log.Error("cluster KV refused the routing table; keys homed on changed owners may read as unavailable", "epoch", t.Epoch, "err", err)
		}
	}
}

// listsSelf reports whether t lists this member's incarnation as an owner.
func (r *Running) listsSelf(t meta.RoutingTable) bool {
	for _, o := range t.Owners {
		if o.InstanceKey == r.Member.InstanceKey && o.StartTime.Equal(r.Member.StartTime) {
			return true
		}
	}
	return false
}

func (r *Running) health() (map[string]any, error) {
	d := map[string]any{"role": string(r.Role), "instance_key": r.Member.InstanceKey, "epoch": r.Routing().Epoch}
	if r.Master != nil {
		d["leading"] = r.Master.Leading()
	}
	if r.Owner != nil {
		st := r.Owner.Store.Stats()
		d["pool_capacity"], d["pool_used"], d["objects"], d["externals"] = st.PoolCapacity, st.Used, st.Objects, r.Owner.Attached()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := r.store.Leader(ctx); err != nil {
		return d, err
	}
	return d, nil
}

// Close stops the member: resign, deregister, stop serving.
func (r *Running) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	return r.stop()
}

func (r *Running) stop() error {
	var errs []error
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	if r.reg != nil {
		errs = append(errs, r.reg.Close())
	}
	if r.Owner != nil {
		errs = append(errs, r.Owner.Close())
	}
	if r.http != nil {
		errs = append(errs, r.http.Close())
	}
	errs = append(errs, r.store.Close())
	r.log.Info("member stopped")
	return errors.Join(errs...)
}
