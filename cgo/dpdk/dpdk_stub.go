//go:build !linux || !cgo || !dpdk

package dpdk

// Port is an ethdev port; in this build Open always fails.
type Port struct{}

// Supported reports whether this build has DPDK.
func Supported() bool { return false }

// Open returns ErrNotSupported.
func Open(EAL, PortConfig) (*Port, error) { return nil, ErrNotSupported }

// MAC is the zero address.
func (*Port) MAC() [6]byte { return [6]byte{} }

// Send returns ErrNotSupported.
func (*Port) Send([]byte) error { return ErrNotSupported }

// Stats returns zeros.
func (*Port) Stats() Stats { return Stats{} }

// Close returns ErrNotSupported.
func (*Port) Close() error { return ErrNotSupported }

// Live is the number of open ports (always 0 here).
func Live() int64 { return 0 }

// Kick does nothing here.
func (*Port) Kick() {}
