package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchRetryDelay paces re-reads while etcd is unreachable.
const watchRetryDelay = 200 * time.Millisecond

// PublishRouting stores t as the cluster's routing table, only while l still
// leads: a deposed master can never overwrite its successor's table.
func (l *Leadership) PublishRouting(ctx context.Context, t RoutingTable) error {
	value, err := encode(t)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := l.s.cli.Txn(ctx).If(l.guard()).Then(clientv3.OpPut(l.s.keys.Routing(), value)).Commit()
	if err != nil {
		return fmt.Errorf("%w: publishing routing table: %v", ErrEtcdUnreachable, err)
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// Routing reads the published routing table and its etcd revision. It returns
// ErrNoRoutingTable when no master has published one yet.
func (s *Store) Routing(ctx context.Context) (RoutingTable, int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.Routing())
	if err != nil {
		return RoutingTable{}, 0, fmt.Errorf("%w: reading routing table: %v", ErrEtcdUnreachable, err)
	}
	if len(resp.Kvs) == 0 {
		return RoutingTable{}, resp.Header.Revision, ErrNoRoutingTable
	}
	var t RoutingTable
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return RoutingTable{}, 0, fmt.Errorf("routing table in etcd is unreadable: %w", err)
	}
	return t, resp.Header.Revision, nil
}

// WatchRouting delivers every routing table published after revision rev
// (from Routing). It retries broken watches by re-reading the table, so the
// receiver always converges on the latest epoch. The channel closes when ctx
// ends.
func (s *Store) WatchRouting(ctx context.Context, rev int64) <-chan RoutingTable {
	out := make(chan RoutingTable, 4)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			wch := s.cli.Watch(ctx, s.keys.Routing(), clientv3.WithRev(rev+1))
			for resp := range wch {
				if resp.Err() != nil {
					break
				}
				for _, ev := range resp.Events {
					rev = ev.Kv.ModRevision
					if ev.Type != clientv3.EventTypePut {
						continue
					}
					var t RoutingTable
					if json.Unmarshal(ev.Kv.Value, &t) != nil {
						continue
					}
					select {
					case out <- t:
					case <-ctx.Done():
						return
					}
				}
			}
			if ctx.Err() != nil {
				return
			}
			// The watch broke (compaction, etcd restart): re-read and resume.
			t, r, err := s.Routing(ctx)
			if err == nil {
				rev = r
				select {
				case out <- t:
				case <-ctx.Done():
					return
				}
			} else if errors.Is(err, ErrNoRoutingTable) {
				rev = r
			} else {
				select {
				case <-time.After(watchRetryDelay):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
