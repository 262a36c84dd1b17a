//go:build linux

package ring

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Region is a shared mapping of a file, normally on tmpfs (/dev/shm), that rings are
// laid out in. Processes that Map the same path share its bytes.
type Region struct {
	path string
	mu   sync.Mutex
	data []byte
}

// liveRegions counts mappings not yet Closed; tests fail if one leaks.
var liveRegions atomic.Int64

// Map maps the file at path (normally under /dev/shm) read-write and shared.
//
// With create, the file must not exist yet: it is created with mode 0600 and size bytes,
// all reserved up front, so a full tmpfs fails here (ENOSPC) rather than with SIGBUS on
// a later store. Without create, the file must exist; size 0 maps the whole file,
// otherwise the file must be at least size bytes and the first size bytes are mapped.
//
// The caller must Close the Region after every Ring over it is done, and Unlink the
// file when no process should attach to it any more.
func Map(path string, size int, create bool) (*Region, error) {
	if size < 0 || (create && size == 0) {
		return nil, fmt.Errorf("ring: map %s: size %d: give a positive size (ring.Size reports what a ring needs)", path, size)
	}
	flags := os.O_RDWR | syscall.O_CLOEXEC
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		if create && errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("ring: map %s: %w (a stale file from an earlier run? remove it or pick another name)", path, err)
		}
		return nil, fmt.Errorf("ring: map %s: %w", path, err)
	}
	defer f.Close()
	fail := func(err error) (*Region, error) {
		if create {
			os.Remove(path)
		}
		return nil, err
	}
	if create {
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, int64(size)); err != nil {
			if !errors.Is(err, syscall.EOPNOTSUPP) {
				return fail(fmt.Errorf("ring: map %s: reserve %d bytes: %w (is the tmpfs full?)", path, size, err))
			}
			if err := f.Truncate(int64(size)); err != nil {
				return fail(fmt.Errorf("ring: map %s: size to %d bytes: %w", path, size, err))
			}
		}
	} else {
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("ring: map %s: %w", path, err)
		}
		if size == 0 {
			size = int(st.Size())
		}
		if size == 0 || st.Size() < int64(size) {
			return nil, fmt.Errorf("ring: map %s: file has %d bytes, want %d (not created by ring.Map, or truncated)", path, st.Size(), size)
		}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("ring: map %s: mmap %d bytes: %w", path, size, err))
	}
	liveRegions.Add(1)
	return &Region{path: path, data: data}, nil
}

// Bytes returns the mapped memory; it is valid until Close.
func (r *Region) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.data
}

// Path returns the mapped file's path.
func (r *Region) Path() string { return r.path }

// Close unmaps the region. Rings over it must not be used any more (an access would
// fault). Close is idempotent; the file stays until Unlink.
func (r *Region) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.data == nil {
		return nil
	}
	err := syscall.Munmap(r.data)
	r.data = nil
	liveRegions.Add(-1)
	if err != nil {
		return fmt.Errorf("ring: unmap %s: %w", r.path, err)
	}
	return nil
}

// Unlink removes the file, so no further process can Map it; processes that already
// mapped it keep their mapping until they Close it.
func (r *Region) Unlink() error {
	if err := os.Remove(r.path); err != nil {
		return fmt.Errorf("ring: unlink: %w", err)
	}
	return nil
}
