/* Pool under concurrency:
 *  1. four threads allocate and free random sizes (small classes, extents, multi-segment
 *     runs), fill every object with a pattern and verify all of its bytes before freeing it;
 *     some objects are freed by another thread (a shard other than the one that allocated
 *     them). Half-way, all threads stop and the live objects are checked for overlap and the
 *     allocator's bookkeeping is checked.
 *  2. one writer publishes and removes objects while readers take references, verify the
 *     bytes and drop them: a referenced object's bytes never change under a reader, and every
 *     object is freed exactly once (the pool ends empty). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fluxon/pool.h"

static int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);                     \
    }                                                                          \
  } while (0)

#define MiB (1ull << 20)
#define THREADS 4
#define OPS 25000
#define LIVE 256

static flx_pool *pool;

static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* Roughly log-uniform in [2^lo, 2^hi). */
static uint64_t log_uniform(uint64_t *s, unsigned lo, unsigned hi) {
  unsigned k = lo + (unsigned)(rnd(s) % (hi - lo));
  return (1ull << k) + rnd(s) % (1ull << k);
}

static uint64_t pick_len(uint64_t *s) {
  uint64_t r = rnd(s) % 1000;
  if (r < 900) return log_uniform(s, 0, 12);  /* 1 B .. 8 KiB */
  if (r < 990) return log_uniform(s, 12, 18); /* 4 KiB .. 512 KiB */
  return log_uniform(s, 18, 22);              /* 256 KiB .. 8 MiB: extents and segment runs */
}

static void fill(uint8_t *d, uint64_t n, uint64_t seed) {
  uint64_t *w = (uint64_t *)d, nw = n / 8;
  for (uint64_t i = 0; i < nw; i++) w[i] = seed ^ (i * 0x9E3779B97F4A7C15ull);
  for (uint64_t i = nw * 8; i < n; i++) d[i] = (uint8_t)(seed + i);
}

static int verify(const uint8_t *d, uint64_t n, uint64_t seed) {
  const uint64_t *w = (const uint64_t *)d;
  uint64_t nw = n / 8;
  for (uint64_t i = 0; i < nw; i++)
    if (w[i] != (seed ^ (i * 0x9E3779B97F4A7C15ull))) return 0;
  for (uint64_t i = nw * 8; i < n; i++)
    if (d[i] != (uint8_t)(seed + i)) return 0;
  return 1;
}

/* ---- 1. alloc/free stress ---------------------------------------------------------------- */

struct obj {
  uint64_t off, len, seed;
  int sealed;
};

static struct obj live[THREADS][LIVE];
static int nlive[THREADS];
static pthread_barrier_t mid;
static pthread_mutex_t xq_mu = PTHREAD_MUTEX_INITIALIZER;
static struct obj xq[4096];
static int xq_n;
static uint64_t nallocs[THREADS], nenomem[THREADS], ncross[THREADS];

static void release(struct obj *o) {
  uint64_t n = 0;
  const uint8_t *d = flx_obj_data(pool, o->off, &n);
  CHECK(d != NULL && n == o->len);
  if (d && !verify(d, n, o->seed)) {
    fprintf(stderr, "object at %lu (%lu bytes) lost its pattern\n", (unsigned long)o->off, (unsigned long)n);
    CHECK(0);
  }
  if (o->sealed) {
    CHECK(flx_obj_remove(pool, o->off) == 0); /* the writer's reference keeps it */
    CHECK(flx_obj_unref(pool, o->off) == 1);  /* and dropping it frees it */
  } else {
    CHECK(flx_pool_free(pool, o->off) == FLX_OK); /* writer abandons an unsealed object */
  }
}

static void *stress_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t s = 0x9E3779B97F4A7C15ull * ((uint64_t)t + 1);
  struct obj *mine = live[t];
  for (int op = 0; op < OPS; op++) {
    if (op == OPS / 2) { /* the barrier publishes live[t] and nlive[t] to main */
      pthread_barrier_wait(&mid);
      pthread_barrier_wait(&mid); /* main checks overlap meanwhile */
    }
    int *n = &nlive[t];
    uint64_t r = rnd(&s) % 100;
    if (*n < LIVE && (r < 55 || *n == 0)) {
      struct obj o = {.len = pick_len(&s), .seed = rnd(&s), .sealed = (int)(rnd(&s) & 1)};
      int rc = flx_pool_alloc(pool, o.len, o.seed, 1, &o.off);
      if (rc == FLX_ENOMEM) {
        nenomem[t]++;
        if (*n > 0) {
          int i = (int)(rnd(&s) % (uint64_t)*n);
          release(&mine[i]);
          mine[i] = mine[--*n];
        }
        continue;
      }
      CHECK(rc == FLX_OK);
      if (rc != FLX_OK) continue;
      nallocs[t]++;
      fill(flx_obj_data(pool, o.off, NULL), o.len, o.seed);
      if (o.sealed) CHECK(flx_obj_seal(pool, o.off) == FLX_OK);
      mine[(*n)++] = o;
    } else if (r < 93 && *n > 0) {
      int i = (int)(rnd(&s) % (uint64_t)*n);
      release(&mine[i]);
      mine[i] = mine[--*n];
    } else {
      /* Hand an object to whichever thread comes next, or free one handed over. */
      pthread_mutex_lock(&xq_mu);
      struct obj o = {0};
      int have = 0;
      if ((r & 1) && *n > 0 && xq_n < (int)(sizeof xq / sizeof xq[0])) {
        int i = (int)(rnd(&s) % (uint64_t)*n);
        xq[xq_n++] = mine[i];
        mine[i] = mine[--*n];
      } else if (xq_n > 0) {
        o = xq[--xq_n];
        have = 1;
      }
      pthread_mutex_unlock(&xq_mu);
      if (have) {
        release(&o);
        ncross[t]++;
      }
    }
  }
  for (int i = 0; i < nlive[t]; i++) release(&mine[i]);
  nlive[t] = 0;
  return NULL;
}

struct range {
  uint64_t lo, hi;
};
static int by_lo(const void *a, const void *b) {
  const struct range *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void check_no_overlap(void) {
  static struct range rs[THREADS * LIVE + 4096];
  int n = 0;
  for (int t = 0; t < THREADS; t++)
    for (int i = 0; i < nlive[t]; i++)
      rs[n++] = (struct range){live[t][i].off - FLX_OBJ_HEADER_SIZE, live[t][i].off + live[t][i].len};
  pthread_mutex_lock(&xq_mu);
  for (int i = 0; i < xq_n; i++) rs[n++] = (struct range){xq[i].off - FLX_OBJ_HEADER_SIZE, xq[i].off + xq[i].len};
  pthread_mutex_unlock(&xq_mu);
  qsort(rs, (size_t)n, sizeof rs[0], by_lo);
  for (int i = 1; i < n; i++) CHECK(rs[i - 1].hi <= rs[i].lo);
  flx_pool_stats st;
  CHECK(flx_pool_stats_get(pool, &st) == FLX_OK);
  CHECK(st.object_count == (uint64_t)n);
  CHECK(flx_pool_check(pool) == FLX_OK);
  printf("stress: %d live objects at the half-way point, %lu bytes used, no overlap\n", n,
         (unsigned long)st.used_bytes);
}

static void test_stress(const char *path) {
  /* Small enough that ENOMEM (and taking back other shards' empty spans) happens often. */
  CHECK(flx_pool_create(path, 40 * MiB, 4 * MiB, FLX_POOL_SPARSE, &pool) == FLX_OK);
  pthread_barrier_init(&mid, NULL, THREADS + 1);
  pthread_t th[THREADS];
  for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, stress_thread, (void *)(intptr_t)t);
  pthread_barrier_wait(&mid);
  check_no_overlap();
  pthread_barrier_wait(&mid);
  for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
  for (int i = 0; i < xq_n; i++) release(&xq[i]);
  xq_n = 0;
  pthread_barrier_destroy(&mid);
  flx_pool_stats st;
  CHECK(flx_pool_stats_get(pool, &st) == FLX_OK);
  CHECK(st.object_count == 0 && st.used_bytes == 0 && st.reserved_bytes == 0);
  CHECK(flx_pool_check(pool) == FLX_OK);
  uint64_t a = 0, e = 0, c = 0;
  for (int t = 0; t < THREADS; t++) a += nallocs[t], e += nenomem[t], c += ncross[t];
  printf("stress: %d threads, %lu allocations, %lu ENOMEM, %lu freed by another thread\n", THREADS,
         (unsigned long)a, (unsigned long)e, (unsigned long)c);
  CHECK(a > THREADS * OPS / 3 && c > 0);
  CHECK(flx_pool_destroy(pool) == FLX_OK);
}

/* ---- 2. readers pin what a writer removes ------------------------------------------------ */

#define SLOTS 16
#define WRITES 20000
#define READERS 3
static uint64_t slots[SLOTS];
static int writer_done;
static uint64_t reads_ok[READERS], reads_failed[READERS];

static void *writer(void *arg) {
  (void)arg;
  uint64_t s = 12345;
  for (int i = 0; i < WRITES; i++) {
    uint64_t len = (rnd(&s) % 10 == 0) ? log_uniform(&s, 17, 20) : log_uniform(&s, 0, 11), off = 0;
    int rc = flx_pool_alloc(pool, len, (uint64_t)i, 1, &off);
    CHECK(rc == FLX_OK);
    if (rc != FLX_OK) continue;
    flx_obj_info in;
    flx_obj_info_get(pool, off, &in);
    fill(flx_obj_data(pool, off, NULL), len, in.alloc_seq);
    CHECK(flx_obj_seal(pool, off) == FLX_OK);
    CHECK(flx_obj_unref(pool, off) == 0); /* READY, unreferenced, still published */
    uint64_t old = __atomic_exchange_n(&slots[rnd(&s) % SLOTS], off, __ATOMIC_ACQ_REL);
    if (old) {
      rc = flx_obj_remove(pool, old);
      CHECK(rc == 0 || rc == 1);
    }
  }
  for (int i = 0; i < SLOTS; i++) {
    uint64_t old = __atomic_exchange_n(&slots[i], 0, __ATOMIC_ACQ_REL);
    if (old) {
      int rc = flx_obj_remove(pool, old);
      CHECK(rc == 0 || rc == 1);
    }
  }
  __atomic_store_n(&writer_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void *reader(void *arg) {
  int r = (int)(intptr_t)arg;
  uint64_t s = 777 + (uint64_t)r;
  while (!__atomic_load_n(&writer_done, __ATOMIC_ACQUIRE)) {
    uint64_t off = __atomic_load_n(&slots[rnd(&s) % SLOTS], __ATOMIC_ACQUIRE);
    if (!off) continue;
    int rc = flx_obj_ref(pool, off);
    if (rc != FLX_OK) {
      /* The slot was stale: removed, freed, or its bytes reused for another object. */
      CHECK(rc == FLX_ENOTFOUND || rc == FLX_EBUSY || rc == FLX_ECORRUPT);
      reads_failed[r]++;
      continue;
    }
    flx_obj_info in;
    CHECK(flx_obj_info_get(pool, off, &in) == FLX_OK);
    CHECK(in.state == FLX_OBJ_READY || in.state == FLX_OBJ_REMOVED);
    const uint8_t *d = flx_obj_data(pool, off, NULL);
    CHECK(d && verify(d, in.length, in.alloc_seq));
    for (volatile int spin = 0; spin < 200; spin++) {
    }
    CHECK(d && verify(d, in.length, in.alloc_seq)); /* still ours while we hold the reference */
    rc = flx_obj_unref(pool, off);
    CHECK(rc == 0 || rc == 1);
    reads_ok[r]++;
  }
  return NULL;
}

static void test_readers(const char *path) {
  CHECK(flx_pool_create(path, 64 * MiB, 2 * MiB, FLX_POOL_SPARSE, &pool) == FLX_OK);
  pthread_t w, rd[READERS];
  for (int r = 0; r < READERS; r++) pthread_create(&rd[r], NULL, reader, (void *)(intptr_t)r);
  pthread_create(&w, NULL, writer, NULL);
  pthread_join(w, NULL);
  for (int r = 0; r < READERS; r++) pthread_join(rd[r], NULL);
  flx_pool_stats st;
  CHECK(flx_pool_stats_get(pool, &st) == FLX_OK);
  CHECK(st.object_count == 0 && st.used_bytes == 0); /* every object freed exactly once */
  CHECK(flx_pool_check(pool) == FLX_OK);
  uint64_t ok = 0, bad = 0;
  for (int r = 0; r < READERS; r++) ok += reads_ok[r], bad += reads_failed[r];
  printf("readers: %d writes, %lu pinned reads verified, %lu refs refused on stale offsets\n", WRITES,
         (unsigned long)ok, (unsigned long)bad);
  CHECK(ok > 0);
  CHECK(flx_pool_destroy(pool) == FLX_OK);
}

int main(void) {
  char path[256];
  snprintf(path, sizeof path, "/dev/shm/flx-test-pool-stress-%d", (int)getpid());
  test_stress(path);
  test_readers(path);
  unlink(path);
  if (failures) {
    fprintf(stderr, "test_pool_stress: %d failures\n", failures);
    return 1;
  }
  printf("test_pool_stress: ok\n");
  return 0;
}
