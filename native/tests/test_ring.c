/* Tests for native/ring: geometry validation, single-thread semantics, waits, close,
 * a 2-thread stream of 10M sequenced slots in both poll modes, and cross-process use
 * over a MAP_SHARED mapping (fork), including a consumer asleep on the futex.
 *
 * `test_ring bench` instead prints C-level round-trip latencies and batch throughput
 * (threads and processes, both poll modes); ctest runs the tests only.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fluxon/ring.h"

static int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)
#define CHECK_RC(expr, want)                                                                  \
  do {                                                                                        \
    int rc_ = (expr);                                                                         \
    if (rc_ != (want)) {                                                                      \
      fprintf(stderr, "%s:%d: %s = %d (%s), want %d (%s)\n", __FILE__, __LINE__, #expr, rc_, \
              flx_strerror(rc_), (want), flx_strerror(want));                                 \
      failures++;                                                                             \
    }                                                                                         \
  } while (0)

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* A MAP_SHARED anonymous mapping: survives fork as shared memory, like a /dev/shm file. */
static void *map_shared(size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  return p;
}

/* Slot contents: sequence number first, a check word derived from it last, so a torn or
 * misplaced slot is detected whatever the slot size. */
static void fill_slot(unsigned char *slot, uint32_t slot_size, uint64_t seq) {
  uint64_t check = seq * 0x9e3779b97f4a7c15ull ^ slot_size;
  memcpy(slot, &seq, 8);
  if (slot_size < 16) return; /* an 8-byte slot holds the sequence number only */
  memset(slot + 8, (int)(seq & 0xff), slot_size - 16);
  memcpy(slot + slot_size - 8, &check, 8);
}

static int slot_ok(const unsigned char *slot, uint32_t slot_size, uint64_t want) {
  uint64_t seq, check;
  memcpy(&seq, slot, 8);
  if (seq != want) return 0;
  if (slot_size < 16) return 1;
  memcpy(&check, slot + slot_size - 8, 8);
  if (check != (want * 0x9e3779b97f4a7c15ull ^ slot_size)) return 0;
  for (uint32_t i = 8; i < slot_size - 8; i++)
    if (slot[i] != (unsigned char)(want & 0xff)) return 0;
  return 1;
}

/* Layout v1 offsets used to tamper with the header (see ring.c). */
#define OFF_MAGIC 0
#define OFF_VERSION 8
#define OFF_SLOT_SIZE 12
#define OFF_SLOTS 16
#define OFF_TAIL 128
#define OFF_HEAD 256

static void put32(void *mem, size_t off, uint32_t v) { memcpy((unsigned char *)mem + off, &v, 4); }
static void put64(void *mem, size_t off, uint64_t v) { memcpy((unsigned char *)mem + off, &v, 8); }

static void test_geometry(void) {
  CHECK(flx_ring_bytes(64, 1024) == FLX_RING_HDR_BYTES + 64 * 1024);
  CHECK(flx_ring_bytes(8, 2) == FLX_RING_HDR_BYTES + 16);
  CHECK(flx_ring_bytes(256, FLX_RING_MAX_SLOTS) == FLX_RING_HDR_BYTES + (size_t)256 * FLX_RING_MAX_SLOTS);
  CHECK(flx_ring_bytes(0, 8) == 0);
  CHECK(flx_ring_bytes(4, 8) == 0);
  CHECK(flx_ring_bytes(12, 8) == 0);  /* not a multiple of 8 */
  CHECK(flx_ring_bytes(264, 8) == 0); /* above the maximum */
  CHECK(flx_ring_bytes(64, 0) == 0);
  CHECK(flx_ring_bytes(64, 1) == 0);
  CHECK(flx_ring_bytes(64, 3) == 0);
  CHECK(flx_ring_bytes(64, 1000) == 0);
  CHECK(flx_ring_bytes(64, FLX_RING_MAX_SLOTS * 2) == 0);

  size_t bytes = flx_ring_bytes(64, 16);
  unsigned char *mem = map_shared(bytes + 4096);
  flx_ring r;
  CHECK_RC(flx_ring_init(&r, NULL, bytes, 64, 16), FLX_EINVAL);
  CHECK_RC(flx_ring_init(&r, mem + 8, bytes, 64, 16), FLX_EINVAL); /* misaligned */
  CHECK_RC(flx_ring_init(&r, mem, bytes - 1, 64, 16), FLX_EINVAL);
  CHECK_RC(flx_ring_init(&r, mem, bytes, 65, 16), FLX_EINVAL);
  CHECK_RC(flx_ring_init(&r, mem, bytes, 64, 12), FLX_EINVAL);
  CHECK_RC(flx_ring_open(&r, mem, bytes), FLX_ECORRUPT); /* zeroes: never initialised */
  CHECK_RC(flx_ring_open(&r, NULL, bytes), FLX_EINVAL);
  CHECK_RC(flx_ring_open(&r, mem + 64, bytes), FLX_ECORRUPT); /* aligned but not a ring */

  CHECK_RC(flx_ring_init(&r, mem, bytes, 64, 16), FLX_OK);
  CHECK(flx_ring_slot_size(&r) == 64 && flx_ring_slots(&r) == 16);
  flx_ring o;
  CHECK_RC(flx_ring_open(&o, mem, bytes), FLX_OK);
  CHECK(flx_ring_slot_size(&o) == 64 && flx_ring_slots(&o) == 16);
  CHECK_RC(flx_ring_open(&o, mem, bytes - 1), FLX_ECORRUPT); /* region shorter than the geometry */
  CHECK_RC(flx_ring_open(&o, mem, FLX_RING_HDR_BYTES - 1), FLX_ECORRUPT);
  CHECK_RC(flx_ring_open(&o, mem + 8, bytes), FLX_EINVAL);

  unsigned char saved[FLX_RING_HDR_BYTES];
  memcpy(saved, mem, sizeof saved);
#define TAMPER(stmt, want)                      \
  do {                                          \
    memcpy(mem, saved, sizeof saved);           \
    stmt;                                       \
    CHECK_RC(flx_ring_open(&o, mem, bytes), want); \
  } while (0)
  TAMPER(put64(mem, OFF_MAGIC, 0x1234), FLX_ECORRUPT);
  TAMPER(put32(mem, OFF_VERSION, FLX_RING_LAYOUT_VERSION + 1), FLX_EVERSION);
  TAMPER(put32(mem, OFF_SLOT_SIZE, 72), FLX_ECORRUPT);  /* valid on its own, but disagrees with the size */
  TAMPER(put32(mem, OFF_SLOT_SIZE, 60), FLX_ECORRUPT);  /* invalid slot size */
  TAMPER(put32(mem, OFF_SLOTS, 24), FLX_ECORRUPT);      /* not a power of two */
  TAMPER(put32(mem, OFF_SLOTS, 8), FLX_ECORRUPT);       /* valid, but ring_bytes disagrees */
  TAMPER(put64(mem, OFF_TAIL, 17), FLX_ECORRUPT);       /* tail - head > slots */
  TAMPER(put64(mem, OFF_HEAD, 1), FLX_ECORRUPT);        /* head > tail */
  TAMPER((put64(mem, OFF_HEAD, 100), put64(mem, OFF_TAIL, 116)), FLX_OK); /* full, not corrupt */
#undef TAMPER

  /* A peer that scribbles over the indices after open: errors, never out-of-bounds access. */
  memcpy(mem, saved, sizeof saved);
  CHECK_RC(flx_ring_open(&o, mem, bytes), FLX_OK);
  unsigned char buf[64 * 16];
  put64(mem, OFF_TAIL, 1000);
  CHECK_RC(flx_ring_pop_n(&o, buf, 16), FLX_ECORRUPT);
  CHECK_RC(flx_ring_wait_nonempty(&o, 0, 0), FLX_ECORRUPT);
  put64(mem, OFF_TAIL, 0);
  CHECK_RC(flx_ring_push_n(&o, buf, 16), 16); /* full: the next push must re-read head */
  put64(mem, OFF_HEAD, 1000);
  CHECK_RC(flx_ring_push(&o, buf), FLX_ECORRUPT);
  CHECK_RC(flx_ring_wait_nonfull(&o, 0, 0), FLX_ECORRUPT);
  munmap(mem, bytes + 4096);
}

static void test_single_thread_for(uint32_t slot_size, uint32_t slots) {
  size_t bytes = flx_ring_bytes(slot_size, slots);
  void *mem = map_shared(bytes);
  flx_ring r;
  CHECK_RC(flx_ring_init(&r, mem, bytes, slot_size, slots), FLX_OK);
  unsigned char *buf = calloc(2 * slots + 16, slot_size);
  unsigned char *out = calloc(2 * slots + 16, slot_size);

  CHECK_RC(flx_ring_pop(&r, out), FLX_EAGAIN);
  CHECK_RC(flx_ring_pop_n(&r, out, 4), 0);
  CHECK_RC(flx_ring_pop_n(&r, out, 0), 0);
  CHECK_RC(flx_ring_push_n(&r, buf, 0), 0);

  /* Fill with single pushes, one more is FLX_EAGAIN, drain with single pops. */
  for (uint32_t i = 0; i < slots; i++) {
    fill_slot(buf, slot_size, i);
    CHECK_RC(flx_ring_push(&r, buf), FLX_OK);
  }
  fill_slot(buf, slot_size, 999);
  CHECK_RC(flx_ring_push(&r, buf), FLX_EAGAIN);
  CHECK_RC(flx_ring_push_n(&r, buf, 3), 0);
  flx_ring_info info;
  flx_ring_stat(&r, &info);
  CHECK(info.head == 0 && info.tail == slots && info.slots == slots && info.slot_size == slot_size);
  for (uint32_t i = 0; i < slots; i++) {
    CHECK_RC(flx_ring_pop(&r, out), FLX_OK);
    CHECK(slot_ok(out, slot_size, i));
  }
  CHECK_RC(flx_ring_pop(&r, out), FLX_EAGAIN);

  /* Batches of varying sizes, crossing the wrap point many times; a model counts what
   * must fit and what must be there. */
  uint64_t pushed = slots, popped = slots; /* sequence numbers continue */
  uint32_t seed = 12345;
  for (int iter = 0; iter < 2000; iter++) {
    seed = seed * 1103515245u + 12345u;
    uint32_t n = (seed >> 16) % (slots + 3);
    for (uint32_t i = 0; i < n; i++) fill_slot(buf + (size_t)i * slot_size, slot_size, pushed + i);
    uint32_t room = slots - (uint32_t)(pushed - popped);
    int k = flx_ring_push_n(&r, buf, n);
    CHECK(k == (int)(n < room ? n : room));
    if (k > 0) pushed += (uint64_t)k;

    seed = seed * 1103515245u + 12345u;
    uint32_t m = (seed >> 16) % (slots + 3);
    uint32_t have = (uint32_t)(pushed - popped);
    int got = flx_ring_pop_n(&r, out, m);
    CHECK(got == (int)(m < have ? m : have));
    for (int i = 0; i < got; i++) CHECK(slot_ok(out + (size_t)i * slot_size, slot_size, popped + (uint64_t)i));
    if (got > 0) popped += (uint64_t)got;
  }
  flx_ring_stat(&r, &info);
  CHECK(info.head == popped && info.tail == pushed);
  CHECK(pushed > 10 * (uint64_t)slots);

  /* A second handle opened mid-stream continues where the first left off. */
  flx_ring o;
  CHECK_RC(flx_ring_open(&o, mem, bytes), FLX_OK);
  while (pushed - popped < slots) {
    fill_slot(buf, slot_size, pushed);
    CHECK_RC(flx_ring_push(&r, buf), FLX_OK);
    pushed++;
  }
  int got = flx_ring_pop_n(&o, out, slots + 5);
  CHECK(got == (int)slots);
  for (int i = 0; i < got; i++) CHECK(slot_ok(out + (size_t)i * slot_size, slot_size, popped + (uint64_t)i));
  popped += (uint64_t)got;
  CHECK(info.cons_sleeps == 0 && info.cons_wakes == 0); /* nothing ever slept */

  free(buf);
  free(out);
  munmap(mem, bytes);
}

static void test_single_thread(void) {
  test_single_thread_for(64, 8);
  test_single_thread_for(8, 2);
  test_single_thread_for(256, 16);
  test_single_thread_for(24, 64);
}

static void test_wait_timeouts(void) {
  size_t bytes = flx_ring_bytes(64, 4);
  void *mem = map_shared(bytes);
  flx_ring r;
  CHECK_RC(flx_ring_init(&r, mem, bytes, 64, 4), FLX_OK);
  unsigned char slot[64] = {0};

  CHECK_RC(flx_ring_wait_nonempty(&r, 0, 0), FLX_EAGAIN);
  CHECK_RC(flx_ring_wait_nonempty(&r, 100, 0), FLX_EAGAIN);
  int64_t t0 = now_ns();
  CHECK_RC(flx_ring_wait_nonempty(&r, 10, 20 * 1000000), FLX_EAGAIN);
  int64_t el = now_ns() - t0;
  CHECK(el >= 20 * 1000000);
  CHECK(el < 5 * 1000000000LL);
  CHECK_RC(flx_ring_wait_nonfull(&r, 0, 0), FLX_OK);
  CHECK_RC(flx_ring_pop_wait(&r, slot, 1, 10, 1000000), FLX_EAGAIN);
  CHECK_RC(flx_ring_pop_wait(&r, slot, 0, 10, 0), FLX_EINVAL);

  for (int i = 0; i < 4; i++) CHECK_RC(flx_ring_push(&r, slot), FLX_OK);
  CHECK_RC(flx_ring_wait_nonempty(&r, 0, -1), FLX_OK);
  CHECK_RC(flx_ring_wait_nonfull(&r, 0, 0), FLX_EAGAIN);
  t0 = now_ns();
  CHECK_RC(flx_ring_wait_nonfull(&r, 10, 15 * 1000000), FLX_EAGAIN);
  CHECK(now_ns() - t0 >= 15 * 1000000);
  CHECK_RC(flx_ring_pop(&r, slot), FLX_OK);
  CHECK_RC(flx_ring_wait_nonfull(&r, 0, -1), FLX_OK);

  flx_ring_info info;
  flx_ring_stat(&r, &info);
  CHECK(info.cons_waiters == 0 && info.prod_waiters == 0); /* timeouts undo their announcement */
  CHECK(info.cons_sleeps >= 1 && info.prod_sleeps >= 1);
  munmap(mem, bytes);
}

struct waiter_arg {
  flx_ring *r;
  int nonfull;
  int rc;
};

static void *waiter_main(void *p) {
  struct waiter_arg *a = p;
  a->rc = a->nonfull ? flx_ring_wait_nonfull(a->r, FLX_RING_SPIN_EVENT, -1)
                     : flx_ring_wait_nonempty(a->r, FLX_RING_SPIN_EVENT, -1);
  return NULL;
}

/* Polls until the ring shows the given number of announced waiters (or 10 s pass). */
static int wait_for_waiters(flx_ring *r, uint32_t cons, uint32_t prod) {
  for (int i = 0; i < 10000; i++) {
    flx_ring_info info;
    flx_ring_stat(r, &info);
    if (info.cons_waiters == cons && info.prod_waiters == prod) return 1;
    sleep_ms(1);
  }
  return 0;
}

static void test_close(void) {
  size_t bytes = flx_ring_bytes(64, 4);
  void *mem = map_shared(bytes);
  flx_ring r;
  unsigned char slot[64 * 4];

  /* Close drains: slots pushed before the close are still delivered. */
  CHECK_RC(flx_ring_init(&r, mem, bytes, 64, 4), FLX_OK);
  for (uint64_t i = 0; i < 3; i++) {
    fill_slot(slot, 64, i);
    CHECK_RC(flx_ring_push(&r, slot), FLX_OK);
  }
  CHECK(!flx_ring_is_closed(&r));
  CHECK_RC(flx_ring_close(&r), FLX_OK);
  CHECK_RC(flx_ring_close(&r), FLX_OK); /* idempotent */
  CHECK(flx_ring_is_closed(&r));
  CHECK_RC(flx_ring_push(&r, slot), FLX_RING_ECLOSED);
  CHECK_RC(flx_ring_push_n(&r, slot, 1), FLX_RING_ECLOSED);
  CHECK_RC(flx_ring_wait_nonfull(&r, 0, -1), FLX_RING_ECLOSED);
  CHECK_RC(flx_ring_wait_nonempty(&r, 0, -1), FLX_OK);
  CHECK_RC(flx_ring_pop(&r, slot), FLX_OK);
  CHECK(slot_ok(slot, 64, 0));
  CHECK_RC(flx_ring_pop_wait(&r, slot, 4, 0, -1), 2);
  CHECK(slot_ok(slot, 64, 1) && slot_ok(slot + 64, 64, 2));
  CHECK_RC(flx_ring_pop_wait(&r, slot, 4, 0, -1), FLX_RING_ECLOSED);
  CHECK_RC(flx_ring_pop(&r, slot), FLX_RING_ECLOSED);
  CHECK_RC(flx_ring_pop_n(&r, slot, 4), FLX_RING_ECLOSED);
  CHECK_RC(flx_ring_wait_nonempty(&r, 0, -1), FLX_RING_ECLOSED);
  CHECK(FLX_RING_ECLOSED == FLX_ENOTFOUND);

  /* Close wakes a consumer asleep on an empty ring and a producer asleep on a full one. */
  size_t b2 = flx_ring_bytes(64, 2);
  void *mem2 = map_shared(b2);
  flx_ring full;
  CHECK_RC(flx_ring_init(&r, mem, bytes, 64, 4), FLX_OK);
  CHECK_RC(flx_ring_init(&full, mem2, b2, 64, 2), FLX_OK);
  CHECK_RC(flx_ring_push_n(&full, slot, 2), 2);
  struct waiter_arg wc = {&r, 0, 1}, wp = {&full, 1, 1};
  pthread_t tc, tp;
  CHECK(pthread_create(&tc, NULL, waiter_main, &wc) == 0);
  CHECK(pthread_create(&tp, NULL, waiter_main, &wp) == 0);
  CHECK(wait_for_waiters(&r, 1, 0));
  CHECK(wait_for_waiters(&full, 0, 1));
  sleep_ms(20); /* let both reach the futex */
  CHECK_RC(flx_ring_close(&r), FLX_OK);
  CHECK_RC(flx_ring_close(&full), FLX_OK);
  pthread_join(tc, NULL);
  pthread_join(tp, NULL);
  CHECK_RC(wc.rc, FLX_RING_ECLOSED);
  CHECK_RC(wp.rc, FLX_RING_ECLOSED);
  flx_ring_info info;
  flx_ring_stat(&r, &info);
  CHECK(info.cons_waiters == 0 && info.cons_sleeps >= 1);

  /* A push wakes a consumer asleep with an infinite timeout. */
  CHECK_RC(flx_ring_init(&r, mem, bytes, 64, 4), FLX_OK);
  wc.rc = 1;
  CHECK(pthread_create(&tc, NULL, waiter_main, &wc) == 0);
  CHECK(wait_for_waiters(&r, 1, 0));
  sleep_ms(20);
  fill_slot(slot, 64, 7);
  CHECK_RC(flx_ring_push(&r, slot), FLX_OK);
  pthread_join(tc, NULL);
  CHECK_RC(wc.rc, FLX_OK);
  flx_ring_stat(&r, &info);
  CHECK(info.cons_wakes >= 1 && info.cons_waiters == 0);
  munmap(mem, bytes);
  munmap(mem2, b2);
}

/* ---- 2-thread stream -------------------------------------------------------------- */

#define STREAM_SLOT 64
#define STREAM_BATCH 32

struct stream {
  flx_ring prod, cons; /* separate handles, as two processes would have */
  uint64_t count;
  uint32_t spin;
  int prod_rc, cons_rc;
  uint64_t received;
  uint64_t bad;
};

static void *stream_producer(void *p) {
  struct stream *s = p;
  unsigned char buf[STREAM_BATCH * STREAM_SLOT];
  uint64_t seq = 0;
  uint32_t seed = 777;
  while (seq < s->count) {
    seed = seed * 1103515245u + 12345u;
    uint32_t n = 1 + (seed >> 16) % STREAM_BATCH;
    if (n > s->count - seq) n = (uint32_t)(s->count - seq);
    for (uint32_t i = 0; i < n; i++) fill_slot(buf + (size_t)i * STREAM_SLOT, STREAM_SLOT, seq + i);
    uint32_t done = 0;
    while (done < n) {
      int k = (n - done == 1) ? (flx_ring_push(&s->prod, buf + (size_t)done * STREAM_SLOT) == FLX_OK)
                              : flx_ring_push_n(&s->prod, buf + (size_t)done * STREAM_SLOT, n - done);
      if (k < 0) {
        s->prod_rc = k;
        return NULL;
      }
      done += (uint32_t)k;
      if (done < n) {
        int rc = flx_ring_wait_nonfull(&s->prod, s->spin, -1);
        if (rc != FLX_OK) {
          s->prod_rc = rc;
          return NULL;
        }
      }
    }
    seq += n;
  }
  s->prod_rc = flx_ring_close(&s->prod);
  return NULL;
}

static void *stream_consumer(void *p) {
  struct stream *s = p;
  unsigned char buf[STREAM_BATCH * STREAM_SLOT];
  uint32_t seed = 4242;
  for (;;) {
    int rc = flx_ring_wait_nonempty(&s->cons, s->spin, -1);
    if (rc == FLX_RING_ECLOSED) break;
    if (rc != FLX_OK) {
      s->cons_rc = rc;
      return NULL;
    }
    seed = seed * 1103515245u + 12345u;
    uint32_t m = 1 + (seed >> 16) % STREAM_BATCH;
    int got = m == 1 ? (flx_ring_pop(&s->cons, buf) == FLX_OK) : flx_ring_pop_n(&s->cons, buf, m);
    if (got < 0) {
      s->cons_rc = got;
      return NULL;
    }
    for (int i = 0; i < got; i++) {
      if (!slot_ok(buf + (size_t)i * STREAM_SLOT, STREAM_SLOT, s->received)) s->bad++;
      s->received++;
    }
  }
  s->cons_rc = FLX_OK;
  return NULL;
}

static void test_threads(const char *mode, uint32_t spin, uint64_t count) {
  uint32_t slots = 256;
  size_t bytes = flx_ring_bytes(STREAM_SLOT, slots);
  void *mem = map_shared(bytes);
  static struct stream s;
  memset(&s, 0, sizeof s);
  s.count = count;
  s.spin = spin;
  CHECK_RC(flx_ring_init(&s.prod, mem, bytes, STREAM_SLOT, slots), FLX_OK);
  CHECK_RC(flx_ring_open(&s.cons, mem, bytes), FLX_OK);
  int64_t t0 = now_ns();
  pthread_t tp, tc;
  CHECK(pthread_create(&tc, NULL, stream_consumer, &s) == 0);
  CHECK(pthread_create(&tp, NULL, stream_producer, &s) == 0);
  pthread_join(tp, NULL);
  pthread_join(tc, NULL);
  double secs = (double)(now_ns() - t0) / 1e9;
  CHECK_RC(s.prod_rc, FLX_OK);
  CHECK_RC(s.cons_rc, FLX_OK);
  CHECK(s.received == count);
  CHECK(s.bad == 0);
  flx_ring_info info;
  flx_ring_stat(&s.cons, &info);
  CHECK(info.tail == count && info.head == count);
  CHECK(info.cons_waiters == 0 && info.prod_waiters == 0);
  printf("test_ring: threads %-12s %" PRIu64 " slots in %.2f s (%.1f M slots/s); consumer slept %" PRIu64
         "x, producer slept %" PRIu64 "x, wakes %" PRIu64 "/%" PRIu64 "\n",
         mode, count, secs, (double)count / secs / 1e6, info.cons_sleeps, info.prod_sleeps, info.cons_wakes,
         info.prod_wakes);
  munmap(mem, bytes);
}

/* ---- cross-process ------------------------------------------------------------- */

#define XP_SLOTS 128
#define XP_SLOT 64

/* Two rings in one shared region: submit (parent -> child) and complete (child -> parent). */
struct xp {
  void *mem;
  size_t ring_bytes, bytes;
};

static struct xp xp_map(void) {
  struct xp x;
  x.ring_bytes = flx_ring_bytes(XP_SLOT, XP_SLOTS); /* a multiple of 64, so ring 2 stays aligned */
  x.bytes = 2 * x.ring_bytes;
  x.mem = map_shared(x.bytes);
  return x;
}

static char proc_state(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return '?';
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  return p && p[1] == ' ' ? p[2] : '?';
}

/* Child of the echo test: echoes every slot from submit to complete until submit is
 * closed, then closes complete. Event-driven, so it sleeps whenever submit is empty. */
static int echo_child(struct xp x, uint32_t spin) {
  flx_ring sub, comp;
  if (flx_ring_open(&sub, x.mem, x.ring_bytes) != FLX_OK) return 10;
  if (flx_ring_open(&comp, (unsigned char *)x.mem + x.ring_bytes, x.ring_bytes) != FLX_OK) return 11;
  unsigned char buf[XP_SLOTS * XP_SLOT];
  for (;;) {
    int got = flx_ring_pop_wait(&sub, buf, XP_SLOTS, spin, -1);
    if (got == FLX_RING_ECLOSED) break;
    if (got <= 0) return 12;
    for (int done = 0; done < got;) {
      int k = flx_ring_push_n(&comp, buf + (size_t)done * XP_SLOT, (uint32_t)(got - done));
      if (k < 0) return 14;
      done += k;
      if (done < got && flx_ring_wait_nonfull(&comp, spin, -1) != FLX_OK) return 15;
    }
  }
  return flx_ring_close(&comp) == FLX_OK ? 0 : 16;
}

static int wait_child(pid_t pid, int timeout_ms) {
  for (int i = 0; i < timeout_ms; i++) {
    int st;
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    sleep_ms(1);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

static void test_fork_echo(uint64_t count) {
  struct xp x = xp_map();
  flx_ring sub, comp;
  CHECK_RC(flx_ring_init(&sub, x.mem, x.ring_bytes, XP_SLOT, XP_SLOTS), FLX_OK);
  CHECK_RC(flx_ring_init(&comp, (unsigned char *)x.mem + x.ring_bytes, x.ring_bytes, XP_SLOT, XP_SLOTS), FLX_OK);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(echo_child(x, FLX_RING_SPIN_EVENT));
  CHECK(pid > 0);

  /* The child goes to sleep on the empty submit ring: it announces itself and the
   * kernel shows it blocked ('S'). */
  CHECK(wait_for_waiters(&sub, 1, 0));
  char st = '?';
  for (int i = 0; i < 2000 && (st = proc_state(pid)) != 'S'; i++) sleep_ms(1);
  CHECK(st == 'S');
  flx_ring_info before;
  flx_ring_stat(&sub, &before);
  CHECK(before.cons_sleeps >= 1);

  /* One push wakes it; the echo comes back. */
  unsigned char buf[XP_SLOTS * XP_SLOT];
  fill_slot(buf, XP_SLOT, 0);
  CHECK_RC(flx_ring_push(&sub, buf), FLX_OK);
  CHECK_RC(flx_ring_wait_nonempty(&comp, FLX_RING_SPIN_EVENT, 10 * 1000000000LL), FLX_OK);
  CHECK_RC(flx_ring_pop(&comp, buf), FLX_OK);
  CHECK(slot_ok(buf, XP_SLOT, 0));
  flx_ring_info after;
  flx_ring_stat(&sub, &after);
  CHECK(after.cons_wakes >= before.cons_wakes + 1);

  /* A pipelined stream: push batches, read echoes, everything in order. */
  uint64_t sent = 1, recv = 1;
  uint32_t seed = 99;
  while (recv < count) {
    if (sent < count) {
      seed = seed * 1103515245u + 12345u;
      uint32_t n = 1 + (seed >> 16) % 48;
      if (n > count - sent) n = (uint32_t)(count - sent);
      for (uint32_t i = 0; i < n; i++) fill_slot(buf + (size_t)i * XP_SLOT, XP_SLOT, sent + i);
      int k = flx_ring_push_n(&sub, buf, n);
      CHECK(k >= 0);
      if (k < 0) break;
      sent += (uint64_t)k;
    }
    int rc = flx_ring_wait_nonempty(&comp, FLX_RING_SPIN_EVENT, sent < count ? 0 : 10 * 1000000000LL);
    if (rc == FLX_EAGAIN) continue;
    CHECK_RC(rc, FLX_OK);
    if (rc != FLX_OK) break;
    int got = flx_ring_pop_n(&comp, buf, XP_SLOTS);
    CHECK(got >= 0);
    if (got < 0) break;
    for (int i = 0; i < got; i++, recv++)
      if (!slot_ok(buf + (size_t)i * XP_SLOT, XP_SLOT, recv)) {
        CHECK(!"echo out of order or torn");
        recv = count;
        break;
      }
  }
  CHECK(recv == count);

  /* Closing submit makes the child finish; it closes complete, which we observe. */
  CHECK_RC(flx_ring_close(&sub), FLX_OK);
  CHECK_RC(flx_ring_wait_nonempty(&comp, FLX_RING_SPIN_EVENT, 10 * 1000000000LL), FLX_RING_ECLOSED);
  CHECK_RC(wait_child(pid, 10000), 0);
  flx_ring_stat(&sub, &after);
  printf("test_ring: fork echo %" PRIu64 " slots; child slept %" PRIu64 "x, woken %" PRIu64 "x\n", count,
         after.cons_sleeps, after.cons_wakes);
  munmap(x.mem, x.bytes);
}

/* A child asleep with an infinite timeout returns FLX_RING_ECLOSED when the parent closes
 * the ring; a child killed while asleep leaves a stale announcement that costs the
 * producer one wake. */
static void test_fork_close(void) {
  struct xp x = xp_map();
  flx_ring r;
  CHECK_RC(flx_ring_init(&r, x.mem, x.ring_bytes, XP_SLOT, XP_SLOTS), FLX_OK);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    flx_ring c;
    if (flx_ring_open(&c, x.mem, x.ring_bytes) != FLX_OK) _exit(10);
    _exit(flx_ring_wait_nonempty(&c, 0, -1) == FLX_RING_ECLOSED ? 0 : 11);
  }
  CHECK(wait_for_waiters(&r, 1, 0));
  char st = '?';
  for (int i = 0; i < 2000 && (st = proc_state(pid)) != 'S'; i++) sleep_ms(1);
  CHECK(st == 'S');
  CHECK_RC(flx_ring_close(&r), FLX_OK);
  CHECK_RC(wait_child(pid, 10000), 0);

  CHECK_RC(flx_ring_init(&r, x.mem, x.ring_bytes, XP_SLOT, XP_SLOTS), FLX_OK);
  pid = fork();
  if (pid == 0) {
    flx_ring c;
    if (flx_ring_open(&c, x.mem, x.ring_bytes) != FLX_OK) _exit(10);
    flx_ring_wait_nonempty(&c, 0, -1);
    _exit(12);
  }
  CHECK(wait_for_waiters(&r, 1, 0));
  kill(pid, SIGKILL);
  CHECK(wait_child(pid, 10000) == 128 + SIGKILL);
  unsigned char slot[XP_SLOT];
  fill_slot(slot, XP_SLOT, 5);
  CHECK_RC(flx_ring_push(&r, slot), FLX_OK);
  CHECK_RC(flx_ring_pop(&r, slot), FLX_OK);
  CHECK(slot_ok(slot, XP_SLOT, 5));
  flx_ring_info info;
  flx_ring_stat(&r, &info);
  /* The dead waiter's announcement cost one wake, then it is gone. */
  CHECK(info.cons_waiters == 0 && info.cons_wakes == 1);
  CHECK_RC(flx_ring_push(&r, slot), FLX_OK);
  flx_ring_stat(&r, &info);
  CHECK(info.cons_wakes == 1);
  munmap(x.mem, x.bytes);
}

/* ---- bench (not run by ctest) ------------------------------------------------------ */

struct pp {
  flx_ring a2b, b2a;
  uint32_t spin;
  uint64_t iters;
};

static void pp_echo(struct pp *p) {
  unsigned char slot[64];
  for (uint64_t i = 0; i < p->iters; i++) {
    if (flx_ring_wait_nonempty(&p->a2b, p->spin, -1) != FLX_OK) return;
    flx_ring_pop(&p->a2b, slot);
    flx_ring_push(&p->b2a, slot);
  }
}

/* With FLX_RING_BENCH_PIN=1 the bench pins the two sides to CPUs 0 and 1: on a quiet
 * host that keeps the scheduler from leaving both threads on one CPU; on a host busy
 * with other work it makes things worse, so it is off by default. */
static void pin_to(int cpu) {
  const char *pin = getenv("FLX_RING_BENCH_PIN");
  if (pin == NULL || strcmp(pin, "1") != 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) perror("bench: sched_setaffinity (unpinned)");
}

static void *pp_echo_thread(void *arg) {
  pin_to(1);
  pp_echo(arg);
  return NULL;
}

static double pp_run(struct pp *p) {
  unsigned char slot[64] = {0};
  int64_t t0 = now_ns();
  for (uint64_t i = 0; i < p->iters; i++) {
    flx_ring_push(&p->a2b, slot);
    if (flx_ring_wait_nonempty(&p->b2a, p->spin, -1) != FLX_OK) return -1;
    flx_ring_pop(&p->b2a, slot);
  }
  return (double)(now_ns() - t0) / (double)p->iters;
}

static void *stream_consumer_pinned(void *p) {
  pin_to(1);
  return stream_consumer(p);
}

static void bench(void) {
  pin_to(0);
  size_t rb = flx_ring_bytes(64, 1024);
  unsigned char *mem = map_shared(2 * rb);
  const char *names[2] = {"busy_poll", "event_driven"};
  uint32_t spins[2] = {FLX_RING_SPIN_BUSY, FLX_RING_SPIN_EVENT};
  for (int m = 0; m < 2; m++) {
    for (int proc = 0; proc < 2; proc++) {
      struct pp *p = (struct pp *)(void *)mmap(NULL, sizeof(struct pp), PROT_READ | PROT_WRITE,
                                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
      flx_ring_init(&p->a2b, mem, rb, 64, 1024);
      flx_ring_init(&p->b2a, mem + rb, rb, 64, 1024);
      p->spin = spins[m];
      p->iters = m == 0 ? 1000000 : 100000;
      pthread_t t;
      pid_t pid = 0;
      if (proc) {
        fflush(NULL);
        pid = fork();
        if (pid == 0) {
          pin_to(1);
          pp_echo(p);
          _exit(0);
        }
      } else {
        pthread_create(&t, NULL, pp_echo_thread, p);
      }
      double ns = pp_run(p);
      if (proc)
        waitpid(pid, NULL, 0);
      else
        pthread_join(t, NULL);
      printf("bench: ping-pong %-12s %-9s %8.0f ns/round-trip\n", names[m], proc ? "processes" : "threads", ns);
      munmap(p, sizeof *p);
    }
  }
  for (int m = 0; m < 2; m++) {
    static struct stream s;
    memset(&s, 0, sizeof s);
    s.count = 50000000;
    s.spin = spins[m];
    flx_ring_init(&s.prod, mem, rb, STREAM_SLOT, 1024);
    flx_ring_open(&s.cons, mem, rb);
    int64_t t0 = now_ns();
    pthread_t tp, tc;
    pthread_create(&tc, NULL, stream_consumer_pinned, &s);
    pthread_create(&tp, NULL, stream_producer, &s); /* inherits CPU 0 */
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("bench: stream %-12s threads, batches 1-%d: %.1f M slots/s (%s)\n", names[m], STREAM_BATCH,
           (double)s.count / secs / 1e6, s.bad == 0 && s.received == s.count ? "verified" : "BROKEN");
  }
  munmap(mem, 2 * rb);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "bench") == 0) {
    bench();
    return 0;
  }
  int64_t t0 = now_ns();
  test_geometry();
  test_single_thread();
  test_wait_timeouts();
  test_close();
  test_threads("busy_poll", FLX_RING_SPIN_BUSY, 10000000);
  test_threads("event_driven", FLX_RING_SPIN_EVENT, 10000000);
  test_fork_echo(1000000);
  test_fork_close();
  if (failures) {
    fprintf(stderr, "test_ring: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_ring: ok (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
  return 0;
}
