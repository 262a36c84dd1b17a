/* Fluxon rings: single-producer single-consumer queues of fixed-size slots that live
 * entirely inside a caller-provided memory region, usually a MAP_SHARED file mapping
 * (tmpfs, /dev/shm) shared by two processes. Each external process attached to a
 * host's owner gets a pair: submit (external -> owner) and complete (owner -> external).
 *
 * Memory and ownership
 * --------------------
 * - The REGION (the `mem` argument of flx_ring_init/flx_ring_open) belongs to the
 *   caller. It must be at least flx_ring_bytes() long, aligned to FLX_RING_ALIGN, and
 *   must stay mapped for as long as any flx_ring handle over it is used. Nothing in the
 *   region is a pointer: the layout holds only indices and the geometry, so every
 *   process may map it at a different address. The first FLX_RING_HDR_BYTES bytes are
 *   the header (magic, version, geometry, indices, wait words); the slots follow.
 * - The HANDLE (flx_ring) is a small process-local view, allocated by the caller (on the
 *   stack, in a struct, in Go memory): flx_ring_init/flx_ring_open fill it in; it holds
 *   no resources, so there is nothing to free. It keeps a pointer into the region and
 *   each side's cached copy of the other side's index. One handle may be used by one
 *   producer thread and one consumer thread at the same time (their fields sit on
 *   different cache lines); the two sides may also each open their own handle, in the
 *   same process or in different ones.
 * - Data pointers passed to push/pop (`src`, `dst`) are only read/written during the
 *   call; the ring keeps no reference to them.
 *
 * Threading: exactly one producer (push, wait_nonfull) and one consumer (pop,
 * wait_nonempty) at a time per ring. flx_ring_close and flx_ring_stat may be called
 * from anywhere, any time.
 *
 * Hot path: push/pop take no locks, allocate nothing and make no system call, except
 * one futex wake when the other side has announced that it sleeps (see the wake-up
 * protocol in docs/ring.md and ring.c).
 *
 * Robustness: the geometry is validated once by flx_ring_open and cached in the handle;
 * indices are always masked, so a peer that scribbles over the shared header can make
 * this process read garbage records (or get FLX_ECORRUPT), never access memory outside
 * the region.
 *
 * Errors are the FLX_E* codes of fluxon/core.h; the meaning specific to rings:
 *   FLX_EAGAIN      ring full (push) / empty (pop), or a wait timed out.
 *   FLX_RING_ECLOSED (== FLX_ENOTFOUND) the ring was closed with flx_ring_close: the
 *                   peer is gone or will push no more. See flx_ring_close.
 *   FLX_ECORRUPT    the region is not a ring, or its header fails validation.
 *   FLX_EVERSION    the region holds a ring of another layout version.
 *   FLX_EINVAL      bad arguments (geometry, size, alignment, NULL).
 *   FLX_ESYS        the futex system call failed unexpectedly; errno is kept.
 */
#ifndef FLUXON_RING_H
#define FLUXON_RING_H

#include <stddef.h>
#include <stdint.h>

#include "fluxon/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Closed / peer gone. core.h has no dedicated code and may not grow one for this
 * module, so rings report it as FLX_ENOTFOUND: "the peer is not there any more". No
 * ring function returns FLX_ENOTFOUND for any other reason. */
#define FLX_RING_ECLOSED FLX_ENOTFOUND

#define FLX_RING_LAYOUT_VERSION 1u
/* Bytes before slot 0: header cache lines. */
#define FLX_RING_HDR_BYTES 512u
/* Required alignment of the region (mmap returns page-aligned memory). */
#define FLX_RING_ALIGN 64u
/* Slot size bounds; the slot size must also be a multiple of 8 so a slot can hold
 * naturally aligned 64-bit fields. */
#define FLX_RING_MIN_SLOT 8u
#define FLX_RING_MAX_SLOT 256u
/* Slot count bounds; the count must be a power of two. */
#define FLX_RING_MIN_SLOTS 2u
#define FLX_RING_MAX_SLOTS (1u << 24)

/* Process-local handle. Treat the fields as private; they are visible only so that the
 * caller can allocate the handle without malloc. The padding keeps the producer's and
 * the consumer's fields on different cache lines even when the handle itself is not
 * 64-byte aligned (Go memory). */
typedef struct flx_ring {
  unsigned char *base; /* start of the region (process-local address) */
  uint32_t slot_size;
  uint32_t mask; /* slots - 1 */
  unsigned char pad0[128];
  uint64_t prod_cached_head; /* producer's last seen consumer index */
  unsigned char pad1[128];
  uint64_t cons_cached_tail; /* consumer's last seen producer index */
  unsigned char pad2[120];
} flx_ring;

/* Snapshot of a ring's shared state, for diagnostics and tests. Values are read one by
 * one without a lock, so they may be mutually inconsistent on a busy ring. */
typedef struct flx_ring_info {
  uint32_t slot_size;
  uint32_t slots;
  uint64_t head;              /* slots popped so far */
  uint64_t tail;              /* slots pushed so far */
  uint32_t closed;            /* nonzero once flx_ring_close ran */
  uint32_t cons_waiters;      /* consumers announced asleep in wait_nonempty */
  uint32_t prod_waiters;      /* producers announced asleep in wait_nonfull */
  uint32_t reserved;
  uint64_t cons_sleeps;       /* futex sleeps entered by wait_nonempty */
  uint64_t prod_sleeps;       /* futex sleeps entered by wait_nonfull */
  uint64_t cons_wakes;        /* futex wakes issued for a sleeping consumer */
  uint64_t prod_wakes;        /* futex wakes issued for a sleeping producer */
} flx_ring_info;

/* Bytes a ring of this geometry needs (header + slots), or 0 if the geometry is invalid
 * (slot_size not a multiple of 8 in [FLX_RING_MIN_SLOT, FLX_RING_MAX_SLOT], slots not a
 * power of two in [FLX_RING_MIN_SLOTS, FLX_RING_MAX_SLOTS]). */
size_t flx_ring_bytes(uint32_t slot_size, uint32_t slots);

/* Creator side: writes a fresh, empty ring into mem[0, bytes) and fills in *r.
 * Not safe to call while another process uses the region; the magic is published last
 * (release), so an opener racing with init sees either FLX_ECORRUPT or a complete header.
 * FLX_EINVAL: bad geometry, mem NULL or misaligned, or bytes < flx_ring_bytes(). */
int flx_ring_init(flx_ring *r, void *mem, size_t bytes, uint32_t slot_size, uint32_t slots);

/* Attaches to a ring that flx_ring_init wrote (possibly in another process).
 * FLX_ECORRUPT: wrong magic, invalid geometry, region shorter than the geometry says,
 * or indices that cannot happen (tail - head > slots). FLX_EVERSION: other layout version.
 * FLX_EINVAL: mem NULL or misaligned. */
int flx_ring_open(flx_ring *r, void *mem, size_t bytes);

/* Geometry of an initialised/opened handle. */
uint32_t flx_ring_slot_size(const flx_ring *r);
uint32_t flx_ring_slots(const flx_ring *r);

/* Producer. Copies one slot (slot_size bytes from src). 0, FLX_EAGAIN when full,
 * FLX_RING_ECLOSED once the ring is closed. */
int flx_ring_push(flx_ring *r, const void *src);

/* Producer. Copies up to n slots from src (n * slot_size contiguous bytes), as many as
 * fit. Returns the number pushed (0 when full, also for n == 0), FLX_RING_ECLOSED once
 * the ring is closed. One release store publishes the whole batch. */
int flx_ring_push_n(flx_ring *r, const void *src, uint32_t n);

/* Consumer. Copies one slot into dst (slot_size bytes). 0, FLX_EAGAIN when empty,
 * FLX_RING_ECLOSED when empty and closed. Slots pushed before the close are still
 * delivered: a closed ring drains first. FLX_ECORRUPT if the producer index is
 * impossible. */
int flx_ring_pop(flx_ring *r, void *dst);

/* Consumer. Copies up to n slots into dst (n * slot_size bytes). Returns the number
 * popped (0 when empty and open), FLX_RING_ECLOSED when empty and closed, FLX_ECORRUPT
 * if the producer index is impossible. */
int flx_ring_pop_n(flx_ring *r, void *dst, uint32_t n);

/* Consumer. Returns 0 as soon as at least one slot can be popped (also on a closed ring
 * that still holds slots), FLX_RING_ECLOSED when the ring is closed and empty,
 * FLX_EAGAIN when the timeout passed, FLX_ESYS when the futex call failed.
 *
 * First polls up to spin_iters times with a CPU pause between polls (and a sched_yield
 * every 1024 polls, so a spinner on an oversubscribed core lets its peer run), then
 * sleeps on a futex in the shared region (process-shared, no FUTEX_PRIVATE_FLAG),
 * announcing the sleep so that the producer wakes it. timeout_ns bounds the sleeping
 * phase: < 0 waits until ready or closed, 0 never sleeps (pure polling), > 0 sleeps at
 * most that long in total. Two modes, chosen per process (config network.poll_mode):
 *   busy_poll:    spin_iters large (FLX_RING_SPIN_BUSY) - lowest latency, burns a core;
 *   event_driven: spin_iters tiny (FLX_RING_SPIN_EVENT) - an idle waiter costs nothing. */
int flx_ring_wait_nonempty(flx_ring *r, uint32_t spin_iters, int64_t timeout_ns);

/* Consumer. flx_ring_wait_nonempty, then flx_ring_pop_n: returns the number of slots
 * popped (>= 1), or what the wait returned (FLX_EAGAIN on timeout, FLX_RING_ECLOSED,
 * FLX_ESYS) or FLX_ECORRUPT. One call per received batch, which is what a caller across
 * an FFI boundary (cgo) wants. n must be >= 1. */
int flx_ring_pop_wait(flx_ring *r, void *dst, uint32_t n, uint32_t spin_iters, int64_t timeout_ns);

/* Producer. Like flx_ring_wait_nonempty, for "at least one slot free". A closed ring
 * returns FLX_RING_ECLOSED at once, since pushes to it fail anyway. */
int flx_ring_wait_nonfull(flx_ring *r, uint32_t spin_iters, int64_t timeout_ns);

/* Suggested spin counts for the two poll modes. One poll is an acquire load plus a CPU
 * pause, 10-50 ns depending on the CPU, so FLX_RING_SPIN_BUSY keeps a busy_poll waiter
 * on its core for roughly 10-50 ms of idleness before it sleeps, and FLX_RING_SPIN_EVENT
 * catches only a reply that is already on its way (about 1-3 us). */
#define FLX_RING_SPIN_BUSY (1u << 20)
#define FLX_RING_SPIN_EVENT 64u

/* Marks the ring closed ("peer gone") and wakes every waiter on both sides; further
 * pushes fail with FLX_RING_ECLOSED, pops drain what is left and then fail with it,
 * and waits return it. Idempotent, callable from either side or a third party: the
 * producer closes when it will push no more; the owner closes both rings of an external
 * whose control socket dropped, which wakes the owner's own threads waiting on them.
 * Returns 0, or FLX_ESYS if a futex wake failed (the flag is set regardless). */
int flx_ring_close(flx_ring *r);

/* Nonzero once the ring is closed. */
int flx_ring_is_closed(const flx_ring *r);

/* Fills *out with a snapshot of the shared state. */
void flx_ring_stat(const flx_ring *r, flx_ring_info *out);

#ifdef __cplusplus
}
#endif
#endif
