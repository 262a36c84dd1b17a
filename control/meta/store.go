package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Timeouts for talking to etcd.
const (
	// DialTimeout bounds the first connection to etcd.
	DialTimeout = 5 * time.Second
	// RequestTimeout bounds one etcd request made on behalf of a caller
	// without its own deadline.
	RequestTimeout = 5 * time.Second
)

// Sentinel errors callers compare with errors.Is.
var (
	// ErrDuplicateInstance: another live process holds the same instance_key.
	ErrDuplicateInstance = errors.New("instance_key already in use by a live process")
	// ErrEtcdUnreachable: no etcd endpoint answered.
	ErrEtcdUnreachable = errors.New("etcd unreachable")
	// ErrNotLeader: a leader-only write was attempted after leadership was lost.
	ErrNotLeader = errors.New("not the leading master")
	// ErrNoRoutingTable: no master has published a routing table yet.
	ErrNoRoutingTable = errors.New("no routing table published yet")
)

// Store is a connection to the etcd cluster scoped to one Fluxon cluster.
type Store struct {
	cli  *clientv3.Client
	keys Keyspace
	log  *slog.Logger

	reachMu     sync.Mutex
	reachLeases map[string]clientv3.LeaseID // PublishReach's, by member
}

// Connect dials etcd (endpoints as http://host:port or host:port) and checks
// that it answers, so a wrong address fails here with a clear error rather
// than later as a hang.
func Connect(ctx context.Context, endpoints []string, cluster string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: no etcd_endpoints given", ErrEtcdUnreachable)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          DialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrEtcdUnreachable, strings.Join(endpoints, ","), err)
	}
	pctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "/fluxon/ping", clientv3.WithCountOnly()); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("%w at %s: %v (is etcd running? check etcd_endpoints)", ErrEtcdUnreachable, strings.Join(endpoints, ","), err)
	}
	return &Store{cli: cli, keys: NewKeyspace(cluster), log: log}, nil
}

// Keys returns the cluster's keyspace.
func (s *Store) Keys() Keyspace { return s.keys }

// Close releases the connection.
func (s *Store) Close() error { return s.cli.Close() }

func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, RequestTimeout)
}
