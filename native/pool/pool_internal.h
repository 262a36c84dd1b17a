/* Internal interface between the pool file layer (pool.c) and the allocator (heap.c).
 *
 * The allocator ("heap") is pure bookkeeping over page numbers and byte offsets: it never
 * touches the pool mapping, does no I/O and no system calls after flx_heap_init, so it can be
 * tested on its own and its state lives in the owner's private memory (externals cannot
 * corrupt it). pool.c writes the object headers in shared memory.
 */
#ifndef FLUXON_POOL_INTERNAL_H
#define FLUXON_POOL_INTERNAL_H

#include <stdint.h>

#include "fluxon/pool.h"

#define FLX_POOL_NSHARDS 8u /* per-class shards; a thread always uses the same one */

struct flx_heap;

/* What the allocator hands back for one object. */
typedef struct flx_block {
  uint64_t hdr_off;   /* offset of the object header in the pool */
  uint64_t block_len; /* bytes of the allocation block */
  uint64_t seq;       /* unique allocation sequence */
  uint32_t pad;       /* block start = hdr_off - pad */
  uint16_t size_class;/* 1 + class, 0 = extent */
} flx_block;

/* pool_size and segment_size in bytes (validated by the caller); pages [0, first_page) are
 * never handed out (the pool header). Returns 0, FLX_EINVAL or FLX_ESYS (errno ENOMEM). */
int flx_heap_init(struct flx_heap **out, uint64_t pool_size, uint64_t segment_size,
                  uint32_t first_page);
void flx_heap_fini(struct flx_heap *h);

/* Thread-safe. FLX_EINVAL (len 0), FLX_ETOOBIG, FLX_ENOMEM. */
int flx_heap_alloc(struct flx_heap *h, uint64_t len, flx_block *out);

/* Thread-safe. Validates the block against the bookkeeping: FLX_EINVAL when no live block
 * starts there (double free, bad offset), FLX_ECORRUPT when the header's description is
 * impossible. len is the object's length (for the used-bytes counter). */
int flx_heap_free(struct flx_heap *h, uint64_t hdr_off, uint16_t size_class, uint32_t pad,
                  uint64_t block_len, uint64_t len);

void flx_heap_stats(struct flx_heap *h, flx_pool_stats *st);
int flx_heap_check(struct flx_heap *h);

#endif
