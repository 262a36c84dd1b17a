// Package pool wraps native/pool: the shared-memory pool an owner contributes to the
// cluster, its allocator, and the per-object header (state and refcount) that lets a
// reader in another process pin an object and read it in place.
//
// The owner creates the pool (Create) and is the only process that allocates and frees;
// externals Attach to the same file, read objects through Bytes and take references with
// Ref/Unref. Objects are named by Offset, the byte offset of their data in the pool file,
// which is the same in every process.
//
// Life cycle of an object: Alloc returns it WRITING with refcount 1 (the writer's
// reference); the writer fills Bytes(off) and calls Seal (READY); readers Ref and Unref;
// Remove stops new references; the object's memory is reused only after it is removed AND
// its last reference is dropped. The call that reaches that point reports released=true:
// on the owner's handle the memory is then already free, on an attached handle the caller
// must ask the owner to Free it. A writer may Free an object it never sealed.
//
// Memory returned by Bytes is pool memory, not Go memory: it stays valid until the Pool is
// closed, and holds the object's bytes only while the caller holds a reference. Never keep
// such a slice past Close (the mapping is gone) or past the last Unref (the block may be
// reused).
//
// All methods are safe for concurrent use. Close waits for calls in flight, and every
// method called after Close returns ErrClosed (Bytes returns nil) instead of touching
// unmapped memory.
//
// Without cgo, or on a system other than Linux, the package still compiles, and Create and
// Attach return ErrNotSupported.
package pool
