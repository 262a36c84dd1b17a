//go:build invariants && linux && cgo

package pool

// With the invariants build tag (make test), the allocator checks its bookkeeping on every
// operation (native/pool/heap.c, INVARIANT) and aborts on the first inconsistency.

// #cgo CFLAGS: -DFLX_POOL_INVARIANTS
import "C"
