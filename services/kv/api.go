// Package kv is the key-value store an owner runs over its shared-memory pool.
// Values live in the pool (cgo/pool); the index, leases and eviction live
// here. Reads hand out references to the bytes in place (zero copy): an
// overwrite or remove never frees memory a reader still holds, and a reader
// never sees a half-written value, because a value becomes visible only after
// it is sealed.
package kv

import (
	"errors"
	"time"
)

// Limits.
const (
	// MaxKeyLen is the longest key accepted, in bytes. Keys are stored in the
	// owner's index and in every directory entry that names them; 64 KiB keeps
	// one pathological key from costing more than a small value.
	MaxKeyLen = 64 << 10
	// MinLeaseTTL and MaxLeaseTTL bound a lease's time to live.
	MinLeaseTTL = time.Second
	MaxLeaseTTL = 30 * 24 * time.Hour
	// evictionSample is how many candidates one eviction step compares.
	evictionSample = 16
	// leaseTick is how often expired leases are reaped.
	leaseTick = 100 * time.Millisecond
)

// Errors a caller can hit; compare with errors.Is. Each wrapped error says
// what to do.
var (
	ErrNotFound      = errors.New("key not found")
	ErrExists        = errors.New("key already exists")
	ErrInflight      = errors.New("another put of this key is in progress")
	ErrEmptyKey      = errors.New("empty key")
	ErrKeyTooLong    = errors.New("key too long")
	ErrValueTooLarge = errors.New("value larger than the pool can ever hold")
	ErrPoolFull      = errors.New("pool full")
	ErrLeaseNotFound = errors.New("lease not found or expired")
	ErrLeaseTTL      = errors.New("lease TTL out of range")
	ErrClosed        = errors.New("kv store closed")
	ErrBadValue      = errors.New("malformed value")
	// ErrUnavailable: the key lives on owners this one cannot reach now (a
	// partition, an owner that died and has not left the routing table yet,
	// no routing table yet). Retry later; nothing about the key was changed
	// by the failed read, and a failed write may or may not have happened.
	// ErrReplicas: a put is committed, but fewer copies exist than it asked
	// for (PutOptions.Replicas, Placement).
	ErrReplicas    = errors.New("fewer replicas than asked")
	ErrUnavailable = errors.New("key unavailable: the owners that hold it cannot be reached now; retry later")
)

// LeaseID names a lease. 0 means "no lease".
type LeaseID int64

// ValueKind says how a value's bytes are to be read.
type ValueKind uint8

// Value kinds.
const (
	KindBytes ValueKind = 0 // opaque bytes
	KindDict  ValueKind = 1 // a flat dict encoded by EncodeDict
)

func (k ValueKind) String() string {
	switch k {
	case KindBytes:
		return "bytes"
	case KindDict:
		return "dict"
	}
	return "unknown"
}

// PutOptions change how Put behaves.
type PutOptions struct {
	// Lease binds the object to a lease: it goes when the lease ends, and it
	// is never evicted meanwhile.
	Lease LeaseID
	// TTL gives the object a lease of its own with this time to live (RESP's
	// SET EX). Mutually exclusive with Lease.
	TTL time.Duration
	// IfAbsent rejects the put with ErrExists when the key exists.
	IfAbsent bool
	// IfPresent rejects the put with ErrNotFound when the key does not exist.
	IfPresent bool
	// RejectInflight rejects the put with ErrInflight while another put of
	// the same key is being written.
	RejectInflight bool
	// Kind records how the value is encoded.
	Kind ValueKind
	// Replicas is how many owners on distinct hosts hold the value when the
	// put returns, the writer's own included (0 and 1: the writer's only).
	// Only the cluster KV (services/kv/cluster) acts on it; one owner's
	// store has nowhere else to put a copy.
	Replicas int
	// Placement names owners (instance keys) that should hold a copy too:
	// a hint for where the value will be read. They count toward Replicas
	// and come first; an owner not in the routing table fails the hint
	// (the value is still committed). Cluster KV only, like Replicas.
	Placement []string
}

// Info describes one stored object.
type Info struct {
	Key     string
	Size    uint64
	Version uint64
	Kind    ValueKind
	Lease   LeaseID
	// TTL is the remaining time of the object's lease; 0 when it has none.
	TTL time.Duration
}

// Stats are the store's counters, for `fluxon kv stat`, INFO and metrics.
type Stats struct {
	PoolSize     uint64 `json:"pool_size"`
	PoolCapacity uint64 `json:"pool_capacity"`
	Used         uint64 `json:"used"`
	Free         uint64 `json:"free"`
	Objects      uint64 `json:"objects"`
	Leases       uint64 `json:"leases"`
	Evictions    uint64 `json:"evictions"`
	Hits         uint64 `json:"hits"`
	Misses       uint64 `json:"misses"`
	Puts         uint64 `json:"puts"`
	Removes      uint64 `json:"removes"`
	Expired      uint64 `json:"expired"`
}
