//go:build !linux || !cgo || !ucx

package ucx

import "context"

// Node is a UCX context and worker; in this build Open always fails.
type Node struct{}

// Endpoint is a connection to a peer node's worker.
type Endpoint struct{}

// Mapping is memory mapped for remote access.
type Mapping struct{}

// RKey is a peer's unpacked remote key.
type RKey struct{}

// Supported reports whether this build has UCX.
func Supported() bool { return false }

// Live is the number of open handles (always 0 here).
func Live() int64 { return 0 }

// Open returns ErrNotSupported.
func Open() (*Node, error) { return nil, ErrNotSupported }

// Close implements io.Closer.
func (*Node) Close() error { return ErrNotSupported }

// Address returns ErrNotSupported.
func (*Node) Address() ([]byte, error) { return nil, ErrNotSupported }

// Connect returns ErrNotSupported.
func (*Node) Connect([]byte) (*Endpoint, error) { return nil, ErrNotSupported }

// Map returns ErrNotSupported.
func (*Node) Map([]byte) (*Mapping, error) { return nil, ErrNotSupported }

// Close implements io.Closer.
func (*Endpoint) Close() error { return ErrNotSupported }

// Unpack returns ErrNotSupported.
func (*Endpoint) Unpack([]byte) (*RKey, error) { return nil, ErrNotSupported }

// Get returns ErrNotSupported.
func (*Endpoint) Get(context.Context, *RKey, uint64, []byte) error { return ErrNotSupported }

// Close implements io.Closer.
func (*Mapping) Close() error { return ErrNotSupported }

// Addr returns 0.
func (*Mapping) Addr() uint64 { return 0 }

// RKey returns nil.
func (*Mapping) RKey() []byte { return nil }

// Close implements io.Closer.
func (*RKey) Close() error { return ErrNotSupported }
