/* UCX module: see fluxon/ucx.h. */
#include "fluxon/ucx.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ucp/api/ucp.h>

struct flx_ucx_node {
  /* Set once an ep with peer error handling was refused (sm-only UCX_TLS):
   * later eps skip the attempt, and UCX's error log, at once. */
  atomic_int no_peer_errors;
  ucp_context_h ctx;
  ucp_worker_h worker;
  int efd;
  pthread_t thread;
  atomic_int stop;
  pthread_mutex_t mu;      /* guards abandoned */
  struct get_op *abandoned; /* gets whose callers gave up (see flx_ucx_get) */
};

struct flx_ucx_ep {
  flx_ucx_node *node;
  ucp_ep_h ep;
  atomic_int failed;
  int peer_errors; /* created with UCP_ERR_HANDLING_MODE_PEER */
  /* Held for reading while a get is submitted, for writing while ep is
   * closed: a get that gives up closes ep under the others' feet. */
  pthread_rwlock_t lock;
  int closed; /* ep is closed already (a get gave up); under lock */
  int parked; /* a get was abandoned on ep: closing it is left to the node */
};

struct flx_ucx_mem {
  flx_ucx_node *node;
  ucp_mem_h memh;
};

struct flx_ucx_rkey {
  ucp_rkey_h rkey;
};

/* One operation's completion, signalled by UCX's callback on the progress thread. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  ucs_status_t status;
} flx_ucx_wait;

/* A get's state. On the caller's stack, except for a get into a bounce
 * buffer (see flx_ucx_get), which lives on the heap so that it can complete
 * after its caller gave up on it: its callback frees it then. */
typedef struct get_op {
  flx_ucx_wait w;
  int abandoned; /* under w.mu: the caller returned */
  flx_ucx_node *node;
  void *bounce;
  struct get_op *prev, *next; /* in node->abandoned, under node->mu */
} get_op;

static int ucx_code(ucs_status_t s) { return s == UCS_OK ? FLX_OK : FLX_UCX_STATUS_BASE + (int)s; }

const char *flx_ucx_strerror(int code) {
  if (code <= FLX_UCX_STATUS_BASE) return ucs_status_string((ucs_status_t)(code - FLX_UCX_STATUS_BASE));
  return flx_strerror(code);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Spins while there is work, sleeps on the event fd when there has been none
 * for FLX_UCX_SPIN_NS. flx_ucx_node_close wakes it with ucp_worker_signal. */
static void *progress_main(void *arg) {
  flx_ucx_node *n = arg;
  uint64_t idle_since = now_ns();
  while (!atomic_load_explicit(&n->stop, memory_order_acquire)) {
    if (ucp_worker_progress(n->worker) != 0) {
      idle_since = now_ns();
      continue;
    }
    if (now_ns() - idle_since < FLX_UCX_SPIN_NS) continue;
    ucs_status_t s = ucp_worker_arm(n->worker);
    if (s == UCS_ERR_BUSY) continue;
    if (s == UCS_OK) {
      struct pollfd pfd = {.fd = n->efd, .events = POLLIN};
      (void)poll(&pfd, 1, 100); /* the timeout only bounds a missed wake-up */
    }
    idle_since = now_ns();
  }
  return NULL;
}

int flx_ucx_node_open(flx_ucx_node **out) {
  if (!out) return FLX_EINVAL;
  *out = NULL;
  flx_ucx_node *n = calloc(1, sizeof(*n));
  if (!n) return FLX_ENOMEM;
  n->efd = -1;
  pthread_mutex_init(&n->mu, NULL);
  ucp_config_t *cfg = NULL;
  ucs_status_t s = ucp_config_read(NULL, NULL, &cfg);
  if (s != UCS_OK) goto fail;
  ucp_params_t p;
  memset(&p, 0, sizeof(p));
  p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  p.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  p.mt_workers_shared = 0;
  s = ucp_init(&p, cfg, &n->ctx);
  ucp_config_release(cfg);
  if (s != UCS_OK) goto fail;
  ucp_worker_params_t wp;
  memset(&wp, 0, sizeof(wp));
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_MULTI;
  s = ucp_worker_create(n->ctx, &wp, &n->worker);
  if (s != UCS_OK) goto fail;
  ucp_worker_attr_t wa;
  memset(&wa, 0, sizeof(wa));
  wa.field_mask = UCP_WORKER_ATTR_FIELD_THREAD_MODE;
  s = ucp_worker_query(n->worker, &wa);
  if (s != UCS_OK) goto fail;
  if (wa.thread_mode != UCS_THREAD_MODE_MULTI) {
    s = UCS_ERR_UNSUPPORTED; /* a UCX built without thread support */
    goto fail;
  }
  s = ucp_worker_get_efd(n->worker, &n->efd);
  if (s != UCS_OK) goto fail;
  if (pthread_create(&n->thread, NULL, progress_main, n) != 0) {
    int e = errno;
    flx_ucx_node_close(n);
    errno = e;
    return FLX_ESYS;
  }
  *out = n;
  return FLX_OK;
fail:
  if (n->worker) ucp_worker_destroy(n->worker);
  if (n->ctx) ucp_cleanup(n->ctx);
  pthread_mutex_destroy(&n->mu);
  free(n);
  return ucx_code(s);
}

static void free_op(get_op *op) {
  pthread_cond_destroy(&op->w.cv);
  pthread_mutex_destroy(&op->w.mu);
  free(op->bounce);
  free(op);
}

void flx_ucx_node_close(flx_ucx_node *n) {
  if (!n) return;
  if (n->efd >= 0) {
    atomic_store_explicit(&n->stop, 1, memory_order_release);
    (void)ucp_worker_signal(n->worker);
    pthread_join(n->thread, NULL);
  }
  /* Destroying the worker destroys the eps left to it (parked) and may
   * complete their abandoned gets; what it does not complete is freed. */
  ucp_worker_destroy(n->worker);
  ucp_cleanup(n->ctx);
  while (n->abandoned) {
    get_op *op = n->abandoned;
    n->abandoned = op->next;
    free_op(op);
  }
  pthread_mutex_destroy(&n->mu);
  free(n);
}

int flx_ucx_node_address(flx_ucx_node *n, void *buf, size_t cap, size_t *len) {
  if (!n || !len) return FLX_EINVAL;
  ucp_address_t *a = NULL;
  size_t alen = 0;
  ucs_status_t s = ucp_worker_get_address(n->worker, &a, &alen);
  if (s != UCS_OK) return ucx_code(s);
  *len = alen;
  int rc = FLX_OK;
  if (alen > cap || !buf)
    rc = FLX_ETOOBIG;
  else
    memcpy(buf, a, alen);
  ucp_worker_release_address(n->worker, a);
  return rc;
}

static void ep_error(void *arg, ucp_ep_h ep, ucs_status_t status) {
  (void)ep;
  (void)status;
  flx_ucx_ep *e = arg;
  atomic_store(&e->failed, 1);
}

int flx_ucx_ep_open(flx_ucx_node *n, const void *addr, size_t len, flx_ucx_ep **out) {
  if (!n || !addr || !len || !out) return FLX_EINVAL;
  *out = NULL;
  flx_ucx_ep *e = calloc(1, sizeof(*e));
  if (!e) return FLX_ENOMEM;
  e->node = n;
  pthread_rwlock_init(&e->lock, NULL);
  ucp_ep_params_t p;
  memset(&p, 0, sizeof(p));
  p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                 UCP_EP_PARAM_FIELD_ERR_HANDLER;
  p.address = addr;
  p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  p.err_handler.cb = ep_error;
  p.err_handler.arg = e;
  e->peer_errors = !atomic_load(&n->no_peer_errors);
  ucs_status_t s = UCS_ERR_UNREACHABLE;
  if (e->peer_errors) s = ucp_ep_create(n->worker, &p, &e->ep);
  if (s == UCS_ERR_UNREACHABLE) {
    if (e->peer_errors) atomic_store(&n->no_peer_errors, 1);
    e->peer_errors = 0;
    /* UCX 1.13's shared-memory transports cannot detect a dead peer, so it
     * refuses them an ep with peer error handling; take one without. */
    p.field_mask &= ~(uint64_t)(UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER);
    s = ucp_ep_create(n->worker, &p, &e->ep);
  }
  if (s != UCS_OK) {
    pthread_rwlock_destroy(&e->lock);
    free(e);
    return ucx_code(s);
  }
  *out = e;
  return FLX_OK;
}

static void wait_init(flx_ucx_wait *w) {
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->done = 0;
  w->status = UCS_OK;
}

static void wait_fini(flx_ucx_wait *w) {
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
}

static void op_done(void *req, ucs_status_t status, void *user) {
  flx_ucx_wait *w = user;
  ucp_request_free(req);
  pthread_mutex_lock(&w->mu);
  w->status = status;
  w->done = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Waits for a request started with op_done/w as its callback (or returns its
 * immediate result). */
static ucs_status_t wait_req(ucs_status_ptr_t req, flx_ucx_wait *w) {
  if (req == NULL) return UCS_OK;
  if (UCS_PTR_IS_ERR(req)) return UCS_PTR_STATUS(req);
  pthread_mutex_lock(&w->mu);
  while (!w->done) pthread_cond_wait(&w->cv, &w->mu);
  ucs_status_t s = w->status;
  pthread_mutex_unlock(&w->mu);
  return s;
}

/* Closes e->ep, once. Forced where UCX allows it (peer error handling): a
 * forced close never waits on a peer that may be dead or stopped, and it
 * completes every operation still outstanding on the ep with an error, so
 * a get's dst is not written after the close returns. Caller holds
 * e->lock for writing. */
static void ep_close_locked(flx_ucx_ep *e) {
  if (e->closed) return;
  e->closed = 1;
  atomic_store(&e->failed, 1);
  flx_ucx_wait w;
  wait_init(&w);
  ucp_request_param_t p;
  memset(&p, 0, sizeof(p));
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.flags = e->peer_errors ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  p.cb.send = op_done;
  p.user_data = &w;
  ucs_status_t s = wait_req(ucp_ep_close_nbx(e->ep, &p), &w);
  (void)s; /* the ep is gone either way */
  wait_fini(&w);
}

void flx_ucx_ep_close(flx_ucx_ep *e) {
  if (!e) return;
  pthread_rwlock_wrlock(&e->lock);
  /* An abandoned get may still complete on a parked ep: UCX must keep it
   * until the node closes (a plain close would wait on the peer, a forced
   * one would free what the get refers to). */
  if (e->parked) e->closed = 1;
  ep_close_locked(e);
  pthread_rwlock_unlock(&e->lock);
  pthread_rwlock_destroy(&e->lock);
  free(e);
}

int flx_ucx_mem_map(flx_ucx_node *n, void *addr, size_t len, flx_ucx_mem **out) {
  if (!n || !addr || !len || !out) return FLX_EINVAL;
  *out = NULL;
  flx_ucx_mem *m = calloc(1, sizeof(*m));
  if (!m) return FLX_ENOMEM;
  m->node = n;
  ucp_mem_map_params_t p;
  memset(&p, 0, sizeof(p));
  p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  p.address = addr;
  p.length = len;
  ucs_status_t s = ucp_mem_map(n->ctx, &p, &m->memh);
  if (s != UCS_OK) {
    free(m);
    return ucx_code(s);
  }
  *out = m;
  return FLX_OK;
}

int flx_ucx_mem_rkey(flx_ucx_mem *m, void *buf, size_t cap, size_t *len) {
  if (!m || !len) return FLX_EINVAL;
  void *rb = NULL;
  size_t rlen = 0;
  ucs_status_t s = ucp_rkey_pack(m->node->ctx, m->memh, &rb, &rlen);
  if (s != UCS_OK) return ucx_code(s);
  *len = rlen;
  int rc = FLX_OK;
  if (rlen > cap || !buf)
    rc = FLX_ETOOBIG;
  else
    memcpy(buf, rb, rlen);
  ucp_rkey_buffer_release(rb);
  return rc;
}

void flx_ucx_mem_unmap(flx_ucx_mem *m) {
  if (!m) return;
  (void)ucp_mem_unmap(m->node->ctx, m->memh);
  free(m);
}

int flx_ucx_rkey_unpack(flx_ucx_ep *e, const void *buf, size_t len, flx_ucx_rkey **out) {
  if (!e || !buf || !len || !out) return FLX_EINVAL;
  *out = NULL;
  flx_ucx_rkey *rk = calloc(1, sizeof(*rk));
  if (!rk) return FLX_ENOMEM;
  ucs_status_t s = ucp_ep_rkey_unpack(e->ep, buf, &rk->rkey);
  if (s != UCS_OK) {
    free(rk);
    return ucx_code(s);
  }
  *out = rk;
  return FLX_OK;
}

void flx_ucx_rkey_destroy(flx_ucx_rkey *rk) {
  if (!rk) return;
  ucp_rkey_destroy(rk->rkey);
  free(rk);
}

/* Slice of a wait that also watches a cancel flag: how late a cancel is
 * noticed. A get that completes wakes its waiter at once, whatever this is. */
#define CANCEL_POLL_NS 1000000ull

/* Waits for w until it is done, deadline (CLOCK_MONOTONIC ns; 0: none)
 * passes or *cancel becomes nonzero. Returns FLX_OK when done, else
 * FLX_ETIMEDOUT or FLX_ECANCELED. */
static int wait_until(flx_ucx_wait *w, uint64_t deadline, const int *cancel) {
  int rc = FLX_OK;
  pthread_mutex_lock(&w->mu);
  while (!w->done) {
    if (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE)) {
      rc = FLX_ECANCELED;
      break;
    }
    uint64_t now = now_ns();
    if (deadline && now >= deadline) {
      rc = FLX_ETIMEDOUT;
      break;
    }
    if (!deadline && !cancel) {
      pthread_cond_wait(&w->cv, &w->mu);
      continue;
    }
    uint64_t until = deadline ? deadline : UINT64_MAX;
    if (cancel && until - now > CANCEL_POLL_NS) until = now + CANCEL_POLL_NS;
    /* The condvar waits on CLOCK_REALTIME: convert the remaining time. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t at = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + (until - now);
    ts.tv_sec = (time_t)(at / 1000000000ull);
    ts.tv_nsec = (long)(at % 1000000000ull);
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

static void get_done(void *req, ucs_status_t status, void *user) {
  get_op *op = user;
  ucp_request_free(req);
  pthread_mutex_lock(&op->w.mu);
  if (!op->abandoned) {
    op->w.status = status;
    op->w.done = 1;
    pthread_cond_signal(&op->w.cv);
    pthread_mutex_unlock(&op->w.mu);
    return;
  }
  pthread_mutex_unlock(&op->w.mu);
  flx_ucx_node *n = op->node;
  pthread_mutex_lock(&n->mu);
  if (op->prev)
    op->prev->next = op->next;
  else
    n->abandoned = op->next;
  if (op->next) op->next->prev = op->prev;
  pthread_mutex_unlock(&n->mu);
  free_op(op);
}

/* Gives a bounce get up unless it completed meanwhile: its callback frees
 * it later (or flx_ucx_node_close does). Returns whether it was abandoned. */
static int abandon(get_op *op) {
  pthread_mutex_lock(&op->w.mu);
  int gone = !op->w.done;
  if (gone) {
    op->abandoned = 1;
    /* Listed before w.mu is released, so that get_done finds it listed. */
    flx_ucx_node *n = op->node;
    pthread_mutex_lock(&n->mu);
    op->prev = NULL;
    op->next = n->abandoned;
    if (n->abandoned) n->abandoned->prev = op;
    n->abandoned = op;
    pthread_mutex_unlock(&n->mu);
  }
  pthread_mutex_unlock(&op->w.mu);
  return gone;
}

/* Two ways to give up a get, since UCX cannot cancel one and dst must not
 * be written after flx_ucx_get returns:
 *  - an ep with peer error handling is force-closed, which completes its
 *    outstanding gets with an error; the get read straight into dst;
 *  - an ep without (UCX 1.13 over shared memory alone) cannot be forced:
 *    its close waits on the peer and leaves gets outstanding. A get there
 *    that may give up (a timeout or a cancel flag) reads into a bounce
 *    buffer on the heap, copied to dst on success; given up, it is left to
 *    complete or to die with the node, and the ep is parked. */
int flx_ucx_get(flx_ucx_ep *e, flx_ucx_rkey *rk, uint64_t raddr, void *dst, size_t len, uint64_t timeout_ns,
                const int *cancel) {
  if (!e || !rk || (!dst && len)) return FLX_EINVAL;
  if (len == 0) return FLX_OK;
  uint64_t deadline = timeout_ns ? now_ns() + timeout_ns : 0;
  int bounced = (timeout_ns || cancel) && !e->peer_errors;
  get_op stack_op;
  get_op *op = &stack_op;
  memset(op, 0, sizeof(*op));
  if (bounced) {
    op = calloc(1, sizeof(*op));
    if (op) op->bounce = malloc(len);
    if (!op || !op->bounce) {
      free(op);
      return FLX_ENOMEM;
    }
  }
  wait_init(&op->w);
  op->node = e->node;
  ucp_request_param_t p;
  memset(&p, 0, sizeof(p));
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.send = get_done;
  p.user_data = op;
  ucs_status_t s = UCS_ERR_CONNECTION_RESET;
  int rc = FLX_OK;
  pthread_rwlock_rdlock(&e->lock);
  if (e->closed || atomic_load(&e->failed)) {
    pthread_rwlock_unlock(&e->lock);
    goto out;
  }
  ucs_status_ptr_t req = ucp_get_nbx(e->ep, bounced ? op->bounce : dst, len, raddr, rk->rkey, &p);
  pthread_rwlock_unlock(&e->lock);
  if (req == NULL || UCS_PTR_IS_ERR(req)) {
    s = UCS_PTR_STATUS(req);
    goto out;
  }
  rc = wait_until(&op->w, deadline, cancel);
  if (rc != FLX_OK && bounced && abandon(op)) {
    pthread_rwlock_wrlock(&e->lock);
    e->parked = 1;
    atomic_store(&e->failed, 1);
    pthread_rwlock_unlock(&e->lock);
    return rc;
  }
  if (rc != FLX_OK && !bounced) {
    pthread_rwlock_wrlock(&e->lock);
    ep_close_locked(e);
    pthread_rwlock_unlock(&e->lock);
  }
  s = wait_req(req, &op->w);
  if (s == UCS_OK) rc = FLX_OK; /* it finished while we gave up */
  /* A get completes once its bytes are in its buffer: no flush is needed. */
  if (s == UCS_OK && bounced) memcpy(dst, op->bounce, len);
out:
  if (bounced)
    free_op(op);
  else
    wait_fini(&op->w);
  return rc != FLX_OK ? rc : ucx_code(s);
}
