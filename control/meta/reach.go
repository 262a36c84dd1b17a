package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reach is the prefix of the reachability records: under Reach()+key, the
// members whose relay endpoint member key connected to in its last probe.
func (k Keyspace) Reach() string { return k.prefix + "reach/" }

// ReachOf is one member's reachability record.
func (k Keyspace) ReachOf(instanceKey string) string { return k.Reach() + instanceKey }

// ReachRecord is what a member publishes about who it reaches.
type ReachRecord struct {
	// Reaches lists instance keys, sorted.
	Reaches []string `json:"reaches"`
	// At maps a reached member that advertises several relay addresses to
	// the one the probe connected to, so the hop before it on a path dials
	// an address known to work. Members with one address are left out (it
	// is the one), which keeps records of clusters on one network as they
	// were; readers that predate it use Reaches only.
	At map[string]string `json:"at,omitempty"`
	// ProbedAt is when the probe ran, for operators reading etcd.
	ProbedAt time.Time `json:"probed_at"`
}

// PublishReach writes instanceKey's reachability record, reached mapping
// each member its probe connected to to the relay address that answered
// ("" for a member that advertises only one; see ReachRecord.At), under a lease of
// ttl, so a member that stops probing (dead, cut off from etcd) drops out
// of the graph on its own. The lease is kept from one call to the next
// (renewed once per call) and granted anew only when it has ended, so that
// probing every few seconds costs etcd one put and one renewal, not a
// lease each time.
func (s *Store) PublishReach(ctx context.Context, instanceKey string, reached map[string]string, ttl time.Duration) error {
	rec := ReachRecord{Reaches: slices.Sorted(maps.Keys(reached)), ProbedAt: time.Now().UTC()}
	for id, addr := range reached {
		if addr != "" {
			if rec.At == nil {
				rec.At = map[string]string{}
			}
			rec.At[id] = addr
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	s.reachMu.Lock()
	defer s.reachMu.Unlock()
	if s.reachLeases == nil {
		s.reachLeases = map[string]clientv3.LeaseID{}
	}
	for attempt := 0; attempt < 2; attempt++ {
		lease, ok := s.reachLeases[instanceKey]
		if ok {
			if _, err := s.cli.KeepAliveOnce(ctx, lease); err != nil {
				ok = false // ended (or etcd failed: a new grant says which)
			}
		}
		if !ok {
			secs := int64((ttl + time.Second - 1) / time.Second)
			g, err := s.cli.Grant(ctx, secs)
			if err != nil {
				return fmt.Errorf("%w: granting reachability lease: %v", ErrEtcdUnreachable, err)
			}
			lease = g.ID
			s.reachLeases[instanceKey] = lease
		}
		_, err = s.cli.Put(ctx, s.keys.ReachOf(instanceKey), string(b), clientv3.WithLease(lease))
		if err == nil {
			return nil
		}
		delete(s.reachLeases, instanceKey) // the lease ended between renewal and put: once more
	}
	return fmt.Errorf("%w: publishing reachability: %v", ErrEtcdUnreachable, err)
}

// ReachGraph reads every member's reachability record, by member.
func (s *Store) ReachGraph(ctx context.Context) (map[string]ReachRecord, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.Reach(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: reading reachability: %v", ErrEtcdUnreachable, err)
	}
	g := make(map[string]ReachRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec ReachRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			s.log.Warn("skipping unreadable reachability record", "key", string(kv.Key), "err", err)
			continue
		}
		g[strings.TrimPrefix(string(kv.Key), s.keys.Reach())] = rec
	}
	return g, nil
}
