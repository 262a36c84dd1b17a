//go:build !linux || !cgo

package pool

import "errors"

// Layout constants, as in fluxon/pool.h.
const (
	DefaultSegmentSize = uint64(16 << 20)
	MinSegmentSize     = uint64(1 << 20)
	MaxSegmentSize     = uint64(1 << 30)
	ObjectHeaderSize   = uint64(64)
	ObjectAlign        = uint64(64)
	BigObject          = uint64(1 << 20)
	PageSize           = uint64(4096)
	NumClasses         = 39
	LayoutVersion      = uint32(1)
)

// Sentinel errors; in this build only ErrNotSupported (and ErrClosed) are ever returned.
var (
	ErrClosed       = errors.New("pool: use of a closed pool handle")
	ErrNotSupported = errors.New("pool: shared-memory pool needs Linux and cgo; this build has neither")
	ErrNoMem        = errors.New("pool: no room")
	ErrTooBig       = errors.New("pool: object too big for the pool")
	ErrBusy         = errors.New("pool: busy")
	ErrNotFound     = errors.New("pool: not found")
	ErrExist        = errors.New("pool: already exists")
	ErrInvalid      = errors.New("pool: invalid argument")
	ErrCorrupt      = errors.New("pool: corrupt")
	ErrVersion      = errors.New("pool: layout version mismatch")
)

// Pool is unavailable in this build; see ErrNotSupported.
type Pool struct{}

// Create returns ErrNotSupported.
func Create(path string, size, segmentSize uint64) (*Pool, error) { return nil, ErrNotSupported }

// CreateWith returns ErrNotSupported.
func CreateWith(path string, size, segmentSize uint64, o Options) (*Pool, error) {
	return nil, ErrNotSupported
}

// Attach returns ErrNotSupported.
func Attach(path string) (*Pool, error) { return nil, ErrNotSupported }

// Close returns ErrNotSupported.
func (p *Pool) Close() error { return ErrNotSupported }

// Destroy returns ErrNotSupported.
func (p *Pool) Destroy() error { return ErrNotSupported }

// Path returns "".
func (p *Pool) Path() string { return "" }

// Owner returns false.
func (p *Pool) Owner() bool { return false }

// Segments returns ErrNotSupported.
func (p *Pool) Segments() ([]Segment, error) { return nil, ErrNotSupported }

// Info returns ErrNotSupported.
func (p *Pool) Info() (Info, error) { return Info{}, ErrNotSupported }

// Alloc returns ErrNotSupported.
func (p *Pool) Alloc(n, keyHash, version uint64) (Offset, error) { return 0, ErrNotSupported }

// Seal returns ErrNotSupported.
func (p *Pool) Seal(off Offset) error { return ErrNotSupported }

// Ref returns ErrNotSupported.
func (p *Pool) Ref(off Offset) error { return ErrNotSupported }

// Unref returns ErrNotSupported.
func (p *Pool) Unref(off Offset) (bool, error) { return false, ErrNotSupported }

// Remove returns ErrNotSupported.
func (p *Pool) Remove(off Offset) (bool, error) { return false, ErrNotSupported }

// Free returns ErrNotSupported.
func (p *Pool) Free(off Offset) error { return ErrNotSupported }

// Bytes returns nil.
func (p *Pool) Bytes(off Offset) []byte { return nil }

// Header returns ErrNotSupported.
func (p *Pool) Header(off Offset) (Header, error) { return Header{}, ErrNotSupported }

// Stats returns ErrNotSupported.
func (p *Pool) Stats() (Stats, error) { return Stats{}, ErrNotSupported }

// Check returns ErrNotSupported.
func (p *Pool) Check() error { return ErrNotSupported }
