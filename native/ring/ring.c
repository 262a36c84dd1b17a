/* SPSC rings of fixed-size slots in a caller-provided (usually shared) memory region.
 * The API and ownership rules are in fluxon/ring.h; the design is in docs/ring.md.
 *
 * Layout of the region (offsets in bytes; no pointers, so each process may map it at a
 * different address):
 *
 *     0  header line, read-mostly: magic, version, geometry, closed flag
 *   128  producer line: tail (next index the producer writes)
 *   256  consumer line: head (next index the consumer reads)
 *   384  wait line: futex words, waiter counts, sleep/wake counters
 *   512  slots[slots][slot_size]
 *
 * Lines are 128 bytes apart, not 64, because Intel's adjacent-line prefetcher pulls
 * lines in pairs, which would make the producer's and consumer's lines false-share.
 * head and tail are free-running 64-bit counters (they never wrap in practice); a
 * slot's position is index & mask.
 *
 * Memory ordering
 * ---------------
 * Data: the producer writes the slots, then publishes them with a store of tail that is
 * at least release; the consumer loads tail with acquire before reading the slots. The
 * consumer gives slots back with a store of head (>= release) after copying them out;
 * the producer loads head with acquire before overwriting them. Each side refreshes its
 * cached copy of the other's index only when the cache says full/empty, so in steady
 * state each side touches the other's line about once per batch, not once per slot.
 *
 * Wake-up protocol (shown for a sleeping consumer; a producer sleeping on a full ring
 * is the mirror image with head, prod_seq and prod_waiters):
 *
 *   producer (push)                         consumer (wait_nonempty, sleep phase)
 *   P1 write slots                          C1 s = load(cons_seq)
 *   P2 store(tail, t+k)               [SC]  C2 fetch_add(cons_waiters, 1)       [SC]
 *   P3 if load(cons_waiters) [SC] != 0      C3 if load(tail) [SC] != head (or closed):
 *      and exchange(cons_waiters, 0) != 0:        withdraw C2, return
 *   P4     fetch_add(cons_seq, 1)     [SC]  C4 futex_wait(&cons_seq, s)
 *   P5     futex_wake(&cons_seq, all)       C5 withdraw C2 unless P3 took it; goto C1
 *
 * No lost wake-up: P2,P3 and C2,C3 are sequentially consistent operations, so they sit
 * in one total order. Either C3 comes after P2 in it, and then C3 sees the new tail and
 * the consumer does not sleep; or P3 comes after C2, and then the producer sees the
 * announcement and runs P4,P5. In the latter case C1 happened before C2, hence before P4,
 * so `s` is the value before the bump: if C4 starts after P4 the kernel sees
 * *cons_seq != s and returns at once (EAGAIN); if it starts before, the kernel queued
 * the waiter under the futex bucket lock before P5 took that lock, and P5 wakes it. The
 * futex word is the seq word, not tail, because futex words are 32-bit and must change
 * on every wake. flx_ring_close follows the same pattern: set closed [SC], bump both seq
 * words, wake all; waiters re-check closed after announcing themselves.
 *
 * P3 takes the announcement (exchange to 0), so a sleep costs exactly one wake: while
 * the woken consumer is still on its way out of the kernel, further pushes see 0 and
 * skip the system call. "Withdraw" (C3, C5) is a decrement that never goes below 0, so a
 * waiter never removes a token that P3 already took. Rings are single-consumer and
 * single-producer, so at most one waiter per direction is expected; a second one
 * (misuse) is still woken by P5 (it wakes all) and by close, but a timed-out waiter may
 * withdraw the other's token, delaying that one until its own timeout. A waiter that
 * dies asleep leaves its token behind: it costs the peer one spurious wake, then is gone.
 *
 * Cost on the hot path: the SC store of tail/head (an xchg on x86, a full barrier) and
 * a load of the waiter count, which sits on a line nobody writes while both sides are
 * busy, so it stays in the local cache. A futex_wake (a system call) happens only when
 * the other side announced that it sleeps.
 */
#include "fluxon/ring.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FLX_RING_MAGIC 0x474e4952584c4646ull /* "FFLXRING" read as little-endian */
#define FLX_RING_LINE 128
#define FLX_RING_SPIN_YIELD 1024u /* polls between sched_yield calls while spinning; a power of two */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free (address-free across processes)");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free (address-free across processes)");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "futex words are 32-bit");

struct flx_ring_hdr {
  /* line 0: written by init (and close), read by everyone */
  _Atomic uint64_t magic;
  uint32_t version;
  uint32_t slot_size;
  uint32_t slots;
  uint32_t hdr_bytes;
  uint64_t ring_bytes;
  _Atomic uint32_t closed;
  unsigned char pad0[FLX_RING_LINE - 36];
  /* line 1: written by the producer */
  _Atomic uint64_t tail;
  unsigned char pad1[FLX_RING_LINE - 8];
  /* line 2: written by the consumer */
  _Atomic uint64_t head;
  unsigned char pad2[FLX_RING_LINE - 8];
  /* line 3: written only on the sleep/wake paths */
  _Atomic uint32_t cons_seq;     /* futex word for a consumer waiting for data */
  _Atomic uint32_t cons_waiters; /* consumers announced asleep */
  _Atomic uint32_t prod_seq;     /* futex word for a producer waiting for room */
  _Atomic uint32_t prod_waiters; /* producers announced asleep */
  _Atomic uint64_t cons_sleeps;
  _Atomic uint64_t prod_sleeps;
  _Atomic uint64_t cons_wakes;
  _Atomic uint64_t prod_wakes;
  unsigned char pad3[FLX_RING_LINE - 48];
};

_Static_assert(sizeof(struct flx_ring_hdr) == FLX_RING_HDR_BYTES, "ring header is 4 lines of 128 bytes");
_Static_assert(offsetof(struct flx_ring_hdr, tail) == 128, "tail on line 1");
_Static_assert(offsetof(struct flx_ring_hdr, head) == 256, "head on line 2");
_Static_assert(offsetof(struct flx_ring_hdr, cons_seq) == 384, "wait words on line 3");

#define RELAXED memory_order_relaxed
#define ACQUIRE memory_order_acquire
#define RELEASE memory_order_release
#define SEQCST memory_order_seq_cst

static inline struct flx_ring_hdr *hdr(const flx_ring *r) { return (struct flx_ring_hdr *)(void *)r->base; }

static inline unsigned char *slot_ptr(const flx_ring *r, uint64_t idx) {
  return r->base + FLX_RING_HDR_BYTES + (size_t)(idx & r->mask) * r->slot_size;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(SEQCST);
#endif
}

size_t flx_ring_bytes(uint32_t slot_size, uint32_t slots) {
  if (slot_size < FLX_RING_MIN_SLOT || slot_size > FLX_RING_MAX_SLOT || slot_size % 8 != 0) return 0;
  if (slots < FLX_RING_MIN_SLOTS || slots > FLX_RING_MAX_SLOTS || (slots & (slots - 1)) != 0) return 0;
  return (size_t)FLX_RING_HDR_BYTES + (size_t)slot_size * slots;
}

static void fill_handle(flx_ring *r, void *mem, uint32_t slot_size, uint32_t slots, uint64_t head, uint64_t tail) {
  memset(r, 0, sizeof *r);
  r->base = mem;
  r->slot_size = slot_size;
  r->mask = slots - 1;
  r->prod_cached_head = head;
  r->cons_cached_tail = tail;
}

int flx_ring_init(flx_ring *r, void *mem, size_t bytes, uint32_t slot_size, uint32_t slots) {
  if (r == NULL || mem == NULL || (uintptr_t)mem % FLX_RING_ALIGN != 0) return FLX_EINVAL;
  size_t need = flx_ring_bytes(slot_size, slots);
  if (need == 0 || bytes < need) return FLX_EINVAL;
  struct flx_ring_hdr *h = mem;
  /* Hide the ring from openers while the header is rewritten. */
  atomic_store_explicit(&h->magic, 0, RELAXED);
  atomic_thread_fence(RELEASE);
  memset((unsigned char *)mem + sizeof h->magic, 0, FLX_RING_HDR_BYTES - sizeof h->magic);
  h->version = FLX_RING_LAYOUT_VERSION;
  h->slot_size = slot_size;
  h->slots = slots;
  h->hdr_bytes = FLX_RING_HDR_BYTES;
  h->ring_bytes = need;
  atomic_store_explicit(&h->magic, FLX_RING_MAGIC, RELEASE);
  fill_handle(r, mem, slot_size, slots, 0, 0);
  return FLX_OK;
}

int flx_ring_open(flx_ring *r, void *mem, size_t bytes) {
  if (r == NULL || mem == NULL || (uintptr_t)mem % FLX_RING_ALIGN != 0) return FLX_EINVAL;
  if (bytes < FLX_RING_HDR_BYTES) return FLX_ECORRUPT;
  struct flx_ring_hdr *h = mem;
  if (atomic_load_explicit(&h->magic, ACQUIRE) != FLX_RING_MAGIC) return FLX_ECORRUPT;
  /* Version first: another version may lay out the rest of the header differently. */
  if (h->version != FLX_RING_LAYOUT_VERSION) return FLX_EVERSION;
  uint32_t slot_size = h->slot_size, slots = h->slots;
  size_t need = flx_ring_bytes(slot_size, slots);
  if (need == 0 || h->hdr_bytes != FLX_RING_HDR_BYTES || h->ring_bytes != need || bytes < need) return FLX_ECORRUPT;
  uint64_t head = atomic_load_explicit(&h->head, ACQUIRE);
  uint64_t tail = atomic_load_explicit(&h->tail, ACQUIRE);
  if (tail - head > slots) return FLX_ECORRUPT;
  fill_handle(r, mem, slot_size, slots, head, tail);
  return FLX_OK;
}

uint32_t flx_ring_slot_size(const flx_ring *r) { return r->slot_size; }
uint32_t flx_ring_slots(const flx_ring *r) { return r->mask + 1; }

static int futex_wait(_Atomic uint32_t *word, uint32_t expect, const struct timespec *abs_deadline) {
  /* No FUTEX_PRIVATE_FLAG: the word lives in memory shared between processes.
   * FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so retries after
   * spurious wake-ups do not stretch the timeout. */
  return (int)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expect, abs_deadline, NULL,
                      FUTEX_BITSET_MATCH_ANY);
}

static int futex_wake_all(_Atomic uint32_t *word) {
  return (int)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* P3-P5 of the protocol, after the caller's SC store of its index. The plain load keeps
 * the wait line shared in both caches while nobody sleeps; only an announced waiter
 * costs an exchange and a system call. Taking the announcements (exchange to 0) means
 * one wake per sleep: later pushes see 0 and skip the syscall until the waiter sleeps
 * again. A failing wake can only mean the mapping itself is gone (EFAULT), which the
 * next access reports anyway, so push/pop do not turn it into an error. */
static inline void maybe_wake(_Atomic uint32_t *waiters, _Atomic uint32_t *seq, _Atomic uint64_t *wakes) {
  if (atomic_load_explicit(waiters, SEQCST) == 0) return;
  if (atomic_exchange_explicit(waiters, 0, SEQCST) == 0) return;
  atomic_fetch_add_explicit(seq, 1, SEQCST);
  atomic_fetch_add_explicit(wakes, 1, RELAXED);
  (void)futex_wake_all(seq);
}

static inline void copy_in(flx_ring *r, uint64_t tail, const unsigned char *src, uint32_t k) {
  uint32_t slots = r->mask + 1;
  uint32_t pos = (uint32_t)(tail & r->mask);
  uint32_t first = slots - pos < k ? slots - pos : k;
  memcpy(slot_ptr(r, tail), src, (size_t)first * r->slot_size);
  if (first < k) memcpy(slot_ptr(r, 0), src + (size_t)first * r->slot_size, (size_t)(k - first) * r->slot_size);
}

static inline void copy_out(flx_ring *r, uint64_t head, unsigned char *dst, uint32_t k) {
  uint32_t slots = r->mask + 1;
  uint32_t pos = (uint32_t)(head & r->mask);
  uint32_t first = slots - pos < k ? slots - pos : k;
  memcpy(dst, slot_ptr(r, head), (size_t)first * r->slot_size);
  if (first < k) memcpy(dst + (size_t)first * r->slot_size, slot_ptr(r, 0), (size_t)(k - first) * r->slot_size);
}

int flx_ring_push_n(flx_ring *r, const void *src, uint32_t n) {
  struct flx_ring_hdr *h = hdr(r);
  if (atomic_load_explicit(&h->closed, RELAXED)) return FLX_RING_ECLOSED;
  uint64_t slots = (uint64_t)r->mask + 1;
  /* Only this thread writes tail, so a relaxed load returns our own last store. */
  uint64_t tail = atomic_load_explicit(&h->tail, RELAXED);
  uint64_t used = tail - r->prod_cached_head;
  if (used > slots) return FLX_ECORRUPT;
  if (slots - used < n) {
    r->prod_cached_head = atomic_load_explicit(&h->head, ACQUIRE);
    used = tail - r->prod_cached_head;
    if (used > slots) return FLX_ECORRUPT;
  }
  uint32_t k = (uint32_t)(slots - used < n ? slots - used : n);
  if (k == 0) return 0;
  copy_in(r, tail, src, k);
  atomic_store_explicit(&h->tail, tail + k, SEQCST); /* P2: publishes the slots (release) */
  maybe_wake(&h->cons_waiters, &h->cons_seq, &h->cons_wakes); /* P3-P5 */
  return (int)k;
}

int flx_ring_push(flx_ring *r, const void *src) {
  int rc = flx_ring_push_n(r, src, 1);
  return rc == 0 ? FLX_EAGAIN : rc < 0 ? rc : FLX_OK;
}

int flx_ring_pop_n(flx_ring *r, void *dst, uint32_t n) {
  struct flx_ring_hdr *h = hdr(r);
  uint64_t slots = (uint64_t)r->mask + 1;
  uint64_t head = atomic_load_explicit(&h->head, RELAXED); /* only this thread writes head */
  uint64_t avail = r->cons_cached_tail - head;
  if (avail > slots) return FLX_ECORRUPT;
  if (avail < n) {
    r->cons_cached_tail = atomic_load_explicit(&h->tail, ACQUIRE);
    avail = r->cons_cached_tail - head;
    if (avail > slots) return FLX_ECORRUPT;
  }
  uint32_t k = (uint32_t)(avail < n ? avail : n);
  if (k == 0) {
    if (n == 0 || !atomic_load_explicit(&h->closed, ACQUIRE)) return 0;
    /* Closed: a push that preceded the close must still be delivered. */
    r->cons_cached_tail = atomic_load_explicit(&h->tail, ACQUIRE);
    if (r->cons_cached_tail - head > slots) return FLX_ECORRUPT;
    if (r->cons_cached_tail == head) return FLX_RING_ECLOSED;
    return flx_ring_pop_n(r, dst, n);
  }
  copy_out(r, head, dst, k);
  atomic_store_explicit(&h->head, head + k, SEQCST); /* gives the slots back (release) */
  maybe_wake(&h->prod_waiters, &h->prod_seq, &h->prod_wakes);
  return (int)k;
}

int flx_ring_pop(flx_ring *r, void *dst) {
  int rc = flx_ring_pop_n(r, dst, 1);
  return rc == 0 ? FLX_EAGAIN : rc < 0 ? rc : FLX_OK;
}

/* Readiness checks. NOT_READY is positive so it never collides with an FLX_E* code. */
#define NOT_READY 1

static int check_nonempty(flx_ring *r, memory_order mo) {
  struct flx_ring_hdr *h = hdr(r);
  uint64_t head = atomic_load_explicit(&h->head, RELAXED);
  uint64_t slots = (uint64_t)r->mask + 1;
  if (r->cons_cached_tail != head) return r->cons_cached_tail - head > slots ? FLX_ECORRUPT : FLX_OK;
  uint64_t tail = atomic_load_explicit(&h->tail, mo);
  if (tail != head) {
    r->cons_cached_tail = tail;
    return tail - head > slots ? FLX_ECORRUPT : FLX_OK;
  }
  if (!atomic_load_explicit(&h->closed, mo)) return NOT_READY;
  /* Closed: re-read tail, a push ordered before the close must be seen and drained. */
  tail = atomic_load_explicit(&h->tail, ACQUIRE);
  if (tail == head) return FLX_RING_ECLOSED;
  r->cons_cached_tail = tail;
  return tail - head > slots ? FLX_ECORRUPT : FLX_OK;
}

static int check_nonfull(flx_ring *r, memory_order mo) {
  struct flx_ring_hdr *h = hdr(r);
  if (atomic_load_explicit(&h->closed, mo)) return FLX_RING_ECLOSED;
  uint64_t tail = atomic_load_explicit(&h->tail, RELAXED);
  uint64_t slots = (uint64_t)r->mask + 1;
  uint64_t used = tail - r->prod_cached_head;
  if (used > slots) return FLX_ECORRUPT;
  if (used < slots) return FLX_OK;
  r->prod_cached_head = atomic_load_explicit(&h->head, mo);
  used = tail - r->prod_cached_head;
  if (used > slots) return FLX_ECORRUPT;
  return used < slots ? FLX_OK : NOT_READY;
}

/* Withdraws this waiter's announcement unless a waker already took it (exchange to 0). */
static void unannounce(_Atomic uint32_t *waiters) {
  uint32_t w = atomic_load_explicit(waiters, RELAXED);
  while (w != 0 && !atomic_compare_exchange_weak_explicit(waiters, &w, w - 1, SEQCST, RELAXED)) {
  }
}

static int wait_until(flx_ring *r, int (*check)(flx_ring *, memory_order), _Atomic uint32_t *seq,
                      _Atomic uint32_t *waiters, _Atomic uint64_t *sleeps, uint32_t spin_iters, int64_t timeout_ns) {
  int rc;
  for (uint32_t i = 0;; i++) {
    if ((rc = check(r, ACQUIRE)) != NOT_READY) return rc;
    if (i >= spin_iters) break;
    /* A spinner that never gives up its core starves the peer whenever cores are
     * oversubscribed (containers, VMs, a busy host): the peer cannot produce what we
     * wait for until the scheduler preempts us, a whole time slice later. Yielding every
     * FLX_RING_SPIN_YIELD polls bounds that to ~10-50 us for about 1-2 % of the spin's
     * time; on a dedicated core sched_yield returns at once. */
    if ((i & (FLX_RING_SPIN_YIELD - 1)) == FLX_RING_SPIN_YIELD - 1)
      sched_yield();
    else
      cpu_relax();
  }
  if (timeout_ns == 0) return FLX_EAGAIN;

  struct timespec deadline, *dl = NULL;
  if (timeout_ns > 0) {
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    int64_t ns = (int64_t)deadline.tv_nsec + timeout_ns % 1000000000;
    deadline.tv_sec += (time_t)(timeout_ns / 1000000000 + ns / 1000000000);
    deadline.tv_nsec = (long)(ns % 1000000000);
    dl = &deadline;
  }
  for (;;) {
    uint32_t s = atomic_load_explicit(seq, ACQUIRE);   /* C1 */
    atomic_fetch_add_explicit(waiters, 1, SEQCST);      /* C2 */
    if ((rc = check(r, SEQCST)) != NOT_READY) {         /* C3 */
      unannounce(waiters);
      return rc;
    }
    atomic_fetch_add_explicit(sleeps, 1, RELAXED);
    int frc = futex_wait(seq, s, dl);                   /* C4 */
    int err = errno;
    unannounce(waiters);                                /* C5 */
    if (frc == 0 || err == EAGAIN || err == EINTR) continue;
    if (err == ETIMEDOUT) {
      rc = check(r, ACQUIRE);
      return rc == NOT_READY ? FLX_EAGAIN : rc;
    }
    errno = err;
    return FLX_ESYS;
  }
}

int flx_ring_wait_nonempty(flx_ring *r, uint32_t spin_iters, int64_t timeout_ns) {
  struct flx_ring_hdr *h = hdr(r);
  return wait_until(r, check_nonempty, &h->cons_seq, &h->cons_waiters, &h->cons_sleeps, spin_iters, timeout_ns);
}

int flx_ring_pop_wait(flx_ring *r, void *dst, uint32_t n, uint32_t spin_iters, int64_t timeout_ns) {
  if (n == 0) return FLX_EINVAL;
  int rc = flx_ring_wait_nonempty(r, spin_iters, timeout_ns);
  if (rc != FLX_OK) return rc;
  return flx_ring_pop_n(r, dst, n); /* >= 1: only this thread consumes */
}

int flx_ring_wait_nonfull(flx_ring *r, uint32_t spin_iters, int64_t timeout_ns) {
  struct flx_ring_hdr *h = hdr(r);
  return wait_until(r, check_nonfull, &h->prod_seq, &h->prod_waiters, &h->prod_sleeps, spin_iters, timeout_ns);
}

int flx_ring_close(flx_ring *r) {
  struct flx_ring_hdr *h = hdr(r);
  atomic_store_explicit(&h->closed, 1, SEQCST);
  /* Wake unconditionally: closing is rare and a waiter may be between C2 and C4. */
  atomic_fetch_add_explicit(&h->cons_seq, 1, SEQCST);
  atomic_fetch_add_explicit(&h->prod_seq, 1, SEQCST);
  int rc = FLX_OK;
  if (futex_wake_all(&h->cons_seq) < 0) rc = FLX_ESYS;
  if (futex_wake_all(&h->prod_seq) < 0) rc = FLX_ESYS;
  return rc;
}

int flx_ring_is_closed(const flx_ring *r) { return atomic_load_explicit(&hdr(r)->closed, ACQUIRE) != 0; }

void flx_ring_stat(const flx_ring *r, flx_ring_info *out) {
  struct flx_ring_hdr *h = hdr(r);
  memset(out, 0, sizeof *out);
  out->slot_size = r->slot_size;
  out->slots = r->mask + 1;
  out->head = atomic_load_explicit(&h->head, ACQUIRE);
  out->tail = atomic_load_explicit(&h->tail, ACQUIRE);
  out->closed = atomic_load_explicit(&h->closed, ACQUIRE);
  out->cons_waiters = atomic_load_explicit(&h->cons_waiters, ACQUIRE);
  out->prod_waiters = atomic_load_explicit(&h->prod_waiters, ACQUIRE);
  out->cons_sleeps = atomic_load_explicit(&h->cons_sleeps, RELAXED);
  out->prod_sleeps = atomic_load_explicit(&h->prod_sleeps, RELAXED);
  out->cons_wakes = atomic_load_explicit(&h->cons_wakes, RELAXED);
  out->prod_wakes = atomic_load_explicit(&h->prod_wakes, RELAXED);
}
