package meta

import (
	"context"
	"encoding/json"
	"fmt"
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
	// ProbedAt is when the probe ran, for operators reading etcd.
	ProbedAt time.Time `json:"probed_at"`
}

// PublishReach writes instanceKey's reachability record under a lease of
// ttl, so a member that stops probing (dead, cut off from etcd) drops out
// of the graph on its own. Each call takes a fresh lease; the previous one
// expires with its ttl.
func (s *Store) PublishReach(ctx context.Context, instanceKey string, reaches []string, ttl time.Duration) error {
	rec := ReachRecord{Reaches: slices.Sorted(slices.Values(reaches)), ProbedAt: time.Now().UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	secs := int64((ttl + time.Second - 1) / time.Second)
	lease, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return fmt.Errorf("%w: granting reachability lease: %v", ErrEtcdUnreachable, err)
	}
	if _, err := s.cli.Put(ctx, s.keys.ReachOf(instanceKey), string(b), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("%w: publishing reachability: %v", ErrEtcdUnreachable, err)
	}
	return nil
}

// ReachGraph reads every member's reachability record: graph[a] lists
// the members a reaches.
func (s *Store) ReachGraph(ctx context.Context) (map[string][]string, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.Reach(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: reading reachability: %v", ErrEtcdUnreachable, err)
	}
	g := make(map[string][]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec ReachRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			s.log.Warn("skipping unreadable reachability record", "key", string(kv.Key), "err", err)
			continue
		}
		g[strings.TrimPrefix(string(kv.Key), s.keys.Reach())] = rec.Reaches
	}
	return g, nil
}
