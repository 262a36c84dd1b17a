/* The pool file (create, attach, validate, close, destroy) and the object state machine in
 * shared memory. The allocator itself is heap.c (owner-private bookkeeping). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "pool_internal.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the pool layout is little-endian (state in the low half of state_ref)"
#endif
_Static_assert(sizeof(flx_obj_hdr) == FLX_OBJ_HEADER_SIZE, "object header is 64 bytes");
_Static_assert(offsetof(flx_obj_hdr, state_ref) % 8 == 0, "state_ref is naturally aligned");
_Static_assert(offsetof(flx_obj_hdr, state) == offsetof(flx_obj_hdr, state_ref), "state is the low half");
_Static_assert(sizeof(flx_pool_hdr) <= FLX_POOL_PAGE, "pool header fits its page");
_Static_assert(sizeof(flx_pool_hdr) % 8 == 0, "pool header has no tail padding");

#define WORD(state, refs) ((uint64_t)(state) | ((uint64_t)(refs) << 32))
#define W_STATE(w) ((uint32_t)(w))
#define W_REFS(w) ((uint32_t)((w) >> 32))
#define MAX_REFS (UINT32_MAX - 1u)

struct flx_pool {
  uint8_t *base;
  uint64_t size;
  int fd;
  char *path;
  struct flx_heap *heap; /* owner only */
  flx_pool_hdr hdr;      /* validated private copy: externals cannot change what we trust */
};

/* ---- helpers -------------------------------------------------------------------------------- */

static uint64_t fnv1a(const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

static uint64_t hdr_checksum(const flx_pool_hdr *h) {
  return fnv1a(h, offsetof(flx_pool_hdr, checksum));
}

/* Returns rc with errno as it was when the failure happened, after cleanup calls. */
#define FAIL_SYS(label) \
  do {                  \
    saved = errno;      \
    rc = FLX_ESYS;      \
    goto label;         \
  } while (0)

static unsigned tmp_counter;

/* ---- create / attach / close ---------------------------------------------------------------- */

int flx_pool_create(const char *path, uint64_t size, uint64_t segment_size, uint32_t flags,
                    flx_pool **out) {
  if (!path || !*path || !out || (flags & ~(FLX_POOL_REPLACE | FLX_POOL_SPARSE | FLX_POOL_ANY_FS)))
    return FLX_EINVAL;
  *out = NULL;
  if (segment_size == 0) segment_size = FLX_POOL_DEFAULT_SEGMENT;
  if (segment_size & (segment_size - 1) || segment_size < FLX_POOL_MIN_SEGMENT ||
      segment_size > FLX_POOL_MAX_SEGMENT)
    return FLX_EINVAL;

  int rc = FLX_OK, saved = 0, fd = -1;
  uint64_t pool_size = 0;
  char *tmp = NULL, *dir = NULL;
  void *base = MAP_FAILED;
  flx_pool *p = NULL;

  /* What filesystem will hold it: tmpfs, or hugetlbfs with its page size. */
  dir = strdup(path);
  if (!dir) FAIL_SYS(fail);
  struct statfs sfs;
  if (statfs(dirname(dir), &sfs) != 0) FAIL_SYS(fail);
  uint32_t fs_kind = FLX_POOL_FS_OTHER;
  uint64_t huge = 0;
  if ((unsigned long)sfs.f_type == (unsigned long)TMPFS_MAGIC) {
    fs_kind = FLX_POOL_FS_TMPFS;
  } else if ((unsigned long)sfs.f_type == (unsigned long)HUGETLBFS_MAGIC) {
    fs_kind = FLX_POOL_FS_HUGETLBFS;
    huge = (uint64_t)sfs.f_bsize;
    if (huge == 0 || (huge & (huge - 1)) || huge > FLX_POOL_MAX_SEGMENT) {
      rc = FLX_ENOTSUP;
      goto fail;
    }
    if (segment_size < huge) segment_size = huge; /* both powers of two: a multiple */
  } else if (!(flags & FLX_POOL_ANY_FS)) {
    rc = FLX_ENOTSUP; /* a disk-backed pool would write back; use tmpfs or hugetlbfs */
    goto fail;
  }

  uint64_t nseg = size / segment_size;
  if (nseg == 0) {
    rc = FLX_EINVAL;
    goto fail;
  }
  if (nseg > (uint64_t)FLX_POOL_MAX_PAGES / (segment_size / FLX_POOL_PAGE)) {
    rc = FLX_ETOOBIG;
    goto fail;
  }
  pool_size = nseg * segment_size;

  /* Build the file under a temporary name and rename it into place when complete. */
  size_t tl = strlen(path) + 64;
  tmp = malloc(tl);
  if (!tmp) FAIL_SYS(fail);
  snprintf(tmp, tl, "%s.tmp.%ld.%u", path, (long)getpid(),
           __atomic_fetch_add(&tmp_counter, 1, __ATOMIC_RELAXED));
  fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
  if (fd < 0) FAIL_SYS(fail);
  if (ftruncate(fd, (off_t)pool_size) != 0) FAIL_SYS(fail_unlink);
  if (!(flags & FLX_POOL_SPARSE)) {
    int e = posix_fallocate(fd, 0, (off_t)pool_size);
    if (e != 0) {
      errno = e;
      FAIL_SYS(fail_unlink);
    }
  }
  /* The owner maps every page of a preallocated pool now: the first write of a value
   * (often straight from a socket) then takes no page faults. Clients that attach map
   * up to FLX_POOL_PREFAULT_MAX of it up front (see prefault). */
  int populate = (flags & FLX_POOL_SPARSE) ? 0 : MAP_POPULATE;
  base = mmap(NULL, pool_size, PROT_READ | PROT_WRITE, MAP_SHARED | populate, fd, 0);
  if (base == MAP_FAILED) FAIL_SYS(fail_unlink);

  p = calloc(1, sizeof *p);
  if (!p) FAIL_SYS(fail_unlink);
  p->path = strdup(path);
  if (!p->path) FAIL_SYS(fail_unlink);
  rc = flx_heap_init(&p->heap, pool_size, segment_size, 1);
  if (rc == FLX_ESYS) FAIL_SYS(fail_unlink);
  if (rc != FLX_OK) goto fail_unlink;

  flx_pool_hdr *h = &p->hdr;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  h->magic = FLX_POOL_MAGIC;
  h->layout_version = FLX_POOL_LAYOUT_VERSION;
  h->header_size = sizeof *h;
  h->pool_size = pool_size;
  h->segment_size = segment_size;
  h->segment_count = nseg;
  h->page_size = FLX_POOL_PAGE;
  h->obj_header_size = FLX_OBJ_HEADER_SIZE;
  h->data_offset = FLX_POOL_PAGE;
  h->created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  if (getrandom(&h->generation, sizeof h->generation, GRND_NONBLOCK) != (ssize_t)sizeof h->generation)
    h->generation = h->created_ns ^ ((uint64_t)getpid() << 40);
  h->owner_pid = (uint32_t)getpid();
  h->fs_kind = fs_kind;
  h->huge_page_size = huge;
  h->checksum = hdr_checksum(h);
  memcpy(base, h, sizeof *h);

  if (flags & FLX_POOL_REPLACE) {
    if (rename(tmp, path) != 0) FAIL_SYS(fail_unlink);
  } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) != 0) {
    /* A filesystem without RENAME_NOREPLACE: link(2) also refuses an existing target. */
    if ((errno == EINVAL || errno == ENOSYS) && link(tmp, path) == 0) {
      unlink(tmp);
    } else if (errno == EEXIST) {
      rc = FLX_EEXIST;
      goto fail_unlink;
    } else {
      FAIL_SYS(fail_unlink);
    }
  }
  p->base = base;
  p->size = pool_size;
  p->fd = fd;
  free(tmp);
  free(dir);
  *out = p;
  return FLX_OK;

fail_unlink:
  unlink(tmp);
fail:
  if (p) {
    flx_heap_fini(p->heap);
    free(p->path);
    free(p);
  }
  if (base != MAP_FAILED) munmap(base, pool_size);
  if (fd >= 0) close(fd);
  free(tmp);
  free(dir);
  if (rc == FLX_ESYS) errno = saved;
  return rc;
}

/* Validates a pool header against the file it came from. */
static int hdr_validate(const flx_pool_hdr *h, uint64_t file_size) {
  if (h->magic != FLX_POOL_MAGIC) return FLX_ECORRUPT;
  if (h->layout_version != FLX_POOL_LAYOUT_VERSION) return FLX_EVERSION;
  if (h->header_size != sizeof *h || h->checksum != hdr_checksum(h)) return FLX_ECORRUPT;
  uint64_t s = h->segment_size;
  if (s < FLX_POOL_MIN_SEGMENT || s > FLX_POOL_MAX_SEGMENT || (s & (s - 1)) || h->segment_count == 0 ||
      h->segment_count > (uint64_t)FLX_POOL_MAX_PAGES / (s / FLX_POOL_PAGE) ||
      h->pool_size != s * h->segment_count || h->page_size != FLX_POOL_PAGE ||
      h->obj_header_size != FLX_OBJ_HEADER_SIZE || h->data_offset != FLX_POOL_PAGE)
    return FLX_ECORRUPT;
  if (h->pool_size != file_size) return FLX_ECORRUPT; /* truncated or grown behind our back */
  return FLX_OK;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* Clients that attach map a preallocated pool's pages up front, as far as
 * FLX_POOL_PREFAULT_MAX: a page touched for the first time costs a fault in
 * every client (a 16 MiB value read once: ~4096 faults, about 1 ms), and
 * many clients touching a busy pool fault all the time. Page tables are
 * about 2 MiB per GiB mapped. A sparse pool (blocks not allocated) is left
 * alone: populating it would allocate its memory. Older kernels refuse
 * the advice (EINVAL) and the pool simply faults on demand. */
static void prefault(void *base, uint64_t len, const struct stat *st) {
  if ((uint64_t)st->st_blocks * 512u < len) return;
  uint64_t n = len < FLX_POOL_PREFAULT_MAX ? len : FLX_POOL_PREFAULT_MAX;
  (void)madvise(base, n, MADV_POPULATE_WRITE);
}

int flx_pool_attach(const char *path, flx_pool **out) {
  if (!path || !out) return FLX_EINVAL;
  *out = NULL;
  int rc = FLX_OK, saved = 0, fd = -1;
  void *base = MAP_FAILED;
  uint64_t len = 0;
  flx_pool *p = NULL;
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return FLX_ENOTFOUND;
    return FLX_ESYS;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) FAIL_SYS(fail);
  if (st.st_size < (off_t)FLX_POOL_PAGE) {
    rc = FLX_ECORRUPT;
    goto fail;
  }
  /* Map the whole file (hugetlbfs cannot be read(2)), then trust only a validated copy. */
  len = (uint64_t)st.st_size;
  base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) FAIL_SYS(fail);
  p = calloc(1, sizeof *p);
  if (!p) FAIL_SYS(fail);
  memcpy(&p->hdr, base, sizeof p->hdr);
  rc = hdr_validate(&p->hdr, len);
  if (rc != FLX_OK) goto fail;
  p->path = strdup(path);
  if (!p->path) FAIL_SYS(fail);
  p->base = base;
  p->size = len;
  p->fd = fd;
  prefault(base, len, &st);
  *out = p;
  return FLX_OK;
fail:
  if (p) free(p->path), free(p);
  if (base != MAP_FAILED) munmap(base, len);
  close(fd);
  if (rc == FLX_ESYS) errno = saved;
  return rc;
}

int flx_pool_close(flx_pool *pool) {
  if (!pool) return FLX_OK;
  int rc = FLX_OK, saved = 0;
  if (munmap(pool->base, pool->size) != 0) saved = errno, rc = FLX_ESYS;
  if (close(pool->fd) != 0 && rc == FLX_OK) saved = errno, rc = FLX_ESYS;
  flx_heap_fini(pool->heap);
  free(pool->path);
  free(pool);
  if (rc == FLX_ESYS) errno = saved;
  return rc;
}

int flx_pool_destroy(flx_pool *pool) {
  if (!pool) return FLX_EINVAL;
  if (!pool->heap) return FLX_ENOTSUP;
  int rc = FLX_OK, saved = 0;
  struct stat mine, there;
  /* Unlink only the file we created: a replacement owner may have renamed its own over it. */
  if (fstat(pool->fd, &mine) == 0 && stat(pool->path, &there) == 0 && mine.st_dev == there.st_dev &&
      mine.st_ino == there.st_ino && unlink(pool->path) != 0)
    saved = errno, rc = FLX_ESYS;
  int crc = flx_pool_close(pool);
  if (rc == FLX_ESYS) {
    errno = saved;
    return rc;
  }
  return crc;
}

int flx_pool_get_info(const flx_pool *pool, flx_pool_info *out) {
  if (!pool || !out) return FLX_EINVAL;
  const flx_pool_hdr *h = &pool->hdr;
  out->base = pool->base;
  out->pool_size = h->pool_size;
  out->segment_size = h->segment_size;
  out->segment_count = h->segment_count;
  out->data_offset = h->data_offset;
  out->created_ns = h->created_ns;
  out->generation = h->generation;
  out->huge_page_size = h->huge_page_size;
  out->owner_pid = h->owner_pid;
  out->fs_kind = h->fs_kind;
  out->is_owner = pool->heap != NULL;
  return FLX_OK;
}

void *flx_pool_base(const flx_pool *pool) { return pool ? pool->base : NULL; }

/* ---- objects -------------------------------------------------------------------------------- */

/* The header for data offset off, with bounds, alignment and magic checked. */
static int hdr_of(const flx_pool *p, uint64_t off, flx_obj_hdr **out) {
  if (!p || off % FLX_OBJ_ALIGN != 0 || off < p->hdr.data_offset + FLX_OBJ_HEADER_SIZE || off >= p->size)
    return FLX_EINVAL;
  flx_obj_hdr *h = (flx_obj_hdr *)(p->base + off - FLX_OBJ_HEADER_SIZE);
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != FLX_OBJ_MAGIC) return FLX_ECORRUPT;
  *out = h;
  return FLX_OK;
}

flx_obj_hdr *flx_obj_header(const flx_pool *pool, uint64_t off) {
  flx_obj_hdr *h;
  return hdr_of(pool, off, &h) == FLX_OK ? h : NULL;
}

void *flx_obj_data(const flx_pool *pool, uint64_t off, uint64_t *len) {
  flx_obj_hdr *h;
  if (hdr_of(pool, off, &h) != FLX_OK) return NULL;
  uint64_t n = h->length;
  if (n > pool->size - off) return NULL;
  if (len) *len = n;
  return pool->base + off;
}

int flx_obj_info_get(const flx_pool *pool, uint64_t off, flx_obj_info *out) {
  flx_obj_hdr *h;
  if (!out) return FLX_EINVAL;
  int rc = hdr_of(pool, off, &h);
  if (rc != FLX_OK) return rc;
  uint64_t w = __atomic_load_n(&h->state_ref, __ATOMIC_ACQUIRE);
  out->key_hash = h->key_hash;
  out->length = h->length;
  out->version = h->version;
  out->alloc_seq = h->alloc_seq;
  out->block_len = h->block_len;
  out->state = W_STATE(w);
  out->refcount = W_REFS(w);
  out->size_class = h->size_class;
  return FLX_OK;
}

int flx_pool_alloc(flx_pool *pool, uint64_t len, uint64_t key_hash, uint64_t version, uint64_t *off) {
  if (!pool || !off) return FLX_EINVAL;
  if (!pool->heap) return FLX_ENOTSUP;
  flx_block b;
  int rc = flx_heap_alloc(pool->heap, len, &b);
  if (rc != FLX_OK) return rc;
  flx_obj_hdr *h = (flx_obj_hdr *)(pool->base + b.hdr_off);
  h->size_class = b.size_class;
  h->flags = 0;
  h->block_pad = b.pad;
  h->reserved = 0;
  h->key_hash = key_hash;
  h->length = len;
  h->version = version;
  h->block_len = b.block_len;
  h->alloc_seq = b.seq;
  __atomic_store_n(&h->magic, FLX_OBJ_MAGIC, __ATOMIC_RELAXED);
  __atomic_store_n(&h->state_ref, WORD(FLX_OBJ_WRITING, 1), __ATOMIC_RELEASE);
  *off = b.hdr_off + FLX_OBJ_HEADER_SIZE;
  return FLX_OK;
}

/* Returns the block of an object that this thread just moved to FREE. */
static int release_block(flx_pool *p, flx_obj_hdr *h) {
  uint64_t hdr_off = (uint64_t)((uint8_t *)h - p->base);
  return flx_heap_free(p->heap, hdr_off, h->size_class, h->block_pad, h->block_len, h->length);
}

static inline int cas(flx_obj_hdr *h, uint64_t *cur, uint64_t next) {
  return __atomic_compare_exchange_n(&h->state_ref, cur, next, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

int flx_obj_seal(flx_pool *pool, uint64_t off) {
  flx_obj_hdr *h;
  int rc = hdr_of(pool, off, &h);
  if (rc != FLX_OK) return rc;
  uint64_t w = __atomic_load_n(&h->state_ref, __ATOMIC_ACQUIRE);
  for (;;) {
    if (W_STATE(w) == FLX_OBJ_REMOVED) return FLX_ENOTFOUND;
    if (W_STATE(w) != FLX_OBJ_WRITING) return FLX_EINVAL;
    if (cas(h, &w, WORD(FLX_OBJ_READY, W_REFS(w)))) return FLX_OK;
  }
}

int flx_obj_ref(flx_pool *pool, uint64_t off) {
  flx_obj_hdr *h;
  int rc = hdr_of(pool, off, &h);
  if (rc != FLX_OK) return rc;
  uint64_t w = __atomic_load_n(&h->state_ref, __ATOMIC_ACQUIRE);
  for (;;) {
    uint32_t s = W_STATE(w), n = W_REFS(w);
    if (s == FLX_OBJ_WRITING) return FLX_EBUSY;
    if (s == FLX_OBJ_REMOVED || s == FLX_OBJ_FREE) return FLX_ENOTFOUND;
    if (s != FLX_OBJ_READY) return FLX_ECORRUPT;
    if (n >= MAX_REFS) return FLX_EBUSY;
    if (cas(h, &w, WORD(s, n + 1))) return FLX_OK;
  }
}

int flx_obj_unref(flx_pool *pool, uint64_t off) {
  flx_obj_hdr *h;
  int rc = hdr_of(pool, off, &h);
  if (rc != FLX_OK) return rc;
  uint64_t w = __atomic_load_n(&h->state_ref, __ATOMIC_ACQUIRE), next;
  for (;;) {
    uint32_t s = W_STATE(w), n = W_REFS(w);
    if (s == FLX_OBJ_FREE || n == 0) return FLX_EINVAL;
    if (s < FLX_OBJ_WRITING || s > FLX_OBJ_FREE) return FLX_ECORRUPT;
    /* The owner frees on the spot; an external leaves (REMOVED, 0) for the owner. */
    next = (s == FLX_OBJ_REMOVED && n == 1 && pool->heap) ? WORD(FLX_OBJ_FREE, 0) : WORD(s, n - 1);
    if (cas(h, &w, next)) break;
  }
  if (W_STATE(next) == FLX_OBJ_FREE) {
    rc = release_block(pool, h);
    return rc == FLX_OK ? 1 : rc;
  }
  return W_STATE(next) == FLX_OBJ_REMOVED && W_REFS(next) == 0 ? 1 : 0;
}

int flx_obj_remove(flx_pool *pool, uint64_t off) {
  flx_obj_hdr *h;
  int rc = hdr_of(pool, off, &h);
  if (rc != FLX_OK) return rc;
  uint64_t w = __atomic_load_n(&h->state_ref, __ATOMIC_ACQUIRE), next;
  for (;;) {
    uint32_t s = W_STATE(w), n = W_REFS(w);
    if (s == FLX_OBJ_REMOVED) return FLX_ENOTFOUND;
    if (s == FLX_OBJ_FREE) return FLX_EINVAL;
    if (s != FLX_OBJ_WRITING && s != FLX_OBJ_READY) return FLX_ECORRUPT;
    next = (n == 0 && pool->heap) ? WORD(FLX_OBJ_FREE, 0) : WORD(FLX_OBJ_REMOVED, n);
    if (cas(h, &w, next)) break;
  }
  if (W_STATE(next) == FLX_OBJ_FREE) {
    rc = release_block(pool, h);
    return rc == FLX_OK ? 1 : rc;
  }
  return W_REFS(next) == 0 ? 1 : 0;
}

int flx_pool_free(flx_pool *pool, uint64_t off) {
  flx_obj_hdr *h;
  if (pool && !pool->heap) return FLX_ENOTSUP;
  int rc = hdr_of(pool, off, &h);
  if (rc != FLX_OK) return rc;
  uint64_t w = __atomic_load_n(&h->state_ref, __ATOMIC_ACQUIRE);
  for (;;) {
    uint32_t s = W_STATE(w), n = W_REFS(w);
    if (s == FLX_OBJ_FREE) return FLX_EINVAL; /* double free */
    if (s < FLX_OBJ_WRITING || s > FLX_OBJ_FREE) return FLX_ECORRUPT;
    if (!((s == FLX_OBJ_REMOVED && n == 0) || (s == FLX_OBJ_WRITING && n == 1))) return FLX_EBUSY;
    if (cas(h, &w, WORD(FLX_OBJ_FREE, 0))) break;
  }
  return release_block(pool, h);
}

int flx_pool_stats_get(flx_pool *pool, flx_pool_stats *out) {
  if (!pool || !out) return FLX_EINVAL;
  if (!pool->heap) return FLX_ENOTSUP;
  memset(out, 0, sizeof *out);
  flx_heap_stats(pool->heap, out);
  out->total_bytes = pool->size;
  out->capacity_bytes = pool->size - pool->hdr.data_offset;
  return FLX_OK;
}

int flx_pool_check(flx_pool *pool) {
  if (!pool) return FLX_EINVAL;
  if (!pool->heap) return FLX_ENOTSUP;
  return flx_heap_check(pool->heap);
}
