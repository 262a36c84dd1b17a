//go:build !linux

package ring

// Region is unavailable on this system; see ErrNotSupported.
type Region struct{}

// Map returns ErrNotSupported: shared-memory rings need Linux.
func Map(path string, size int, create bool) (*Region, error) { return nil, ErrNotSupported }

func (r *Region) Bytes() []byte { return nil }
func (r *Region) Path() string  { return "" }
func (r *Region) Close() error  { return nil }
func (r *Region) Unlink() error { return ErrNotSupported }
