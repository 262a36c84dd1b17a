/* Pool: create/attach/validation, header round trip across mappings and processes, object
 * state machine and refcounts, bad frees, alignment, limits and statistics. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
#define CHECK_RC(expr, want)                                                             \
  do {                                                                                   \
    int rc_ = (expr);                                                                    \
    if (rc_ != (want)) {                                                                 \
      fprintf(stderr, "%s:%d: %s = %d (%s), want %d\n", __FILE__, __LINE__, #expr, rc_, \
              flx_strerror(rc_), (want));                                                \
      failures++;                                                                        \
    }                                                                                    \
  } while (0)

#define MiB (1ull << 20)

static char path_a[256];

static void fill(uint8_t *p, uint64_t n, uint64_t seed) {
  for (uint64_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 131u);
}
static int same(const uint8_t *p, uint64_t n, uint64_t seed) {
  for (uint64_t i = 0; i < n; i++)
    if (p[i] != (uint8_t)(seed + i * 131u)) return 0;
  return 1;
}

static uint32_t state_of(flx_pool *p, uint64_t off, uint32_t *refs) {
  flx_obj_info in;
  if (flx_obj_info_get(p, off, &in) != FLX_OK) return 0;
  if (refs) *refs = in.refcount;
  return in.state;
}

/* Allocate, fill, seal and drop the writer's reference: a READY object with refcount 0. */
static uint64_t put(flx_pool *p, uint64_t len, uint64_t key) {
  uint64_t off = 0;
  CHECK_RC(flx_pool_alloc(p, len, key, 1, &off), FLX_OK);
  if (!off) return 0;
  uint64_t n = 0;
  uint8_t *d = flx_obj_data(p, off, &n);
  CHECK(d != NULL && n == len);
  if (d) fill(d, len, key);
  CHECK_RC(flx_obj_seal(p, off), FLX_OK);
  CHECK_RC(flx_obj_unref(p, off), 0);
  return off;
}

static void test_create_errors(void) {
  flx_pool *p = NULL;
  CHECK_RC(flx_pool_create(path_a, 4 * MiB, 3 * MiB, 0, &p), FLX_EINVAL);   /* not a power of 2 */
  CHECK_RC(flx_pool_create(path_a, 4 * MiB, 512 << 10, 0, &p), FLX_EINVAL); /* below the minimum */
  CHECK_RC(flx_pool_create(path_a, 1 * MiB, 2 * MiB, 0, &p), FLX_EINVAL);   /* < one segment */
  CHECK_RC(flx_pool_create(NULL, 4 * MiB, 0, 0, &p), FLX_EINVAL);
  CHECK_RC(flx_pool_create(path_a, 4 * MiB, 1 * MiB, 0x80, &p), FLX_EINVAL);
  CHECK(p == NULL);
  /* A disk-backed directory is refused unless asked for. */
  char disk[256];
  snprintf(disk, sizeof disk, "/tmp/flx-test-pool-%d", (int)getpid());
  int rc = flx_pool_create(disk, 4 * MiB, 1 * MiB, 0, &p);
  CHECK(rc == FLX_ENOTSUP || rc == FLX_OK); /* OK only where /tmp happens to be tmpfs */
  if (rc == FLX_OK) CHECK_RC(flx_pool_destroy(p), FLX_OK);
  CHECK_RC(flx_pool_create(disk, 4 * MiB, 1 * MiB, FLX_POOL_ANY_FS, &p), FLX_OK);
  CHECK_RC(flx_pool_destroy(p), FLX_OK);
  CHECK(access(disk, F_OK) != 0);

  /* Size rounds down to whole segments. */
  CHECK_RC(flx_pool_create(path_a, 5 * MiB + 12345, 2 * MiB, 0, &p), FLX_OK);
  flx_pool_info in;
  CHECK_RC(flx_pool_get_info(p, &in), FLX_OK);
  CHECK(in.pool_size == 4 * MiB && in.segment_size == 2 * MiB && in.segment_count == 2);
  CHECK(in.is_owner == 1 && in.fs_kind == FLX_POOL_FS_TMPFS && in.data_offset == FLX_POOL_PAGE);
  struct stat st;
  CHECK(stat(path_a, &st) == 0 && (uint64_t)st.st_size == 4 * MiB);
  /* An existing file is not replaced unless asked; the temporary file does not linger. */
  flx_pool *q = NULL;
  CHECK_RC(flx_pool_create(path_a, 4 * MiB, 1 * MiB, 0, &q), FLX_EEXIST);
  CHECK_RC(flx_pool_create(path_a, 8 * MiB, 1 * MiB, FLX_POOL_REPLACE, &q), FLX_OK);
  flx_pool_info qi;
  CHECK_RC(flx_pool_get_info(q, &qi), FLX_OK);
  CHECK(qi.generation != in.generation && qi.pool_size == 8 * MiB);
  /* The first owner's destroy must not unlink the replacement. */
  CHECK_RC(flx_pool_destroy(p), FLX_OK);
  CHECK(access(path_a, F_OK) == 0);
  CHECK_RC(flx_pool_destroy(q), FLX_OK);
  CHECK(access(path_a, F_OK) != 0);
}

static void corrupt_at(const char *path, off_t at, const void *bytes, size_t n) {
  int fd = open(path, O_RDWR);
  CHECK(fd >= 0);
  CHECK(pwrite(fd, bytes, n, at) == (ssize_t)n);
  close(fd);
}

static void test_attach_validation(void) {
  flx_pool *p = NULL, *a = NULL;
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_ENOTFOUND);
  CHECK_RC(flx_pool_create(path_a, 4 * MiB, 1 * MiB, 0, &p), FLX_OK);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_OK);
  CHECK_RC(flx_pool_close(a), FLX_OK);

  flx_pool_hdr good;
  memcpy(&good, flx_pool_base(p), sizeof good);
  /* Bad magic. */
  uint64_t junk = 0x1122334455667788ull;
  corrupt_at(path_a, 0, &junk, sizeof junk);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_ECORRUPT);
  corrupt_at(path_a, 0, &good, sizeof good);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_OK);
  flx_pool_close(a);
  /* Another layout version: FLX_EVERSION before any checksum talk. */
  uint32_t v = FLX_POOL_LAYOUT_VERSION + 1;
  corrupt_at(path_a, 8, &v, sizeof v);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_EVERSION);
  corrupt_at(path_a, 0, &good, sizeof good);
  /* Any other changed byte fails the checksum. */
  uint8_t b = ((uint8_t *)&good)[40] ^ 0x40;
  corrupt_at(path_a, 40, &b, 1);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_ECORRUPT);
  corrupt_at(path_a, 0, &good, sizeof good);
  /* Truncated file: header intact, size disagrees. */
  CHECK(truncate(path_a, 2 * MiB) == 0);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_ECORRUPT);
  CHECK(truncate(path_a, 100) == 0);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_ECORRUPT);
  CHECK(truncate(path_a, 0) == 0);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_ECORRUPT);
  CHECK(a == NULL);
  CHECK_RC(flx_pool_close(p), FLX_OK); /* close without destroy leaves the file */
  CHECK(unlink(path_a) == 0);
}

/* The same object seen through a second mapping in this process and from a forked child. */
static void test_round_trip(void) {
  flx_pool *p = NULL, *a = NULL;
  CHECK_RC(flx_pool_create(path_a, 8 * MiB, 1 * MiB, 0, &p), FLX_OK);
  CHECK_RC(flx_pool_attach(path_a, &a), FLX_OK);
  flx_pool_info pi, ai;
  CHECK_RC(flx_pool_get_info(p, &pi), FLX_OK);
  CHECK_RC(flx_pool_get_info(a, &ai), FLX_OK);
  CHECK(ai.is_owner == 0 && pi.base != ai.base);
  CHECK(ai.pool_size == pi.pool_size && ai.segment_size == pi.segment_size &&
        ai.segment_count == pi.segment_count && ai.generation == pi.generation &&
        ai.created_ns == pi.created_ns && ai.owner_pid == (uint32_t)getpid());

  uint64_t off = put(p, 3000, 0xabcdef);
  flx_obj_info oi;
  CHECK_RC(flx_obj_info_get(a, off, &oi), FLX_OK);
  CHECK(oi.key_hash == 0xabcdef && oi.length == 3000 && oi.version == 1 && oi.state == FLX_OBJ_READY &&
        oi.refcount == 0 && oi.size_class != 0);
  uint64_t n = 0;
  uint8_t *d = flx_obj_data(a, off, &n);
  CHECK(d != NULL && n == 3000 && same(d, n, 0xabcdef));
  CHECK(d != flx_obj_data(p, off, NULL));
  /* Externals do not allocate, free or see the allocator. */
  uint64_t o2;
  flx_pool_stats st;
  CHECK_RC(flx_pool_alloc(a, 10, 1, 1, &o2), FLX_ENOTSUP);
  CHECK_RC(flx_pool_free(a, off), FLX_ENOTSUP);
  CHECK_RC(flx_pool_stats_get(a, &st), FLX_ENOTSUP);
  CHECK_RC(flx_pool_destroy(a), FLX_ENOTSUP);
  CHECK_RC(flx_pool_close(a), FLX_OK);

  /* A second object the child will write (delegated writer), and the child's reply slot. */
  uint64_t reply = 0;
  CHECK_RC(flx_pool_alloc(p, 100000, 0x5151, 1, &reply), FLX_OK);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    flx_pool *c = NULL;
    int bad = 0;
    if (flx_pool_attach(path_a, &c) != FLX_OK) _exit(10);
    uint64_t cn = 0;
    uint8_t *cd = flx_obj_data(c, off, &cn);
    if (flx_obj_ref(c, off) != FLX_OK) bad |= 1;
    if (!cd || cn != 3000 || !same(cd, cn, 0xabcdef)) bad |= 2;
    if (flx_obj_remove(c, off) != 0) bad |= 4;     /* our reference keeps it */
    if (flx_obj_ref(c, off) != FLX_ENOTFOUND) bad |= 8;
    if (flx_obj_unref(c, off) != 1) bad |= 16;     /* now REMOVED and unreferenced: tell the owner */
    uint8_t *rd = flx_obj_data(c, reply, &cn);
    if (!rd || cn != 100000) bad |= 32;
    else fill(rd, cn, 0x77);
    if (flx_obj_seal(c, reply) != FLX_OK) bad |= 64;
    flx_pool_close(c);
    _exit(bad);
  }
  CHECK(pid > 0);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status)) fprintf(stderr, "child status %#x\n", status);
  uint32_t refs = 99;
  CHECK(state_of(p, off, &refs) == FLX_OBJ_REMOVED && refs == 0);
  CHECK_RC(flx_pool_free(p, off), FLX_OK); /* the owner frees what the external released */
  CHECK(state_of(p, off, NULL) == FLX_OBJ_FREE);
  CHECK(state_of(p, reply, &refs) == FLX_OBJ_READY && refs == 1);
  d = flx_obj_data(p, reply, &n);
  CHECK(d && n == 100000 && same(d, n, 0x77));
  CHECK_RC(flx_obj_remove(p, reply), 0);
  CHECK_RC(flx_obj_unref(p, reply), 1);
  CHECK_RC(flx_pool_stats_get(p, &st), FLX_OK);
  CHECK(st.object_count == 0 && st.used_bytes == 0);
  CHECK_RC(flx_pool_check(p), FLX_OK);
  CHECK_RC(flx_pool_destroy(p), FLX_OK);
}

static void test_refcounts(void) {
  flx_pool *p = NULL;
  CHECK_RC(flx_pool_create(path_a, 8 * MiB, 1 * MiB, 0, &p), FLX_OK);
  uint64_t off = 0;
  CHECK_RC(flx_pool_alloc(p, 1000, 42, 7, &off), FLX_OK);
  uint32_t refs = 0;
  CHECK(state_of(p, off, &refs) == FLX_OBJ_WRITING && refs == 1);
  CHECK_RC(flx_obj_ref(p, off), FLX_EBUSY); /* nobody reads a half-written object */
  fill(flx_obj_data(p, off, NULL), 1000, 42);
  CHECK_RC(flx_obj_seal(p, off), FLX_OK);
  CHECK_RC(flx_obj_seal(p, off), FLX_EINVAL);
  CHECK_RC(flx_obj_ref(p, off), FLX_OK); /* a reader */
  CHECK_RC(flx_obj_unref(p, off), 0);    /* the writer is done */
  CHECK(state_of(p, off, &refs) == FLX_OBJ_READY && refs == 1);
  CHECK_RC(flx_obj_remove(p, off), 0); /* the reader still holds it */
  CHECK_RC(flx_obj_remove(p, off), FLX_ENOTFOUND);
  CHECK_RC(flx_obj_ref(p, off), FLX_ENOTFOUND);
  CHECK_RC(flx_pool_free(p, off), FLX_EBUSY);
  CHECK(state_of(p, off, &refs) == FLX_OBJ_REMOVED && refs == 1);

  /* Fill far past one span of this class: the removed-but-referenced block is never reused. */
  enum { N = 3000 };
  static uint64_t offs[N];
  for (int i = 0; i < N; i++) {
    CHECK_RC(flx_pool_alloc(p, 1000, (uint64_t)i, 1, &offs[i]), FLX_OK);
    CHECK(offs[i] != off);
    memset(flx_obj_data(p, offs[i], NULL), 0xee, 1000);
  }
  CHECK(same(flx_obj_data(p, off, NULL), 1000, 42));
  for (int i = 0; i < N; i++) CHECK_RC(flx_pool_free(p, offs[i]), FLX_OK); /* writer abandons */
  CHECK(same(flx_obj_data(p, off, NULL), 1000, 42));

  CHECK_RC(flx_obj_unref(p, off), 1); /* last reference: freed now */
  CHECK(state_of(p, off, NULL) == FLX_OBJ_FREE);
  CHECK_RC(flx_obj_unref(p, off), FLX_EINVAL);
  CHECK_RC(flx_obj_ref(p, off), FLX_ENOTFOUND);
  CHECK_RC(flx_obj_remove(p, off), FLX_EINVAL);
  CHECK_RC(flx_pool_free(p, off), FLX_EINVAL); /* double free */

  /* Remove of an unreferenced object frees at once; an underflow is refused. */
  uint64_t o2 = put(p, 50, 9);
  CHECK_RC(flx_obj_unref(p, o2), FLX_EINVAL);
  CHECK(state_of(p, o2, &refs) == FLX_OBJ_READY && refs == 0);
  CHECK_RC(flx_pool_free(p, o2), FLX_EBUSY); /* READY: the directory still names it */
  CHECK_RC(flx_obj_remove(p, o2), 1);
  CHECK(state_of(p, o2, NULL) == FLX_OBJ_FREE);
  /* A writer may remove its own unsealed object; its unref then frees it. */
  uint64_t o3 = 0;
  CHECK_RC(flx_pool_alloc(p, 5 * MiB / 2, 3, 1, &o3), FLX_OK);
  CHECK_RC(flx_obj_remove(p, o3), 0);
  CHECK_RC(flx_obj_seal(p, o3), FLX_ENOTFOUND);
  CHECK_RC(flx_obj_unref(p, o3), 1);
  flx_pool_stats st;
  CHECK_RC(flx_pool_stats_get(p, &st), FLX_OK);
  CHECK(st.object_count == 0 && st.used_bytes == 0 && st.reserved_bytes == 0);
  CHECK_RC(flx_pool_check(p), FLX_OK);
  CHECK_RC(flx_pool_destroy(p), FLX_OK);
}

static void test_bad_offsets(void) {
  flx_pool *p = NULL;
  CHECK_RC(flx_pool_create(path_a, 8 * MiB, 1 * MiB, 0, &p), FLX_OK);
  flx_pool_info in;
  flx_pool_get_info(p, &in);
  uint64_t small = put(p, 200, 1), big = put(p, 300000, 2);
  uint64_t bad[] = {0, 64, FLX_POOL_PAGE, small + 1, small + 8, in.pool_size, in.pool_size + 64, UINT64_MAX - 63};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = flx_pool_free(p, bad[i]);
    CHECK(rc == FLX_EINVAL || rc == FLX_ECORRUPT);
    rc = flx_obj_ref(p, bad[i]);
    CHECK(rc == FLX_EINVAL || rc == FLX_ECORRUPT);
    CHECK(flx_obj_data(p, bad[i], NULL) == NULL);
  }
  /* Offsets inside an object's data: no magic there. */
  CHECK_RC(flx_pool_free(p, big + 4096), FLX_ECORRUPT);
  CHECK_RC(flx_obj_ref(p, small + 128), FLX_ECORRUPT);
  CHECK(flx_obj_header(p, big + 64) == NULL);

  /* A forged header (a copy of a real, removed one) inside another object's data: the
   * allocator's own bookkeeping refuses it and nothing is corrupted. */
  uint64_t victim = put(p, 100, 3);
  CHECK_RC(flx_obj_ref(p, victim), FLX_OK);
  CHECK_RC(flx_obj_remove(p, victim), 0);
  uint8_t *bd = flx_obj_data(p, big, NULL);
  memcpy(bd + 1024, flx_obj_header(p, victim), FLX_OBJ_HEADER_SIZE);
  flx_obj_hdr *forged = (flx_obj_hdr *)(bd + 1024);
  forged->refcount = 0;
  CHECK_RC(flx_pool_free(p, big + 1024 + FLX_OBJ_HEADER_SIZE), FLX_EINVAL);
  /* A forged extent header on the next page boundary (where a real block could start). */
  memcpy(bd + 4096 - FLX_OBJ_HEADER_SIZE, flx_obj_header(p, big), FLX_OBJ_HEADER_SIZE);
  forged = (flx_obj_hdr *)(bd + 4096 - FLX_OBJ_HEADER_SIZE);
  forged->state = FLX_OBJ_REMOVED;
  forged->refcount = 0;
  CHECK_RC(flx_pool_free(p, big + 4096), FLX_EINVAL);
  /* A header whose allocator fields are impossible is reported corrupt. */
  forged->block_len = 12345;
  forged->state = FLX_OBJ_REMOVED;
  CHECK_RC(flx_pool_free(p, big + 4096), FLX_ECORRUPT);
  /* A freed slot whose header was scribbled back to "REMOVED, 0" (a buggy external): the
   * slot bitmap still knows it is free, so the double free is refused. */
  uint64_t gone = put(p, 100, 4);
  CHECK_RC(flx_obj_remove(p, gone), 1);
  flx_obj_header(p, gone)->state = FLX_OBJ_REMOVED;
  CHECK_RC(flx_pool_free(p, gone), FLX_EINVAL);
  uint64_t gone_big = put(p, 500000, 5);
  CHECK_RC(flx_obj_remove(p, gone_big), 1);
  flx_obj_header(p, gone_big)->state = FLX_OBJ_REMOVED;
  CHECK_RC(flx_pool_free(p, gone_big), FLX_EINVAL);
  CHECK_RC(flx_pool_check(p), FLX_OK);
  CHECK_RC(flx_obj_unref(p, victim), 1);
  CHECK_RC(flx_obj_remove(p, small), 1);
  CHECK_RC(flx_obj_remove(p, big), 1);
  flx_pool_stats st;
  CHECK_RC(flx_pool_stats_get(p, &st), FLX_OK);
  CHECK(st.object_count == 0);
  CHECK_RC(flx_pool_check(p), FLX_OK);
  CHECK_RC(flx_pool_destroy(p), FLX_OK);
}

static void test_layout_and_limits(void) {
  /* Class table: multiples of 64, increasing, at most 25 % apart (after the first two). */
  for (int i = 0; i < FLX_POOL_NCLASSES; i++) {
    uint64_t b = flx_pool_class_block(i);
    CHECK(b % 64 == 0);
    if (i > 0) CHECK(b > flx_pool_class_block(i - 1));
    if (i > 2) CHECK(b * 4 <= flx_pool_class_block(i - 1) * 5);
  }
  CHECK(flx_pool_class_block(FLX_POOL_NCLASSES - 1) == FLX_POOL_SMALL_MAX_BLOCK);
  CHECK(flx_pool_class_block(-1) == 0 && flx_pool_class_block(FLX_POOL_NCLASSES) == 0);

  flx_pool *p = NULL;
  const uint64_t seg = 2 * MiB;
  CHECK_RC(flx_pool_create(path_a, 64 * MiB, seg, 0, &p), FLX_OK);
  uint64_t lens[] = {1, 63, 64, 65, 127, 1000, 4032, 4033, 65536, 131008, 131009, 200000, MiB - 1, MiB,
                     MiB + 1, 3 * MiB / 2, 2 * MiB - 4096, 2 * MiB, 5 * MiB + 17};
  uint64_t offs[sizeof lens / sizeof lens[0]];
  uint64_t used = 0;
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    uint64_t len = lens[i], off = 0;
    CHECK_RC(flx_pool_alloc(p, len, i, 1, &off), FLX_OK);
    offs[i] = off;
    CHECK(off % FLX_OBJ_ALIGN == 0);
    if (len >= FLX_POOL_BIG_OBJECT) CHECK(off % 4096 == 0);
    flx_obj_info oi;
    CHECK_RC(flx_obj_info_get(p, off, &oi), FLX_OK);
    /* Small objects get the smallest class that holds them. */
    uint64_t need = FLX_OBJ_HEADER_SIZE + ((len + 63) & ~63ull);
    if (oi.size_class) {
      CHECK(oi.block_len >= need);
      CHECK(oi.size_class == 1 || flx_pool_class_block((int)oi.size_class - 2) < need);
    } else {
      CHECK(need > FLX_POOL_SMALL_MAX_BLOCK || len >= FLX_POOL_BIG_OBJECT);
    }
    /* A block that fits in a segment never crosses a segment boundary. */
    uint64_t hdr = off - FLX_OBJ_HEADER_SIZE;
    if (oi.block_len <= seg) CHECK(hdr / seg == (off + len - 1) / seg);
    memset(flx_obj_data(p, off, NULL), (int)i, len); /* the whole length is writable */
    used += FLX_OBJ_HEADER_SIZE + len;
  }
  flx_pool_stats st;
  CHECK_RC(flx_pool_stats_get(p, &st), FLX_OK);
  CHECK(st.object_count == sizeof lens / sizeof lens[0] && st.used_bytes == used);
  CHECK(st.reserved_bytes >= used && st.total_bytes == 64 * MiB && st.capacity_bytes == 64 * MiB - 4096);
  CHECK(st.free_bytes + st.reserved_bytes <= st.capacity_bytes && st.largest_free_run <= st.free_bytes);
  CHECK(st.nclasses == FLX_POOL_NCLASSES && st.classes[0].objects == 3 && st.classes[1].objects == 2 && st.classes[0].block_size == 128);
  CHECK_RC(flx_pool_check(p), FLX_OK);
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    uint8_t *d = flx_obj_data(p, offs[i], NULL);
    CHECK(d[0] == (uint8_t)i && d[lens[i] - 1] == (uint8_t)i);
    CHECK_RC(flx_pool_free(p, offs[i]), FLX_OK);
  }
  CHECK_RC(flx_pool_stats_get(p, &st), FLX_OK);
  CHECK(st.object_count == 0 && st.used_bytes == 0 && st.reserved_bytes == 0);
  CHECK_RC(flx_pool_check(p), FLX_OK);
  CHECK_RC(flx_pool_alloc(p, 0, 1, 1, &offs[0]), FLX_EINVAL);
  CHECK_RC(flx_pool_destroy(p), FLX_OK);

  /* Limits: the largest object is the pool minus the header page and the object's own page. */
  CHECK_RC(flx_pool_create(path_a, 4 * MiB, 1 * MiB, 0, &p), FLX_OK);
  uint64_t max = 4 * MiB - 2 * 4096, off = 0, o2 = 0;
  CHECK_RC(flx_pool_alloc(p, max + 1, 1, 1, &off), FLX_ETOOBIG);
  CHECK_RC(flx_pool_alloc(p, UINT64_MAX, 1, 1, &off), FLX_ETOOBIG);
  CHECK_RC(flx_pool_alloc(p, max, 1, 1, &off), FLX_OK);
  CHECK_RC(flx_pool_alloc(p, 64, 1, 1, &o2), FLX_ENOMEM); /* full now, but it could fit later */
  CHECK_RC(flx_pool_alloc(p, MiB, 1, 1, &o2), FLX_ENOMEM);
  memset(flx_obj_data(p, off, NULL), 1, max);
  CHECK_RC(flx_pool_free(p, off), FLX_OK);
  CHECK_RC(flx_pool_alloc(p, 64, 1, 1, &o2), FLX_OK);
  CHECK_RC(flx_pool_alloc(p, max, 1, 1, &off), FLX_ENOMEM);
  CHECK_RC(flx_pool_free(p, o2), FLX_OK);
  /* The freed small span is cached for its class but given back when a large object needs it. */
  CHECK_RC(flx_pool_alloc(p, max, 1, 1, &off), FLX_OK);
  CHECK_RC(flx_pool_free(p, off), FLX_OK);
  CHECK_RC(flx_pool_check(p), FLX_OK);
  CHECK_RC(flx_pool_destroy(p), FLX_OK);
}

int main(void) {
  snprintf(path_a, sizeof path_a, "/dev/shm/flx-test-pool-%d-a", (int)getpid());
  test_create_errors();
  test_attach_validation();
  test_round_trip();
  test_refcounts();
  test_bad_offsets();
  test_layout_and_limits();
  unlink(path_a);
  if (failures) {
    fprintf(stderr, "test_pool: %d failures\n", failures);
    return 1;
  }
  printf("test_pool: ok\n");
  return 0;
}
