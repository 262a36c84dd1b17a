/* Fluxon shared-memory pool: the file that an owner contributes to the cluster, the
 * allocator that carves objects out of it, and the per-object header (state + refcount)
 * that readers in other processes use to pin an object while they read it in place.
 *
 * Roles
 *   owner     flx_pool_create(): creates the file, is the only process that allocates and
 *             frees. Its handle carries the allocator's bookkeeping in private memory.
 *   external  flx_pool_attach(): maps the same file, validates the pool header, reads object
 *             data in place and takes/drops references. It never allocates or frees; when its
 *             unref/remove is the one that leaves an object removed and unreferenced, it tells
 *             the owner (over its ring, not this module's concern), which calls flx_pool_free().
 *
 * Offsets
 *   An object is named by the byte offset of its DATA from the start of the pool file (a
 *   uint64_t "off"). Offsets are the same in every process that maps the pool; pointers are
 *   not. The object's 64-byte header sits directly before the data (off - 64). Data is
 *   64-byte aligned; data of objects of FLX_POOL_BIG_OBJECT (1 MiB) or more is 4 KiB aligned.
 *   An object whose allocation block fits in one segment never crosses a segment boundary.
 *
 * Ownership and lifetimes of pointers
 *   - flx_pool *: allocated by flx_pool_create/attach, owned by the caller, released by
 *     flx_pool_close or flx_pool_destroy (after which the pointer is invalid). The handle may
 *     be used from many threads at once, but close/destroy must not race with other calls on
 *     the same handle: the caller stops using it first.
 *   - path arguments: borrowed for the duration of the call; the pool keeps its own copy.
 *   - Pointers returned by flx_obj_header/flx_obj_data/flx_pool_base point into the shared
 *     mapping: they are valid until the handle is closed, and the bytes they show belong to
 *     the object only while the caller holds a reference (the writer's reference from
 *     flx_pool_alloc, or a reader's from flx_obj_ref). Never free() them.
 *   - Out-parameters (off, info, stats) are caller memory written before a successful return.
 *
 * Object life cycle (state, refcount), all transitions one 64-bit CAS on the header:
 *   alloc   -> (WRITING, 1)      the writer's reference
 *   seal    (WRITING, n) -> (READY, n)
 *   ref     (READY, n)   -> (READY, n+1)     fails on WRITING (FLX_EBUSY), REMOVED/FREE (FLX_ENOTFOUND)
 *   unref   (s, n)       -> (s, n-1)
 *   remove  (READY|WRITING, n) -> (REMOVED, n)
 *   free    (REMOVED, 0) -> (FREE, 0) and the block returns to the allocator; also
 *           (WRITING, 1) -> (FREE, 0) so a writer can abandon an object it never sealed.
 *   The call that leaves an object REMOVED with refcount 0 (an unref or the remove) returns 1:
 *   on the owner's handle the object has then already been freed; on an attached handle the
 *   caller must hand the offset to the owner, which calls flx_pool_free(). A READY object with
 *   refcount 0 stays allocated (the owner's directory still names it). Because ref requires
 *   READY and free requires refcount 0, a reader holding a reference never sees the block reused.
 *
 * Errors: every int-returning function returns 0 (or the documented non-negative value) on
 * success and a negative FLX_E* code (fluxon/core.h) on failure. FLX_ESYS leaves errno set.
 */
#ifndef FLUXON_POOL_H
#define FLUXON_POOL_H

#include <stdint.h>

#include "fluxon/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Layout constants. Changing any of these changes FLX_POOL_LAYOUT_VERSION. */
#define FLX_POOL_MAGIC 0x314C4F4F50584C46ull /* "FLXPOOL1" as bytes */
#define FLX_POOL_LAYOUT_VERSION 1u
#define FLX_OBJ_MAGIC 0x4A424F46u            /* "FOBJ" as bytes */
#define FLX_POOL_PAGE 4096u                  /* allocation granule for extents; pool header page */
#define FLX_OBJ_HEADER_SIZE 64u              /* bytes of flx_obj_hdr, directly before the data */
#define FLX_OBJ_ALIGN 64u                    /* alignment of every object's data */
#define FLX_POOL_BIG_OBJECT (1ull << 20)     /* objects this long or longer: data 4 KiB aligned */
#define FLX_POOL_DEFAULT_SEGMENT (16ull << 20)
#define FLX_POOL_MIN_SEGMENT (1ull << 20)
#define FLX_POOL_MAX_SEGMENT (1ull << 30)
#define FLX_POOL_MAX_PAGES ((1u << 30) - 1u) /* a pool holds at most this many 4 KiB pages (~4 TiB) */
#define FLX_POOL_NCLASSES 39                 /* small size classes: blocks of 128 B .. 128 KiB */
#define FLX_POOL_SMALL_MAX_BLOCK (128u << 10)

/* flx_pool_create flags. */
#define FLX_POOL_REPLACE 0x1u /* atomically replace an existing file at path (default: FLX_EEXIST) */
#define FLX_POOL_SPARSE 0x2u  /* do not reserve the memory up front with fallocate */
#define FLX_POOL_ANY_FS 0x4u  /* allow a path that is not on tmpfs/hugetlbfs (tests, tools) */

/* flx_pool_info.fs_kind */
enum flx_pool_fs { FLX_POOL_FS_OTHER = 0, FLX_POOL_FS_TMPFS = 1, FLX_POOL_FS_HUGETLBFS = 2 };

/* Object states (flx_obj_hdr.state). */
enum flx_obj_state {
  FLX_OBJ_WRITING = 1, /* allocated; the writer fills the data */
  FLX_OBJ_READY = 2,   /* sealed; readers may take references */
  FLX_OBJ_REMOVED = 3, /* no new references; freed when the last one is dropped */
  FLX_OBJ_FREE = 4,    /* block returned to the allocator */
};

/* The pool header: the first bytes of page 0 of the pool file. Written once by the owner
 * before the file appears at its path (created under a temporary name, then renamed), so an
 * external never sees a half-written header. Little-endian, naturally aligned. */
typedef struct flx_pool_hdr {
  uint64_t magic;           /* FLX_POOL_MAGIC */
  uint32_t layout_version;  /* FLX_POOL_LAYOUT_VERSION */
  uint32_t header_size;     /* sizeof(flx_pool_hdr) */
  uint64_t pool_size;       /* bytes of the file = segment_size * segment_count */
  uint64_t segment_size;    /* power of two */
  uint64_t segment_count;
  uint32_t page_size;       /* FLX_POOL_PAGE */
  uint32_t obj_header_size; /* FLX_OBJ_HEADER_SIZE */
  uint64_t data_offset;     /* first byte objects may use (FLX_POOL_PAGE) */
  uint64_t created_ns;      /* CLOCK_REALTIME at creation */
  uint64_t generation;      /* random; tells a re-created pool at the same path from the old one */
  uint32_t owner_pid;
  uint32_t fs_kind;         /* enum flx_pool_fs */
  uint64_t huge_page_size;  /* hugetlbfs page size, 0 on tmpfs */
  uint64_t checksum;        /* FNV-1a 64 of every byte before this field */
} flx_pool_hdr;

/* The object header, FLX_OBJ_HEADER_SIZE bytes directly before the object's data.
 * state and refcount form one naturally aligned 64-bit word (state_ref, state in the low
 * half) that is only ever changed by atomic compare-and-swap, so "READY and take a
 * reference" and "REMOVED and unreferenced" are each decided atomically. Read them with
 * flx_obj_info(); never write a header directly. */
typedef struct flx_obj_hdr {
  uint32_t magic;      /* FLX_OBJ_MAGIC */
  uint16_t size_class; /* 1 + small size class, or 0 for an extent */
  uint16_t flags;      /* reserved, 0 */
  uint32_t block_pad;  /* bytes from the start of the allocation block to this header */
  uint32_t reserved;
  uint64_t key_hash;
  uint64_t length;     /* bytes of data */
  uint64_t version;
  union {
    struct {
      uint32_t state;    /* enum flx_obj_state */
      uint32_t refcount;
    };
    uint64_t state_ref;
  };
  uint64_t block_len;  /* bytes of the allocation block (header + data + rounding) */
  uint64_t alloc_seq;  /* unique per allocation in this pool: compare after ref to detect reuse */
} flx_obj_hdr;

/* A copy of an object header, taken with one atomic read of state and refcount. */
typedef struct flx_obj_info {
  uint64_t key_hash;
  uint64_t length;
  uint64_t version;
  uint64_t alloc_seq;
  uint64_t block_len;
  uint32_t state;
  uint32_t refcount;
  uint32_t size_class; /* 1 + class, or 0 for an extent */
} flx_obj_info;

/* Facts about a pool, from its header plus the handle. */
typedef struct flx_pool_info {
  void *base;              /* start of this process's mapping; valid until close */
  uint64_t pool_size;
  uint64_t segment_size;
  uint64_t segment_count;
  uint64_t data_offset;
  uint64_t created_ns;
  uint64_t generation;
  uint64_t huge_page_size;
  uint32_t owner_pid;
  uint32_t fs_kind;
  int is_owner;            /* 1 for the handle from flx_pool_create */
} flx_pool_info;

typedef struct flx_pool_class_stats {
  uint64_t block_size; /* bytes per slot, header included */
  uint64_t spans;      /* spans assigned to this class (including cached empty ones) */
  uint64_t objects;    /* live objects */
  uint64_t free_slots; /* free slots in those spans */
} flx_pool_class_stats;

/* Allocator statistics (owner only). Each class is read under its own locks, so the sum is
 * not one atomic snapshot while other threads allocate. */
typedef struct flx_pool_stats {
  uint64_t total_bytes;      /* pool size (the file) */
  uint64_t capacity_bytes;   /* total minus the pool header page */
  uint64_t used_bytes;       /* sum over live objects of header + length */
  uint64_t reserved_bytes;   /* bytes of live objects' blocks (rounding included) */
  uint64_t free_bytes;       /* bytes in free page runs (usable by any object) */
  uint64_t small_free_bytes; /* free slots in small spans (usable only by that class) */
  uint64_t largest_free_run; /* bytes of the largest free page run */
  uint64_t object_count;
  uint64_t large_objects;    /* objects held in extents */
  uint32_t nclasses;         /* FLX_POOL_NCLASSES */
  flx_pool_class_stats classes[FLX_POOL_NCLASSES];
} flx_pool_stats;

typedef struct flx_pool flx_pool;

/* Creates the pool file at path: size rounded down to whole segments (FLX_EINVAL if that is
 * zero), segment_size a power of two in [FLX_POOL_MIN_SEGMENT, FLX_POOL_MAX_SEGMENT] or 0 for
 * FLX_POOL_DEFAULT_SEGMENT. On hugetlbfs the segment is raised to the huge page size when
 * smaller. The path must be on tmpfs or hugetlbfs (FLX_ENOTSUP otherwise, unless
 * FLX_POOL_ANY_FS). An existing file gives FLX_EEXIST unless FLX_POOL_REPLACE. Unless
 * FLX_POOL_SPARSE, the memory is reserved (fallocate) so a full tmpfs fails here, not with
 * SIGBUS later. *out receives the owner's handle, which holds the allocator's bookkeeping in
 * private memory (about 0.5 % of the pool, allocated here once). The file is mode 0660 (less
 * the umask) so externals of the same group can attach. */
int flx_pool_create(const char *path, uint64_t size, uint64_t segment_size, uint32_t flags,
                    flx_pool **out);

/* flx_pool_attach maps up to this much of a preallocated (not sparse) pool up front
 * (MADV_POPULATE_WRITE), so that first touches of pages do not fault in every client. */
#define FLX_POOL_PREFAULT_MAX (4ull << 30)

/* Maps an existing pool read-write as an external. FLX_ECORRUPT when the file is too short,
 * the magic or checksum is wrong, or the sizes disagree with the file; FLX_EVERSION when the
 * layout version differs from this build's. *out receives the handle. */
int flx_pool_attach(const char *path, flx_pool **out);

/* Unmaps and frees the handle (NULL is a no-op). The file stays. Objects are not touched. */
int flx_pool_close(flx_pool *pool);

/* Owner only (FLX_ENOTSUP on an attached handle, which stays open): unlinks the file if it is
 * still the one this handle created, then closes the handle. Externals that still map the
 * pool keep their mapping until they close. */
int flx_pool_destroy(flx_pool *pool);

int flx_pool_get_info(const flx_pool *pool, flx_pool_info *out);

/* Start of this process's mapping of the pool (valid until close). */
void *flx_pool_base(const flx_pool *pool);

/* Owner only. Allocates an object of len bytes (1 .. about the pool size) in state WRITING
 * with refcount 1 (the writer's reference) and *off set to its data offset.
 * FLX_ETOOBIG: could never fit in this pool; FLX_ENOMEM: no room now; FLX_ENOTSUP: attached
 * handle. Thread-safe; small objects take only a per-class, per-shard lock. */
int flx_pool_alloc(flx_pool *pool, uint64_t len, uint64_t key_hash, uint64_t version,
                   uint64_t *off);

/* WRITING -> READY. FLX_ENOTFOUND if removed meanwhile, FLX_EINVAL if not WRITING. */
int flx_obj_seal(flx_pool *pool, uint64_t off);

/* Takes a reader's reference if the object is READY. FLX_EBUSY while WRITING (or at the
 * refcount limit), FLX_ENOTFOUND when REMOVED or FREE. The caller should compare key_hash,
 * version (or alloc_seq) after a successful ref when the offset may be stale. */
int flx_obj_ref(flx_pool *pool, uint64_t off);

/* Drops one reference. Returns 1 when this left the object REMOVED with refcount 0 (on the
 * owner's handle it has been freed; on an attached handle the caller must send it to the
 * owner for flx_pool_free), 0 otherwise. FLX_EINVAL when the refcount is already 0 or the
 * object is FREE. */
int flx_obj_unref(flx_pool *pool, uint64_t off);

/* Marks the object REMOVED: no new references. Returns 1 when it was already unreferenced
 * (freed on the owner's handle; send to the owner from an attached handle), 0 when references
 * remain (the last unref frees it). FLX_ENOTFOUND if already REMOVED, FLX_EINVAL if FREE. */
int flx_obj_remove(flx_pool *pool, uint64_t off);

/* Owner only. Frees an object that is REMOVED with refcount 0, or WRITING with refcount 1
 * (the writer abandons an object it never sealed). FLX_EBUSY if referenced or still READY,
 * FLX_EINVAL for a double free or an offset that is not an object, FLX_ECORRUPT if the header
 * disagrees with the allocator's bookkeeping. */
int flx_pool_free(flx_pool *pool, uint64_t off);

/* Bounds-checked translation of off to this process's header pointer; NULL when off is out
 * of range, misaligned or has no object magic. */
flx_obj_hdr *flx_obj_header(const flx_pool *pool, uint64_t off);

/* Bounds-checked translation of off to the data pointer; *len (may be NULL) receives the
 * object's length. NULL when the header is invalid or the length runs past the pool. */
void *flx_obj_data(const flx_pool *pool, uint64_t off, uint64_t *len);

/* Copies the object's header into *out. */
int flx_obj_info_get(const flx_pool *pool, uint64_t off, flx_obj_info *out);

/* Owner only. Fills *out with allocator statistics. */
int flx_pool_stats_get(flx_pool *pool, flx_pool_stats *out);

/* Owner only. Walks all of the allocator's bookkeeping and checks it is consistent (free runs,
 * bins, page tags, span bitmaps, counters). Slow: O(pages). Takes every lock. Returns 0 or
 * FLX_ECORRUPT (and prints what was wrong to stderr). */
int flx_pool_check(flx_pool *pool);

/* Block size of small class i (0 <= i < FLX_POOL_NCLASSES), or 0. */
uint64_t flx_pool_class_block(int i);

#ifdef __cplusplus
}
#endif
#endif
