package meta

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leadership is a won election. Lost() closes when the leadership ends
// (session lease expired, etcd cut off, Resign or Close); from then on
// leader-guarded writes fail with ErrNotLeader.
type Leadership struct {
	s        *Store
	session  *concurrency.Session
	election *concurrency.Election
	id       string
	key      string // our election key, fixed when we won
	rev      int64  // its create revision
}

// Campaign blocks until this process leads the cluster's masters or ctx
// ends. ttl is the session lease: when a leader dies, a standby takes over
// within about ttl.
func (s *Store) Campaign(ctx context.Context, id string, ttl time.Duration) (*Leadership, error) {
	secs := max(int((ttl+time.Second-1)/time.Second), 1)
	session, err := concurrency.NewSession(s.cli, concurrency.WithTTL(secs), concurrency.WithContext(context.Background()))
	if err != nil {
		return nil, fmt.Errorf("%w: opening election session: %v", ErrEtcdUnreachable, err)
	}
	e := concurrency.NewElection(session, s.keys.Election())
	if err := e.Campaign(ctx, id); err != nil {
		_ = session.Close()
		return nil, fmt.Errorf("campaigning for master: %w", err)
	}
	return &Leadership{s: s, session: session, election: e, id: id, key: e.Key(), rev: e.Rev()}, nil
}

// Lost closes when leadership has ended.
func (l *Leadership) Lost() <-chan struct{} { return l.session.Done() }

// Resign gives up leadership at once so a standby can take over without
// waiting for the lease to expire.
func (l *Leadership) Resign(ctx context.Context) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	err := l.election.Resign(ctx)
	cerr := l.session.Close()
	return errors.Join(err, cerr)
}

// guard is the transaction condition that we still hold leadership.
func (l *Leadership) guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// Leader returns the id of the current leading master, or "" when none leads.
func (s *Store) Leader(ctx context.Context) (string, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.Election()+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return "", fmt.Errorf("%w: reading leader: %v", ErrEtcdUnreachable, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
