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
};

struct flx_ucx_ep {
  flx_ucx_node *node;
  ucp_ep_h ep;
  atomic_int failed;
  int peer_errors; /* created with UCP_ERR_HANDLING_MODE_PEER */
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
  free(n);
  return ucx_code(s);
}

void flx_ucx_node_close(flx_ucx_node *n) {
  if (!n) return;
  if (n->efd >= 0) {
    atomic_store_explicit(&n->stop, 1, memory_order_release);
    (void)ucp_worker_signal(n->worker);
    pthread_join(n->thread, NULL);
  }
  ucp_worker_destroy(n->worker);
  ucp_cleanup(n->ctx);
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

void flx_ucx_ep_close(flx_ucx_ep *e) {
  if (!e) return;
  flx_ucx_wait w;
  wait_init(&w);
  ucp_request_param_t p;
  memset(&p, 0, sizeof(p));
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  /* Callers close an ep with nothing in flight, so there is nothing to
   * flush: force the close where UCX allows it (peer error handling), which
   * never waits on a peer that may be dead. */
  p.flags = e->peer_errors ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  p.cb.send = op_done;
  p.user_data = &w;
  ucs_status_t s = wait_req(ucp_ep_close_nbx(e->ep, &p), &w);
  (void)s; /* the ep is gone either way */
  wait_fini(&w);
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

int flx_ucx_get(flx_ucx_ep *e, flx_ucx_rkey *rk, uint64_t raddr, void *dst, size_t len) {
  if (!e || !rk || (!dst && len)) return FLX_EINVAL;
  if (len == 0) return FLX_OK;
  if (atomic_load(&e->failed)) return ucx_code(UCS_ERR_CONNECTION_RESET);
  flx_ucx_wait w;
  wait_init(&w);
  ucp_request_param_t p;
  memset(&p, 0, sizeof(p));
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.send = op_done;
  p.user_data = &w;
  ucs_status_t s = wait_req(ucp_get_nbx(e->ep, dst, len, raddr, rk->rkey, &p), &w);
  /* A get completes once its bytes are in dst: no flush is needed. */
  wait_fini(&w);
  return ucx_code(s);
}
