/* Fragmentation: a 1 GiB pool (16 MiB segments) on /dev/shm, object lengths log-uniform in
 * [64 B, 64 MiB]. Fill until full, free half of the objects at random, fill again. "Full"
 * means FILL_GIVE_UP requests in a row failed with FLX_ENOMEM; the fraction when the first
 * request failed is printed too. Usable fraction = sum of object lengths / pool size.
 *
 * Bounds asserted (seeds 1..20 gave: first fill 0.9978..0.9988, first ENOMEM at
 * 0.916..0.993; after freeing half 0.34..0.67; second fill 0.9964..0.9977, first ENOMEM at
 * 0.69..0.97; docs/pool.md has the argument):
 *  - first fill >= 0.95, and >= 0.85 when the first request fails: the pool starts as one
 *    free run and best fit packs blocks back to back. What is lost is rounding (4 KiB pages
 *    for extents, < 25 % for small objects, which hold a tiny share of the bytes here), the
 *    pages skipped so that a block of at most one segment does not cross a segment boundary,
 *    and the gap at the end, which the first too-large request finds and later smaller ones
 *    fill.
 *  - after freeing half of the objects, about half of the bytes remain; which big objects go
 *    is random, so only 0.2 .. 0.8 is asserted.
 *  - second fill >= 0.95: the holes are wherever the freed objects were, so large requests
 *    fail earlier (the first-ENOMEM fraction is printed, not asserted: it measures the size
 *    of the largest hole against a 64 MiB request), but smaller requests fill what is left.
 *    Note that this saturated figure is a weak judge of an allocator: with lengths down to
 *    64 B almost any gap gets filled (turning coalescing off moves it only from 0.9969 to
 *    0.9960, though flx_pool_check catches that). The first-ENOMEM figures say more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fluxon/pool.h"

static int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)

#define MiB (1ull << 20)
#define POOL (1024 * MiB)
#define MAX_OBJS 200000
#define FILL_GIVE_UP 1000

static flx_pool *pool;
static uint64_t offs[MAX_OBJS], lens[MAX_OBJS];
static int nobj;
static uint64_t bytes;

static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* Log-uniform in [64 B, 64 MiB] without libm: every octave equally likely, uniform inside
 * the octave (a piecewise approximation of the log-uniform density). */
static uint64_t pick_len(uint64_t *s) {
  uint64_t u = rnd(s) % (20u * 1024u);
  unsigned oct = 6u + (unsigned)(u / 1024u), frac = (unsigned)(u % 1024u);
  uint64_t lo = 1ull << oct;
  return lo + (lo * frac) / 1024u;
}

static double usable(void) { return (double)bytes / (double)POOL; }

static void report(const char *phase, double first_fail) {
  flx_pool_stats st;
  CHECK(flx_pool_stats_get(pool, &st) == FLX_OK);
  printf("%-22s usable %.4f", phase, usable());
  if (first_fail >= 0) printf(" (at first ENOMEM %.4f)", first_fail);
  printf("  objects %6lu  reserved/used %.4f  free runs: total %7.2f MiB, largest %6.2f MiB\n",
         (unsigned long)st.object_count, st.used_bytes ? (double)st.reserved_bytes / (double)st.used_bytes : 0,
         (double)st.free_bytes / MiB, (double)st.largest_free_run / MiB);
}

/* Fills until FILL_GIVE_UP requests in a row fail; returns the fraction at the first failure. */
static double fill(uint64_t *s) {
  double first = -1;
  int misses = 0;
  while (misses < FILL_GIVE_UP && nobj < MAX_OBJS) {
    uint64_t len = pick_len(s), off = 0;
    int rc = flx_pool_alloc(pool, len, (uint64_t)nobj, 1, &off);
    if (rc == FLX_ENOMEM) {
      if (first < 0) first = usable();
      misses++;
      continue;
    }
    CHECK(rc == FLX_OK);
    if (rc != FLX_OK) break;
    misses = 0;
    /* Touch both ends: the whole length is inside the mapping. */
    uint8_t *d = flx_obj_data(pool, off, NULL);
    d[0] = 1, d[len - 1] = 2;
    offs[nobj] = off, lens[nobj] = len, nobj++;
    bytes += len;
  }
  return first;
}

int main(void) {
  char path[256];
  snprintf(path, sizeof path, "/dev/shm/flx-test-pool-frag-%d", (int)getpid());
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* Sparse: only pages that are touched take memory, so the test needs little of /dev/shm. */
  CHECK(flx_pool_create(path, POOL, 0, FLX_POOL_SPARSE, &pool) == FLX_OK);
  if (!pool) return 1;
  uint64_t seed = 0x5eed1234abcdull;
  const char *env = getenv("FLX_FRAG_SEED");
  if (env) seed = strtoull(env, NULL, 0);
  printf("fragmentation: pool 1 GiB, 16 MiB segments, lengths log-uniform 64 B .. 64 MiB, seed %#lx\n",
         (unsigned long)seed);

  double f1 = fill(&seed);
  report("first fill", f1);
  double u1 = usable();
  CHECK(flx_pool_check(pool) == FLX_OK);

  /* Free half of the objects, chosen at random. */
  for (int i = nobj - 1; i > 0; i--) {
    int j = (int)(rnd(&seed) % (uint64_t)(i + 1));
    uint64_t o = offs[i], l = lens[i];
    offs[i] = offs[j], lens[i] = lens[j], offs[j] = o, lens[j] = l;
  }
  int keep = nobj / 2;
  for (int i = keep; i < nobj; i++) {
    CHECK(flx_pool_free(pool, offs[i]) == FLX_OK);
    bytes -= lens[i];
  }
  nobj = keep;
  report("after freeing half", -1);
  double u2 = usable();
  CHECK(flx_pool_check(pool) == FLX_OK);

  double f3 = fill(&seed);
  report("second fill", f3);
  (void)f3;
  double u3 = usable();
  CHECK(flx_pool_check(pool) == FLX_OK);

  CHECK(u1 >= 0.95 && f1 >= 0.85);
  CHECK(u2 >= 0.20 && u2 <= 0.80);
  CHECK(u3 >= 0.95);

  for (int i = 0; i < nobj; i++) CHECK(flx_pool_free(pool, offs[i]) == FLX_OK);
  flx_pool_stats st;
  CHECK(flx_pool_stats_get(pool, &st) == FLX_OK);
  CHECK(st.object_count == 0 && st.used_bytes == 0);
  CHECK(flx_pool_check(pool) == FLX_OK);
  CHECK(flx_pool_destroy(pool) == FLX_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("fragmentation: %.2f s\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  if (failures) {
    fprintf(stderr, "test_pool_frag: %d failures\n", failures);
    return 1;
  }
  printf("test_pool_frag: ok\n");
  return 0;
}
