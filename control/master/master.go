package master

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/control/meta"
)

// campaignRetryDelay paces a new campaign after etcd errors.
const campaignRetryDelay = 500 * time.Millisecond

// Options configure a master.
type Options struct {
	Store       *meta.Store
	ID          string        // instance_key of this master
	ElectionTTL time.Duration // standby takes over within about this long
	Log         *slog.Logger
	Registerer  prometheus.Registerer // nil: no metrics
	Now         func() time.Time      // nil: time.Now
}

// Master campaigns for leadership and, while it leads, publishes the routing table.
type Master struct {
	o Options

	mu      sync.Mutex
	leading bool
	table   meta.RoutingTable

	mLeader  prometheus.Gauge
	mEpoch   prometheus.Gauge
	mMembers *prometheus.GaugeVec
	mPublish prometheus.Counter
	mTerms   prometheus.Counter
}

// New returns a master; Run starts it.
func New(o Options) *Master {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Master{
		o:        o,
		mLeader:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "fluxon_master_is_leader", Help: "1 while this master leads the cluster."}),
		mEpoch:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "fluxon_master_routing_epoch", Help: "Epoch of the last routing table this master published or saw."}),
		mMembers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fluxon_master_members", Help: "Live members by role, as the leading master sees them."}, []string{"role"}),
		mPublish: prometheus.NewCounter(prometheus.CounterOpts{Name: "fluxon_master_routing_publishes_total", Help: "Routing tables published."}),
		mTerms:   prometheus.NewCounter(prometheus.CounterOpts{Name: "fluxon_master_terms_total", Help: "Times this master won the election."}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(m.mLeader, m.mEpoch, m.mMembers, m.mPublish, m.mTerms)
	}
	return m
}

// Leading reports whether this master currently leads.
func (m *Master) Leading() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leading
}

// Table returns the last table this master published.
func (m *Master) Table() meta.RoutingTable {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table
}

// Run campaigns, leads, and campaigns again after losing leadership, until
// ctx ends. On return it has resigned, so a standby takes over at once.
func (m *Master) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		l, err := m.o.Store.Campaign(ctx, m.o.ID, m.o.ElectionTTL)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			m.o.Log.Warn("master campaign failed; retrying", "err", err)
			sleep(ctx, campaignRetryDelay)
			continue
		}
		m.o.Log.Info("leading the cluster", "master", m.o.ID)
		m.mTerms.Inc()
		m.setLeading(true)
		err = m.lead(ctx, l)
		m.setLeading(false)
		rctx, cancel := context.WithTimeout(context.Background(), meta.RequestTimeout)
		_ = l.Resign(rctx)
		cancel()
		if ctx.Err() != nil {
			break
		}
		m.o.Log.Warn("leadership lost; campaigning again", "err", err)
		sleep(ctx, campaignRetryDelay)
	}
	return nil
}

func (m *Master) setLeading(v bool) {
	m.mu.Lock()
	m.leading = v
	m.mu.Unlock()
	if v {
		m.mLeader.Set(1)
	} else {
		m.mLeader.Set(0)
	}
}

// lead runs one term: list members, publish, follow the watch. Returns when
// leadership is lost, ctx ends, or etcd breaks the watch (then the caller
// campaigns again, which also relists).
func (m *Master) lead(ctx context.Context, l *meta.Leadership) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-l.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()

	last, _, err := m.o.Store.Routing(ctx)
	if err != nil && !errors.Is(err, meta.ErrNoRoutingTable) {
		return err
	}
	router := NewRouter(last)
	list, rev, err := m.o.Store.Members(ctx)
	if err != nil {
		return err
	}
	ms := NewMembership(list)
	if err := m.publish(ctx, l, router, ms); err != nil {
		return err
	}
	events, errc := m.o.Store.WatchMembers(ctx, rev)
	for {
		select {
		case batch, ok := <-events:
			if !ok {
				select {
				case err := <-errc:
					return err
				default:
					return ctx.Err()
				}
			}
			changed := false
			for _, ev := range batch {
				changed = ms.Apply(ev) || changed
			}
			if changed {
				if err := m.publish(ctx, l, router, ms); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *Master) publish(ctx context.Context, l *meta.Leadership, r *Router, ms *Membership) error {
	for role, n := range ms.Count() {
		m.mMembers.WithLabelValues(string(role)).Set(float64(n))
	}
	for _, role := range []meta.Role{meta.RoleMaster, meta.RoleOwner, meta.RoleExternal} {
		if _, ok := ms.Count()[role]; !ok {
			m.mMembers.WithLabelValues(string(role)).Set(0)
		}
	}
	prev := r.Table()
	t, changed := r.Next(ms.Owners(), m.o.ID, m.o.Now())
	if changed {
		if err := l.PublishRouting(ctx, t); err != nil {
			*r = *NewRouter(prev) // not published: the next leader or term retries from prev
			return err
		}
		m.mPublish.Inc()
		m.o.Log.Info("routing table published", "epoch", t.Epoch, "owners", len(t.Owners))
	}
	m.mu.Lock()
	m.table = t
	m.mu.Unlock()
	m.mEpoch.Set(float64(t.Epoch))
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
