// Package ring wraps native/ring: single-producer single-consumer rings of fixed-size
// slots that live in shared memory, so that two processes on one host (an external and
// its owner) exchange commands and completions without system calls on the hot path.
//
// A Ring is a view over a memory region that the caller maps (see Map) and keeps
// mapped for as long as the Ring is used. The region must NOT be Go heap memory: the
// native handle keeps a pointer into it after a call returns, which cgo forbids for
// Go memory (with cgocheck on, the runtime panics), and the region is meant to be
// shared with another process anyway. Use Map, or another mmap'd region.
//
// Exactly one goroutine at a time may produce (Push, PushBatch, WaitNonFull) and one
// may consume (Pop, PopBatch, WaitNonEmpty); the two may run concurrently on the same
// Ring, or each side may Open its own Ring over the same region, in any process.
//
// Waiting follows the process's poll mode (config network.poll_mode): BusyPoll spins
// for a while before sleeping on a futex in the shared region, EventDriven sleeps
// almost at once, so an idle process does not burn a core. A waiting goroutine blocks
// an OS thread inside C; context cancellation is noticed between bounded native waits
// of at most MaxWaitSlice.
//
// One cgo call moves a whole batch (PushBatch, PopBatch): cross the boundary per batch,
// not per slot.
//
// Without cgo, or on a system other than Linux, the package still compiles, and every
// constructor returns ErrNotSupported.
package ring
