/* The pool allocator: a page heap for extents plus sharded size classes for small objects.
 *
 * Pages. The pool is divided into 4 KiB pages (page 0 holds the pool header). Every page run
 * is FREE, an EXTent (one large object) or part of a small-object SPAN. The owner-private
 * array tag[] marks the first and last page of every free run and every extent with
 * (kind, length), and every page of a span with (SPAN, span id); all other entries are 0.
 * Freeing an extent looks at tag[first-1] and tag[last+1] to coalesce with free neighbours
 * in O(1). Free runs sit in 128 segregated bins (exact for < 16 pages, then four bins per
 * power of two) with a bitmap of non-empty bins; allocation takes the best fitting run of the
 * first bin that has one (good fit, bounded scan). A block of at most one segment is placed so
 * it does not cross a segment boundary (RDMA registers and the master accounts per segment);
 * larger blocks are contiguous runs of pages across segments. The page heap has one lock.
 *
 * Small objects (blocks <= 128 KiB, header included) use 39 size classes, four per power of
 * two (at most 20 % waste). A class takes spans of 64 KiB .. 1 MiB from the page heap and
 * tracks free slots with a bitmap in the span descriptor (owner memory, so a double free is
 * detected exactly). Each class is split into FLX_POOL_NSHARDS shards, each with its own lock
 * and its list of spans with free slots; a thread always allocates from the same shard, and
 * frees to the shard that owns the span. A span that becomes empty stays in the list while
 * it is the shard's only one (so an alloc/free ping-pong never reaches the page heap);
 * otherwise one empty span per shard is parked as a spare and further ones go back to the
 * page heap. When the page heap runs dry, the allocating thread takes back other shards'
 * empty spans (reclaim_spares). There is no global lock and no shared atomic on this path:
 * the page heap lock is taken only when a shard needs a new span or gives one back.
 *
 * Lock order: shard lock -> heap lock. Never the other way round, and never two shard locks
 * by blocking: reclaim_spares, which may run while its caller holds a shard lock, only
 * trylocks the others.
 *
 * No malloc and no system calls after flx_heap_init: bookkeeping arrays are sized for the
 * worst case up front (about 0.5 % of the pool: 12 bytes per page, 128 bytes per 64 KiB).
 * Mutexes are PTHREAD_MUTEX_ADAPTIVE_NP: they spin first and reach the kernel only when
 * contended for longer.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

#define PG FLX_POOL_PAGE
#define PG_SHIFT 12
#define NONE UINT32_MAX
#define NBINS 128u
#define BIN_WORDS (NBINS / 64u)
#define BETTER_FIT_SCAN 16u          /* runs looked at after the first fit, for a better one */
#define MIN_SPAN_PAGES 16u           /* 64 KiB */
#define MAX_SPAN_BYTES (1u << 20)
#define SPAN_MIN_SLOTS 8u
#define SPAN_BITWORDS 8u             /* 512 slots: 64 KiB / 128 B */
#define BIG_PAD (PG - FLX_OBJ_HEADER_SIZE)

/* Cheap O(1) self-checks on every operation, on in sanitizer builds (ctest) and with the Go
 * `invariants` build tag; flx_pool_check is the full, O(pages) check. */
#if defined(FLX_POOL_INVARIANTS) || defined(__SANITIZE_ADDRESS__)
#define INVARIANT(cond)                                                                   \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "fluxon pool invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      abort();                                                                            \
    }                                                                                     \
  } while (0)
#else
#define INVARIANT(cond) ((void)sizeof(cond))
#endif

/* tag[] encoding: kind in the top two bits, length or span id below. */
#define TK_FREE 1u
#define TK_EXT 2u
#define TK_SPAN 3u
#define TAG(k, v) (((uint32_t)(k) << 30) | (uint32_t)(v))
#define TAG_KIND(t) ((t) >> 30)
#define TAG_VAL(t) ((t)&0x3fffffffu)

/* Where a span descriptor is. */
enum { SP_UNUSED = 0, SP_PARTIAL = 1, SP_FULL = 2, SP_SPARE = 3 };

struct flx_span {
  uint32_t start, npages;
  uint32_t next, prev; /* partial list of its shard, or the unused-descriptor list */
  uint32_t nslots, nfree;
  uint32_t hint;       /* bitmap word to look at first */
  uint16_t cls;        /* atomic: read without the shard lock before locking */
  uint8_t shard;       /* atomic */
  uint8_t where;       /* atomic */
  uint64_t free_bits[SPAN_BITWORDS]; /* 1 = free slot */
} __attribute__((aligned(64))); /* two shards' spans never share a cache line */

struct flx_shard {
  pthread_mutex_t mu;
  uint32_t partial;    /* spans with free slots (doubly linked) */
  uint32_t spare;      /* one empty span kept to avoid thrashing the page heap */
  uint64_t nspans, objects, used_bytes, free_slots, seq;
} __attribute__((aligned(64)));

struct flx_heap {
  pthread_mutex_t mu; /* the page heap: bins, tags, span descriptors, extent counters */
  uint32_t npages, first_page, segpages, nspans_max, span_unused;
  uint32_t *tag, *fprev, *fnext;
  uint32_t bin_head[NBINS];
  uint64_t bin_map[BIN_WORDS];
  uint64_t free_pages, ext_objects, ext_used_bytes, ext_pages, span_pages, seq;
  struct flx_span *spans;
  uint32_t class_pages[FLX_POOL_NCLASSES], class_slots[FLX_POOL_NCLASSES];
  uint64_t class_inv[FLX_POOL_NCLASSES]; /* ceil(2^40 / block): exact division for offsets < 1 MiB */
  struct flx_shard shards[FLX_POOL_NCLASSES][FLX_POOL_NSHARDS];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static inline uint32_t ld32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void st32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline unsigned ld8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void st8(uint8_t *p, unsigned v) { __atomic_store_n(p, (uint8_t)v, __ATOMIC_RELEASE); }
static inline unsigned ld16(const uint16_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void st16(uint16_t *p, unsigned v) { __atomic_store_n(p, (uint16_t)v, __ATOMIC_RELEASE); }

uint64_t flx_pool_class_block(int i) {
  if (i < 0 || i >= FLX_POOL_NCLASSES) return 0;
  if (i < 3) return 128u + 64u * (unsigned)i;
  unsigned j = (unsigned)i - 3u, fl = 8u + j / 4u, sl = j % 4u;
  return (1ull << fl) + (uint64_t)(sl + 1u) * (1ull << (fl - 2u));
}

/* Smallest class whose block holds `block` bytes (block <= FLX_POOL_SMALL_MAX_BLOCK). */
static inline unsigned class_of(uint64_t block) {
  if (block <= 128) return 0;
  if (block <= 192) return 1;
  if (block <= 256) return 2;
  uint64_t v = block - 1;
  unsigned fl = 63u - (unsigned)__builtin_clzll(v);
  unsigned sl = (unsigned)(v >> (fl - 2u)) & 3u;
  return 3u + (fl - 8u) * 4u + sl;
}

static inline unsigned bin_of(uint32_t n) {
  if (n < 16) return n;
  unsigned fl = 31u - (unsigned)__builtin_clz(n);
  return 16u + (fl - 4u) * 4u + ((n >> (fl - 2u)) & 3u);
}

static unsigned shard_counter;
static _Thread_local unsigned tls_shard = UINT_MAX;

static inline unsigned my_shard(void) {
  if (tls_shard == UINT_MAX)
    tls_shard = __atomic_fetch_add(&shard_counter, 1, __ATOMIC_RELAXED) % FLX_POOL_NSHARDS;
  return tls_shard;
}

static void lock(pthread_mutex_t *m) {
  if (pthread_mutex_lock(m) != 0) abort(); /* only fails on a corrupted mutex */
}
static void unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

/* ---- page heap (heap lock held) ---------------------------------------------------------- */

static void free_insert(struct flx_heap *h, uint32_t a, uint32_t n) {
  unsigned b = bin_of(n);
  st32(&h->tag[a], TAG(TK_FREE, n));
  st32(&h->tag[a + n - 1], TAG(TK_FREE, n));
  h->fprev[a] = NONE;
  h->fnext[a] = h->bin_head[b];
  if (h->bin_head[b] != NONE) h->fprev[h->bin_head[b]] = a;
  h->bin_head[b] = a;
  h->bin_map[b / 64] |= 1ull << (b % 64);
  h->free_pages += n;
}

static void free_unlink(struct flx_heap *h, uint32_t a, uint32_t n) {
  unsigned b = bin_of(n);
  uint32_t p = h->fprev[a], x = h->fnext[a];
  if (p == NONE)
    h->bin_head[b] = x;
  else
    h->fnext[p] = x;
  if (x != NONE) h->fprev[x] = p;
  if (h->bin_head[b] == NONE) h->bin_map[b / 64] &= ~(1ull << (b % 64));
  h->free_pages -= n;
}

static unsigned next_bin(const struct flx_heap *h, unsigned b) {
  while (b < NBINS) {
    uint64_t w = h->bin_map[b / 64] & (~0ull << (b % 64));
    if (w) return (b & ~63u) + (unsigned)__builtin_ctzll(w);
    b = (b & ~63u) + 64u;
  }
  return NBINS;
}

/* Where n pages go inside the free run [a, a+len): anywhere for multi-segment blocks, else
 * without crossing a segment boundary (at the start, the end, or the first boundary). */
static int place(const struct flx_heap *h, uint32_t a, uint32_t len, uint32_t n, uint32_t *pos) {
  if (len < n) return 0;
  uint32_t sp = h->segpages;
  if (n > sp || a / sp == (a + n - 1) / sp) {
    *pos = a;
    return 1;
  }
  uint32_t e = a + len - n;
  if (e / sp == (e + n - 1) / sp) {
    *pos = e;
    return 1;
  }
  uint32_t b = (a / sp + 1) * sp;
  if (b + n <= a + len) {
    *pos = b;
    return 1;
  }
  return 0;
}

/* Takes n pages out of the free runs; returns the first page or NONE. */
static uint32_t heap_take(struct flx_heap *h, uint32_t n) {
  for (unsigned b = next_bin(h, bin_of(n)); b < NBINS; b = next_bin(h, b + 1)) {
    uint32_t best = NONE, best_len = UINT32_MAX, best_pos = 0, after = 0;
    for (uint32_t r = h->bin_head[b]; r != NONE; r = h->fnext[r]) {
      uint32_t len = TAG_VAL(h->tag[r]), pos;
      if (best != NONE && ++after > BETTER_FIT_SCAN) break;
      if (len >= best_len || !place(h, r, len, n, &pos)) continue;
      best = r, best_len = len, best_pos = pos;
      if (len == n) break;
    }
    if (best == NONE) continue;
    INVARIANT(best_pos >= best && best_pos + n <= best + best_len);
    INVARIANT(n > h->segpages || best_pos / h->segpages == (best_pos + n - 1) / h->segpages);
    free_unlink(h, best, best_len);
    st32(&h->tag[best], 0);
    st32(&h->tag[best + best_len - 1], 0);
    if (best_pos > best) free_insert(h, best, best_pos - best);
    if (best_pos + n < best + best_len) free_insert(h, best_pos + n, best + best_len - best_pos - n);
    return best_pos;
  }
  return NONE;
}

/* Returns pages [a, a+n) (their tags already cleared) and coalesces with free neighbours. */
static void heap_give(struct flx_heap *h, uint32_t a, uint32_t n) {
  if (a > h->first_page) {
    uint32_t t = h->tag[a - 1];
    if (TAG_KIND(t) == TK_FREE) {
      uint32_t ln = TAG_VAL(t), la = a - ln;
      free_unlink(h, la, ln);
      st32(&h->tag[la], 0);
      st32(&h->tag[a - 1], 0);
      a = la, n += ln;
    }
  }
  if (a + n < h->npages) {
    uint32_t t = h->tag[a + n];
    if (TAG_KIND(t) == TK_FREE) {
      uint32_t rn = TAG_VAL(t);
      free_unlink(h, a + n, rn);
      st32(&h->tag[a + n], 0);
      st32(&h->tag[a + n + rn - 1], 0);
      n += rn;
    }
  }
  INVARIANT(a == h->first_page || TAG_KIND(h->tag[a - 1]) != TK_FREE);
  INVARIANT(a + n == h->npages || TAG_KIND(h->tag[a + n]) != TK_FREE);
  free_insert(h, a, n);
}

/* ---- spans --------------------------------------------------------------------------------- */

/* New span for (cls, shard); caller holds that shard's lock. Returns the id or NONE. */
static uint32_t span_new(struct flx_heap *h, unsigned cls, unsigned shard) {
  uint32_t n = h->class_pages[cls];
  lock(&h->mu);
  uint32_t id = h->span_unused, p = NONE;
  if (id != NONE) p = heap_take(h, n);
  if (p == NONE) {
    unlock(&h->mu);
    return NONE;
  }
  struct flx_span *s = &h->spans[id];
  h->span_unused = s->next;
  s->start = p, s->npages = n, s->next = s->prev = NONE, s->hint = 0;
  s->nslots = s->nfree = h->class_slots[cls];
  memset(s->free_bits, 0, sizeof s->free_bits);
  for (uint32_t i = 0; i < s->nslots / 64; i++) s->free_bits[i] = ~0ull;
  if (s->nslots % 64) s->free_bits[s->nslots / 64] = (1ull << (s->nslots % 64)) - 1;
  st16(&s->cls, cls);
  st8(&s->shard, shard);
  st8(&s->where, SP_PARTIAL);
  for (uint32_t i = 0; i < n; i++) st32(&h->tag[p + i], TAG(TK_SPAN, id));
  h->span_pages += n;
  unlock(&h->mu);
  return id;
}

/* Returns an empty span's pages to the heap; caller holds the owning shard's lock. */
static void span_release(struct flx_heap *h, uint32_t id) {
  struct flx_span *s = &h->spans[id];
  lock(&h->mu);
  for (uint32_t i = 0; i < s->npages; i++) st32(&h->tag[s->start + i], 0);
  h->span_pages -= s->npages;
  heap_give(h, s->start, s->npages);
  st8(&s->where, SP_UNUSED);
  st16(&s->cls, UINT16_MAX);
  s->next = h->span_unused;
  h->span_unused = id;
  unlock(&h->mu);
}

static inline uint32_t bits_free(const struct flx_span *s) {
  uint32_t n = 0;
  for (unsigned w = 0; w < SPAN_BITWORDS; w++) n += (uint32_t)__builtin_popcountll(s->free_bits[w]);
  return n;
}

static void partial_push(struct flx_heap *h, struct flx_shard *c, uint32_t id) {
  struct flx_span *s = &h->spans[id];
  s->prev = NONE;
  s->next = c->partial;
  if (c->partial != NONE) h->spans[c->partial].prev = id;
  c->partial = id;
  st8(&s->where, SP_PARTIAL);
}

static void partial_unlink(struct flx_heap *h, struct flx_shard *c, uint32_t id) {
  struct flx_span *s = &h->spans[id];
  if (s->prev == NONE)
    c->partial = s->next;
  else
    h->spans[s->prev].next = s->next;
  if (s->next != NONE) h->spans[s->next].prev = s->prev;
  s->next = s->prev = NONE;
}

/* Gives back other shards' empty spans (the parked spare, and an empty span kept as the
 * head of the partial list) when the page heap ran dry. Uses trylock: the caller may hold
 * `self`'s lock, and two shards must never wait for each other. O(classes * shards). */
static unsigned reclaim_spares(struct flx_heap *h, struct flx_shard *self) {
  unsigned got = 0;
  for (unsigned c = 0; c < FLX_POOL_NCLASSES; c++) {
    for (unsigned s = 0; s < FLX_POOL_NSHARDS; s++) {
      struct flx_shard *sh = &h->shards[c][s];
      if (sh == self || pthread_mutex_trylock(&sh->mu) != 0) continue;
      uint32_t ids[2] = {sh->spare, sh->partial};
      sh->spare = NONE;
      for (int k = 0; k < 2; k++) {
        uint32_t id = ids[k];
        if (id == NONE || h->spans[id].nfree != h->spans[id].nslots) continue;
        if (k == 1) partial_unlink(h, sh, id);
        sh->nspans--;
        sh->free_slots -= h->spans[id].nslots;
        span_release(h, id);
        got++;
      }
      unlock(&sh->mu);
    }
  }
  return got;
}

static int small_alloc(struct flx_heap *h, unsigned cls, uint64_t len, flx_block *out) {
  unsigned shard = my_shard();
  struct flx_shard *c = &h->shards[cls][shard];
  lock(&c->mu);
  uint32_t id = c->partial;
  if (id == NONE) {
    if (c->spare != NONE) {
      id = c->spare;
      c->spare = NONE;
    } else {
      id = span_new(h, cls, shard);
      if (id == NONE && reclaim_spares(h, c) > 0) id = span_new(h, cls, shard);
      if (id == NONE) {
        unlock(&c->mu);
        return FLX_ENOMEM;
      }
      c->nspans++;
      c->free_slots += h->spans[id].nslots;
    }
    partial_push(h, c, id);
  }
  struct flx_span *s = &h->spans[id];
  uint32_t nw = (s->nslots + 63) / 64, w = s->hint;
  while (s->free_bits[w] == 0) w = (w + 1 == nw) ? 0 : w + 1;
  unsigned bit = (unsigned)__builtin_ctzll(s->free_bits[w]);
  s->free_bits[w] &= s->free_bits[w] - 1;
  s->hint = w;
  INVARIANT(s->nfree > 0 && w * 64u + bit < s->nslots);
  if (--s->nfree == 0) {
    partial_unlink(h, c, id);
    st8(&s->where, SP_FULL);
  }
  c->free_slots--;
  c->objects++;
  c->used_bytes += FLX_OBJ_HEADER_SIZE + len;
  uint64_t seq = ++c->seq, bs = flx_pool_class_block((int)cls);
  out->hdr_off = ((uint64_t)s->start << PG_SHIFT) + (uint64_t)(w * 64u + bit) * bs;
  unlock(&c->mu);

  out->block_len = bs;
  out->pad = 0;
  out->size_class = (uint16_t)(cls + 1);
  out->seq = (seq << 16) | (1u + cls * FLX_POOL_NSHARDS + shard);
  return FLX_OK;
}

static int small_free(struct flx_heap *h, uint64_t hdr_off, unsigned cls, uint64_t len) {
  uint64_t pg = hdr_off >> PG_SHIFT;
  if (pg < h->first_page || pg >= h->npages) return FLX_EINVAL;
  uint32_t t = ld32(&h->tag[pg]);
  if (TAG_KIND(t) != TK_SPAN || TAG_VAL(t) >= h->nspans_max) return FLX_EINVAL;
  uint32_t id = TAG_VAL(t);
  struct flx_span *s = &h->spans[id];
  unsigned scls = ld16(&s->cls), shard = ld8(&s->shard);
  if (scls != cls || shard >= FLX_POOL_NSHARDS) return FLX_EINVAL;
  struct flx_shard *c = &h->shards[scls][shard];
  lock(&c->mu);
  /* Revalidate: a span changes hands only under its shard's lock, which we now hold. */
  unsigned where = ld8(&s->where);
  if (ld32(&h->tag[pg]) != t || ld16(&s->cls) != scls || ld8(&s->shard) != shard ||
      (where != SP_PARTIAL && where != SP_FULL)) {
    unlock(&c->mu);
    return FLX_EINVAL;
  }
  uint64_t bs = flx_pool_class_block((int)cls);
  uint64_t rel = hdr_off - ((uint64_t)s->start << PG_SHIFT); /* < span bytes <= 1 MiB */
  uint64_t slot = (rel * h->class_inv[cls]) >> 40;               /* rel / bs without a div */
  if (slot * bs != rel || slot >= s->nslots) {
    unlock(&c->mu);
    return FLX_EINVAL;
  }
  uint64_t m = 1ull << (slot % 64);
  if (s->free_bits[slot / 64] & m) {
    unlock(&c->mu);
    return FLX_EINVAL; /* double free */
  }
  s->free_bits[slot / 64] |= m;
  s->nfree++;
  INVARIANT(s->nfree <= s->nslots && bits_free(s) == s->nfree);
  c->free_slots++;
  c->objects--;
  c->used_bytes -= FLX_OBJ_HEADER_SIZE + len;
  if (where == SP_FULL) partial_push(h, c, id);
  /* An empty span that is the shard's only one with room stays where it is (an alloc/free
   * ping-pong must not move it every time); otherwise one is parked and more are released. */
  if (s->nfree == s->nslots && !(c->partial == id && s->next == NONE)) {
    partial_unlink(h, c, id);
    if (c->spare == NONE) {
      c->spare = id;
      st8(&s->where, SP_SPARE);
    } else {
      c->nspans--;
      c->free_slots -= s->nslots;
      span_release(h, id);
    }
  }
  unlock(&c->mu);
  return FLX_OK;
}

/* ---- extents ------------------------------------------------------------------------------- */

static int ext_alloc(struct flx_heap *h, uint32_t n, uint32_t pad, uint64_t len, flx_block *out) {
  for (int attempt = 0; attempt < 2; attempt++) {
    lock(&h->mu);
    uint32_t p = heap_take(h, n);
    if (p != NONE) {
      st32(&h->tag[p], TAG(TK_EXT, n));
      st32(&h->tag[p + n - 1], TAG(TK_EXT, n));
      h->ext_objects++;
      h->ext_used_bytes += FLX_OBJ_HEADER_SIZE + len;
      h->ext_pages += n;
      uint64_t seq = ++h->seq;
      unlock(&h->mu);
      out->hdr_off = ((uint64_t)p << PG_SHIFT) + pad;
      out->block_len = (uint64_t)n << PG_SHIFT;
      out->pad = pad;
      out->size_class = 0;
      out->seq = seq << 16;
      return FLX_OK;
    }
    unlock(&h->mu);
    if (reclaim_spares(h, NULL) == 0) break;
  }
  return FLX_ENOMEM;
}

static int ext_free(struct flx_heap *h, uint64_t block_off, uint64_t block_len, uint64_t len) {
  uint64_t p = block_off >> PG_SHIFT, n = block_len >> PG_SHIFT;
  if (p < h->first_page || n == 0 || n > h->npages - p) return FLX_EINVAL;
  lock(&h->mu);
  uint32_t t = TAG(TK_EXT, n);
  if (h->tag[p] != t || h->tag[p + n - 1] != t) {
    unlock(&h->mu);
    return FLX_EINVAL;
  }
  st32(&h->tag[p], 0);
  st32(&h->tag[p + n - 1], 0);
  h->ext_objects--;
  h->ext_used_bytes -= FLX_OBJ_HEADER_SIZE + len;
  h->ext_pages -= n;
  heap_give(h, (uint32_t)p, (uint32_t)n);
  unlock(&h->mu);
  return FLX_OK;
}

/* ---- public (internal) interface ----------------------------------------------------------- */

int flx_heap_alloc(struct flx_heap *h, uint64_t len, flx_block *out) {
  if (len == 0) return FLX_EINVAL;
  uint64_t data_pages = h->npages - h->first_page;
  if (len > (data_pages << PG_SHIFT)) return FLX_ETOOBIG;
  uint64_t n;
  uint32_t pad = 0;
  if (len >= FLX_POOL_BIG_OBJECT) {
    n = 1 + ((len + PG - 1) >> PG_SHIFT); /* one page holds the header at its end */
    pad = BIG_PAD;
  } else {
    uint64_t block = FLX_OBJ_HEADER_SIZE + ((len + FLX_OBJ_ALIGN - 1) & ~(uint64_t)(FLX_OBJ_ALIGN - 1));
    if (block <= FLX_POOL_SMALL_MAX_BLOCK) return small_alloc(h, class_of(block), len, out);
    n = (block + PG - 1) >> PG_SHIFT;
  }
  if (n > data_pages) return FLX_ETOOBIG;
  return ext_alloc(h, (uint32_t)n, pad, len, out);
}

int flx_heap_free(struct flx_heap *h, uint64_t hdr_off, uint16_t size_class, uint32_t pad,
                  uint64_t block_len, uint64_t len) {
  if (size_class != 0) {
    unsigned cls = size_class - 1u;
    if (cls >= FLX_POOL_NCLASSES || pad != 0 || block_len != flx_pool_class_block((int)cls) ||
        FLX_OBJ_HEADER_SIZE + len > block_len)
      return FLX_ECORRUPT;
    return small_free(h, hdr_off, cls, len);
  }
  if ((pad != 0 && pad != BIG_PAD) || hdr_off < pad || block_len == 0 || block_len % PG != 0 ||
      pad + FLX_OBJ_HEADER_SIZE + len > block_len || (hdr_off - pad) % PG != 0)
    return FLX_ECORRUPT;
  return ext_free(h, hdr_off - pad, block_len, len);
}

int flx_heap_init(struct flx_heap **out, uint64_t pool_size, uint64_t segment_size,
                  uint32_t first_page) {
  uint64_t npages = pool_size >> PG_SHIFT;
  if (npages > FLX_POOL_MAX_PAGES || npages <= first_page || segment_size < FLX_POOL_MIN_SEGMENT ||
      pool_size % segment_size != 0)
    return FLX_EINVAL;
  struct flx_heap *h = aligned_alloc(64, sizeof *h);
  if (!h) return FLX_ESYS;
  memset(h, 0, sizeof *h);
  h->npages = (uint32_t)npages;
  h->first_page = first_page;
  h->segpages = (uint32_t)(segment_size >> PG_SHIFT);
  h->nspans_max = (h->npages - first_page) / MIN_SPAN_PAGES + 1;
  h->tag = calloc(npages, sizeof *h->tag);
  h->fprev = calloc(npages, sizeof *h->fprev);
  h->fnext = calloc(npages, sizeof *h->fnext);
  h->spans = calloc(h->nspans_max, sizeof *h->spans);
  if (!h->tag || !h->fprev || !h->fnext || !h->spans) {
    free(h->tag), free(h->fprev), free(h->fnext), free(h->spans), free(h);
    return FLX_ESYS;
  }
  for (uint32_t i = 0; i < h->nspans_max; i++) {
    h->spans[i].next = i + 1 < h->nspans_max ? i + 1 : NONE;
    h->spans[i].cls = UINT16_MAX;
  }
  h->span_unused = 0;
  for (unsigned b = 0; b < NBINS; b++) h->bin_head[b] = NONE;
  for (unsigned c = 0; c < FLX_POOL_NCLASSES; c++) {
    uint64_t bs = flx_pool_class_block((int)c), span = 1ull << 16;
    while (span < SPAN_MIN_SLOTS * bs) span <<= 1;
    if (span > MAX_SPAN_BYTES) span = MAX_SPAN_BYTES;
    if (span > segment_size / 2) span = segment_size / 2;
    h->class_pages[c] = (uint32_t)(span >> PG_SHIFT);
    h->class_slots[c] = (uint32_t)(span / bs);
    h->class_inv[c] = ((1ull << 40) + bs - 1) / bs;
  }
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
#if defined(__GLIBC__) && defined(__USE_GNU)
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
  pthread_mutex_init(&h->mu, &attr);
  for (unsigned c = 0; c < FLX_POOL_NCLASSES; c++) {
    for (unsigned s = 0; s < FLX_POOL_NSHARDS; s++) {
      pthread_mutex_init(&h->shards[c][s].mu, &attr);
      h->shards[c][s].partial = h->shards[c][s].spare = NONE;
    }
  }
  pthread_mutexattr_destroy(&attr);
  free_insert(h, first_page, h->npages - first_page);
  *out = h;
  return FLX_OK;
}

void flx_heap_fini(struct flx_heap *h) {
  if (!h) return;
  for (unsigned c = 0; c < FLX_POOL_NCLASSES; c++)
    for (unsigned s = 0; s < FLX_POOL_NSHARDS; s++) pthread_mutex_destroy(&h->shards[c][s].mu);
  pthread_mutex_destroy(&h->mu);
  free(h->tag), free(h->fprev), free(h->fnext), free(h->spans), free(h);
}

void flx_heap_stats(struct flx_heap *h, flx_pool_stats *st) {
  uint64_t reserved = 0, used = 0, objects = 0, small_free = 0;
  for (unsigned c = 0; c < FLX_POOL_NCLASSES; c++) {
    flx_pool_class_stats *cs = &st->classes[c];
    uint64_t bs = flx_pool_class_block((int)c);
    memset(cs, 0, sizeof *cs);
    cs->block_size = bs;
    for (unsigned s = 0; s < FLX_POOL_NSHARDS; s++) {
      struct flx_shard *sh = &h->shards[c][s];
      lock(&sh->mu);
      cs->spans += sh->nspans;
      cs->objects += sh->objects;
      cs->free_slots += sh->free_slots;
      used += sh->used_bytes;
      unlock(&sh->mu);
    }
    objects += cs->objects;
    reserved += cs->objects * bs;
    small_free += cs->free_slots * bs;
  }
  lock(&h->mu);
  uint64_t largest = 0;
  unsigned top = NBINS;
  for (unsigned b = 0; b < NBINS; b++)
    if (h->bin_head[b] != NONE) top = b;
  if (top != NBINS)
    for (uint32_t r = h->bin_head[top]; r != NONE; r = h->fnext[r])
      if (TAG_VAL(h->tag[r]) > largest) largest = TAG_VAL(h->tag[r]);
  st->free_bytes = h->free_pages << PG_SHIFT;
  st->largest_free_run = largest << PG_SHIFT;
  st->large_objects = h->ext_objects;
  st->object_count = objects + h->ext_objects;
  st->used_bytes = used + h->ext_used_bytes;
  st->reserved_bytes = reserved + (h->ext_pages << PG_SHIFT);
  unlock(&h->mu);
  st->small_free_bytes = small_free;
  st->nclasses = FLX_POOL_NCLASSES;
}

#define CHECK_FAIL(...)                       \
  do {                                        \
    fprintf(stderr, "flx_pool_check: " __VA_ARGS__); \
    fputc('\n', stderr);                      \
    bad = 1;                                  \
    goto out;                                 \
  } while (0)

int flx_heap_check(struct flx_heap *h) {
  int bad = 0;
  for (unsigned c = 0; c < FLX_POOL_NCLASSES; c++)
    for (unsigned s = 0; s < FLX_POOL_NSHARDS; s++) lock(&h->shards[c][s].mu);
  lock(&h->mu);
  uint64_t free_pages = 0, ext_pages = 0, span_pages = 0, nfree_runs = 0, ext_objs = 0;
  uint32_t prev_kind = 0;
  for (uint32_t p = 0; p < h->first_page; p++)
    if (h->tag[p] != 0) CHECK_FAIL("header page %u has tag %#x", p, h->tag[p]);
  for (uint32_t p = h->first_page; p < h->npages;) {
    uint32_t t = h->tag[p], k = TAG_KIND(t), v = TAG_VAL(t), n;
    if (k == TK_FREE || k == TK_EXT) {
      n = v;
      if (n == 0 || n > h->npages - p) CHECK_FAIL("page %u: run length %u out of range", p, n);
      if (h->tag[p + n - 1] != t) CHECK_FAIL("page %u: end tag %#x != %#x", p, h->tag[p + n - 1], t);
      for (uint32_t i = 1; i + 1 < n; i++)
        if (h->tag[p + i] != 0) CHECK_FAIL("page %u: interior tag at +%u", p, i);
      if (k == TK_FREE) {
        if (prev_kind == TK_FREE) CHECK_FAIL("page %u: adjacent free runs not coalesced", p);
        free_pages += n, nfree_runs++;
      } else {
        ext_pages += n, ext_objs++;
      }
      if (n <= h->segpages && k == TK_EXT && p / h->segpages != (p + n - 1) / h->segpages)
        CHECK_FAIL("page %u: extent of %u pages crosses a segment boundary", p, n);
    } else if (k == TK_SPAN) {
      if (v >= h->nspans_max) CHECK_FAIL("page %u: span id %u out of range", p, v);
      struct flx_span *s = &h->spans[v];
      n = s->npages;
      if (s->start != p) CHECK_FAIL("page %u: span %u starts at %u", p, v, s->start);
      for (uint32_t i = 0; i < n; i++)
        if (h->tag[p + i] != t) CHECK_FAIL("page %u: span %u page +%u tag %#x", p, v, i, h->tag[p + i]);
      if (p / h->segpages != (p + n - 1) / h->segpages) CHECK_FAIL("span %u crosses a segment", v);
      if (s->where == SP_UNUSED) CHECK_FAIL("span %u in use but marked unused", v);
      uint32_t cnt = bits_free(s);
      if (cnt != s->nfree || s->nfree > s->nslots) CHECK_FAIL("span %u: %u free bits, nfree %u", v, cnt, s->nfree);
      if (s->cls >= FLX_POOL_NCLASSES || s->nslots != h->class_slots[s->cls] || n != h->class_pages[s->cls])
        CHECK_FAIL("span %u: class %u geometry", v, s->cls);
      span_pages += n;
    } else {
      CHECK_FAIL("page %u: no tag at a run start (%#x)", p, t);
    }
    prev_kind = k;
    p += n;
  }
  if (free_pages != h->free_pages) CHECK_FAIL("free pages %lu != counter %lu", (unsigned long)free_pages, (unsigned long)h->free_pages);
  if (ext_pages != h->ext_pages || ext_objs != h->ext_objects) CHECK_FAIL("extent counters");
  if (span_pages != h->span_pages) CHECK_FAIL("span pages %lu != %lu", (unsigned long)span_pages, (unsigned long)h->span_pages);
  uint64_t listed = 0, listed_pages = 0;
  for (unsigned b = 0; b < NBINS; b++) {
    int nonempty = (h->bin_map[b / 64] >> (b % 64)) & 1;
    if (nonempty != (h->bin_head[b] != NONE)) CHECK_FAIL("bin %u bitmap", b);
    uint32_t prev = NONE;
    for (uint32_t r = h->bin_head[b]; r != NONE; prev = r, r = h->fnext[r]) {
      if (TAG_KIND(h->tag[r]) != TK_FREE || bin_of(TAG_VAL(h->tag[r])) != b) CHECK_FAIL("bin %u: run %u", b, r);
      if (h->fprev[r] != prev) CHECK_FAIL("bin %u: run %u prev link", b, r);
      listed++, listed_pages += TAG_VAL(h->tag[r]);
      if (listed > nfree_runs) CHECK_FAIL("bin lists longer than the free runs");
    }
  }
  if (listed != nfree_runs || listed_pages != free_pages) CHECK_FAIL("bins list %lu runs, pages hold %lu", (unsigned long)listed, (unsigned long)nfree_runs);
  uint64_t spans_owned = 0;
  for (unsigned c = 0; c < FLX_POOL_NCLASSES; c++) {
    for (unsigned s = 0; s < FLX_POOL_NSHARDS; s++) {
      struct flx_shard *sh = &h->shards[c][s];
      uint64_t free_slots = 0;
      for (uint32_t id = sh->partial; id != NONE; id = h->spans[id].next) {
        struct flx_span *sp = &h->spans[id];
        if (sp->where != SP_PARTIAL || sp->cls != c || sp->shard != s || sp->nfree == 0)
          CHECK_FAIL("class %u shard %u: partial span %u state", c, s, id);
        free_slots += sp->nfree;
      }
      if (sh->spare != NONE) {
        struct flx_span *sp = &h->spans[sh->spare];
        if (sp->where != SP_SPARE || sp->nfree != sp->nslots || sp->cls != c) CHECK_FAIL("class %u shard %u: spare", c, s);
        free_slots += sp->nfree;
      }
      if (free_slots != sh->free_slots) CHECK_FAIL("class %u shard %u: free slots %lu != %lu", c, s, (unsigned long)free_slots, (unsigned long)sh->free_slots);
      spans_owned += sh->nspans;
    }
  }
  uint64_t in_use = 0;
  for (uint32_t i = 0; i < h->nspans_max; i++) in_use += h->spans[i].where != SP_UNUSED;
  if (in_use != spans_owned) CHECK_FAIL("%lu spans in use, shards own %lu", (unsigned long)in_use, (unsigned long)spans_owned);
out:
  unlock(&h->mu);
  for (unsigned c = FLX_POOL_NCLASSES; c-- > 0;)
    for (unsigned s = FLX_POOL_NSHARDS; s-- > 0;) unlock(&h->shards[c][s].mu);
  return bad ? FLX_ECORRUPT : FLX_OK;
}
