/* libibverbs wrappers; see fluxon/rdma.h. Paths that need a device are exercised by
 * native/tests/test_rdma.c's loopback (scripts/rdma-device-check.sh) only on a host
 * that has one. */
#include "fluxon/rdma.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <infiniband/verbs.h>

struct flx_rdma_ctx {
  struct ibv_context *dev;
  struct ibv_pd *pd;
  struct ibv_comp_channel *chan;
  struct ibv_cq *cq;
  uint8_t port;
  int armed; /* the CQ is armed and its event not yet consumed */
  /* RDMA READs a QP serves at once (responder) and issues at once
   * (initiator): the device's limits, 1..FLX_RDMA_MAX_RD_ATOMIC. */
  uint8_t rd_atom, init_rd_atom;
};

static uint8_t clamp_rd_atomic(int n) {
  if (n < 1) return 1;
  return n > FLX_RDMA_MAX_RD_ATOMIC ? FLX_RDMA_MAX_RD_ATOMIC : (uint8_t)n;
}

struct flx_rdma_mr {
  struct ibv_mr *mr;
};

struct flx_rdma_qp {
  flx_rdma_ctx *ctx;
  struct ibv_qp *qp;
};

/* A failed verbs call: keep errno for the Go side (verbs return an errno value
 * instead of setting it in some calls; `rc` carries that). */
static int sys_fail(int rc) {
  if (rc > 0) errno = rc;
  if (errno == 0) errno = EIO;
  return FLX_ESYS;
}

/* Opens the device list; ENOSYS (no RDMA in the kernel/container) and an empty list
 * both mean "no device". */
static int get_list(struct ibv_device ***list, int *n) {
  errno = 0;
  *list = ibv_get_device_list(n);
  if (*list == NULL) {
    if (errno == ENOSYS || errno == ENODEV || errno == ENOENT || errno == 0) return FLX_ENODEV;
    return FLX_ESYS;
  }
  if (*n <= 0) {
    ibv_free_device_list(*list);
    *list = NULL;
    return FLX_ENODEV;
  }
  return FLX_OK;
}

int flx_rdma_devices(flx_rdma_dev_info *out, int max, int *count) {
  if (count == NULL || max < 0 || (max > 0 && out == NULL)) return FLX_EINVAL;
  *count = 0;
  struct ibv_device **list;
  int n = 0;
  int rc = get_list(&list, &n);
  if (rc != FLX_OK) return rc;
  *count = n;
  for (int i = 0; i < n && i < max; i++) {
    flx_rdma_dev_info *d = &out[i];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", ibv_get_device_name(list[i]));
    d->node_guid = ibv_get_device_guid(list[i]);
    struct ibv_context *c = ibv_open_device(list[i]);
    if (c == NULL) continue; /* listed but unusable: report the name only */
    struct ibv_device_attr attr;
    if (ibv_query_device(c, &attr) == 0) {
      d->max_qp_wr = (uint32_t)attr.max_qp_wr;
      d->max_cqe = (uint32_t)attr.max_cqe;
      d->phys_port_cnt = attr.phys_port_cnt;
    }
    struct ibv_port_attr pa;
    if (ibv_query_port(c, 1, &pa) == 0) {
      d->port_state = pa.state;
      d->link_layer = pa.link_layer;
    }
    ibv_close_device(c);
  }
  ibv_free_device_list(list);
  return FLX_OK;
}

int flx_rdma_open(const char *name, uint8_t port, int cq_depth, flx_rdma_ctx **out) {
  if (out == NULL || port == 0 || cq_depth <= 0) return FLX_EINVAL;
  *out = NULL;
  struct ibv_device **list;
  int n = 0;
  int rc = get_list(&list, &n);
  if (rc != FLX_OK) return rc;
  struct ibv_device *dev = NULL;
  for (int i = 0; i < n; i++) {
    if (name == NULL || strcmp(ibv_get_device_name(list[i]), name) == 0) {
      dev = list[i];
      break;
    }
  }
  if (dev == NULL) {
    ibv_free_device_list(list);
    return FLX_ENODEV;
  }
  flx_rdma_ctx *c = calloc(1, sizeof *c);
  if (c == NULL) {
    ibv_free_device_list(list);
    return sys_fail(ENOMEM);
  }
  c->port = port;
  c->dev = ibv_open_device(dev);
  ibv_free_device_list(list);
  if (c->dev == NULL) goto fail;
  if ((c->pd = ibv_alloc_pd(c->dev)) == NULL) goto fail;
  if ((c->chan = ibv_create_comp_channel(c->dev)) == NULL) goto fail;
  if ((c->cq = ibv_create_cq(c->dev, cq_depth, NULL, c->chan, 0)) == NULL) goto fail;
  struct ibv_device_attr attr;
  memset(&attr, 0, sizeof attr);
  if (ibv_query_device(c->dev, &attr) != 0) memset(&attr, 0, sizeof attr); /* depth 1 then */
  c->rd_atom = clamp_rd_atomic(attr.max_qp_rd_atom);
  c->init_rd_atom = clamp_rd_atomic(attr.max_qp_init_rd_atom);
  *out = c;
  return FLX_OK;
fail:
  rc = sys_fail(0);
  int saved = errno;
  flx_rdma_close(c);
  errno = saved;
  return rc;
}

void flx_rdma_close(flx_rdma_ctx *c) {
  if (c == NULL) return;
  if (c->armed && c->cq != NULL) {
    /* An armed CQ may have an event pending; ack it so destroy does not block. */
    struct pollfd p = {.fd = c->chan->fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 1) {
      struct ibv_cq *ev_cq;
      void *ev_ctx;
      if (ibv_get_cq_event(c->chan, &ev_cq, &ev_ctx) == 0) ibv_ack_cq_events(ev_cq, 1);
    }
  }
  if (c->cq) ibv_destroy_cq(c->cq);
  if (c->chan) ibv_destroy_comp_channel(c->chan);
  if (c->pd) ibv_dealloc_pd(c->pd);
  if (c->dev) ibv_close_device(c->dev);
  free(c);
}

int flx_rdma_reg(flx_rdma_ctx *c, void *addr, size_t len, int remote, flx_rdma_mr **out) {
  if (c == NULL || addr == NULL || len == 0 || out == NULL) return FLX_EINVAL;
  int access = IBV_ACCESS_LOCAL_WRITE;
  if (remote) access |= IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
  flx_rdma_mr *m = calloc(1, sizeof *m);
  if (m == NULL) return sys_fail(ENOMEM);
  m->mr = ibv_reg_mr(c->pd, addr, len, access);
  if (m->mr == NULL) {
    int rc = sys_fail(0), saved = errno;
    free(m);
    errno = saved;
    return rc;
  }
  *out = m;
  return FLX_OK;
}

int flx_rdma_dereg(flx_rdma_mr *m) {
  if (m == NULL) return FLX_EINVAL;
  int rc = ibv_dereg_mr(m->mr);
  if (rc != 0) return sys_fail(rc);
  free(m);
  return FLX_OK;
}

uint32_t flx_rdma_mr_lkey(const flx_rdma_mr *m) { return m->mr->lkey; }
uint32_t flx_rdma_mr_rkey(const flx_rdma_mr *m) { return m->mr->rkey; }

int flx_rdma_qp_create(flx_rdma_ctx *c, uint32_t max_send_wr, uint32_t max_recv_wr,
                       flx_rdma_qp **out) {
  if (c == NULL || out == NULL || max_send_wr == 0 || max_recv_wr == 0) return FLX_EINVAL;
  struct ibv_qp_init_attr ia;
  memset(&ia, 0, sizeof ia);
  ia.send_cq = c->cq;
  ia.recv_cq = c->cq;
  ia.qp_type = IBV_QPT_RC;
  ia.sq_sig_all = 0;
  ia.cap.max_send_wr = max_send_wr;
  ia.cap.max_recv_wr = max_recv_wr;
  ia.cap.max_send_sge = 1;
  ia.cap.max_recv_sge = 1;
  flx_rdma_qp *q = calloc(1, sizeof *q);
  if (q == NULL) return sys_fail(ENOMEM);
  q->ctx = c;
  q->qp = ibv_create_qp(c->pd, &ia);
  if (q->qp == NULL) {
    int rc = sys_fail(0), saved = errno;
    free(q);
    errno = saved;
    return rc;
  }
  *out = q;
  return FLX_OK;
}

int flx_rdma_qp_destroy(flx_rdma_qp *q) {
  if (q == NULL) return FLX_EINVAL;
  int rc = ibv_destroy_qp(q->qp);
  if (rc != 0) return sys_fail(rc);
  free(q);
  return FLX_OK;
}

int flx_rdma_qp_local(flx_rdma_qp *q, uint32_t gid_index, uint32_t psn, flx_rdma_addr *out) {
  if (q == NULL || out == NULL || psn > 0xffffff) return FLX_EINVAL;
  struct ibv_port_attr pa;
  int rc = ibv_query_port(q->ctx->dev, q->ctx->port, &pa);
  if (rc != 0) return sys_fail(rc);
  memset(out, 0, sizeof *out);
  out->lid = pa.lid;
  out->port = q->ctx->port;
  out->mtu = (uint8_t)pa.active_mtu;
  out->gid_index = gid_index;
  out->qpn = q->qp->qp_num;
  out->psn = psn;
  out->rd_atomic = q->ctx->rd_atom;
  union ibv_gid gid;
  memset(&gid, 0, sizeof gid);
  /* RoCE needs a GID; InfiniBand works without one (a failing query leaves it 0). */
  if (pa.link_layer == IBV_LINK_LAYER_ETHERNET) {
    rc = ibv_query_gid(q->ctx->dev, q->ctx->port, (int)gid_index, &gid);
    if (rc != 0) return sys_fail(rc);
  }
  memcpy(out->gid, gid.raw, sizeof out->gid);
  return FLX_OK;
}

static int gid_is_zero(const uint8_t *g) {
  for (int i = 0; i < 16; i++)
    if (g[i]) return 0;
  return 1;
}

int flx_rdma_qp_connect(flx_rdma_qp *q, const flx_rdma_addr *local, const flx_rdma_addr *peer) {
  if (q == NULL || local == NULL || peer == NULL || peer->qpn > 0xffffff ||
      peer->psn > 0xffffff || peer->mtu < IBV_MTU_256 || peer->mtu > IBV_MTU_4096)
    return FLX_EINVAL;
  struct ibv_qp_attr a;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_INIT;
  a.pkey_index = 0;
  a.port_num = q->ctx->port;
  a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
  int rc = ibv_modify_qp(q->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
  if (rc != 0) return sys_fail(rc);

  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = (enum ibv_mtu)(local->mtu < peer->mtu ? local->mtu : peer->mtu);
  a.dest_qp_num = peer->qpn;
  a.rq_psn = peer->psn;
  a.max_dest_rd_atomic = clamp_rd_atomic(local->rd_atomic);
  a.min_rnr_timer = 12;
  a.ah_attr.dlid = peer->lid;
  a.ah_attr.sl = 0;
  a.ah_attr.src_path_bits = 0;
  a.ah_attr.port_num = q->ctx->port;
  if (!gid_is_zero(peer->gid)) {
    a.ah_attr.is_global = 1;
    memcpy(a.ah_attr.grh.dgid.raw, peer->gid, 16);
    a.ah_attr.grh.sgid_index = (uint8_t)local->gid_index;
    a.ah_attr.grh.hop_limit = 1;
  }
  rc = ibv_modify_qp(q->qp, &a,
                     IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                         IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  if (rc != 0) return sys_fail(rc);

  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 14;   /* 4.096us * 2^14 ~ 67ms per retry */
  a.retry_cnt = 7;
  a.rnr_retry = 7;  /* infinite: the peer reposts receives */
  a.sq_psn = local->psn;
  uint8_t peer_depth = clamp_rd_atomic(peer->rd_atomic);
  a.max_rd_atomic = q->ctx->init_rd_atom < peer_depth ? q->ctx->init_rd_atom : peer_depth;
  rc = ibv_modify_qp(q->qp, &a,
                     IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                         IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
  if (rc != 0) return sys_fail(rc);
  return FLX_OK;
}

static int post(flx_rdma_qp *q, struct ibv_send_wr *wr) {
  struct ibv_send_wr *bad = NULL;
  int rc = ibv_post_send(q->qp, wr, &bad);
  if (rc != 0) return rc == ENOMEM ? FLX_EAGAIN : sys_fail(rc);
  return FLX_OK;
}

int flx_rdma_post_send(flx_rdma_qp *q, uint64_t wr_id, const flx_rdma_mr *m, void *addr,
                       uint32_t len, int signaled) {
  if (q == NULL || m == NULL || addr == NULL) return FLX_EINVAL;
  struct ibv_sge sge = {.addr = (uintptr_t)addr, .length = len, .lkey = m->mr->lkey};
  struct ibv_send_wr wr;
  memset(&wr, 0, sizeof wr);
  wr.wr_id = wr_id;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = signaled ? IBV_SEND_SIGNALED : 0;
  return post(q, &wr);
}

int flx_rdma_post_recv(flx_rdma_qp *q, uint64_t wr_id, const flx_rdma_mr *m, void *addr,
                       uint32_t len) {
  if (q == NULL || m == NULL || addr == NULL) return FLX_EINVAL;
  struct ibv_sge sge = {.addr = (uintptr_t)addr, .length = len, .lkey = m->mr->lkey};
  struct ibv_recv_wr wr, *bad = NULL;
  memset(&wr, 0, sizeof wr);
  wr.wr_id = wr_id;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  int rc = ibv_post_recv(q->qp, &wr, &bad);
  if (rc != 0) return rc == ENOMEM ? FLX_EAGAIN : sys_fail(rc);
  return FLX_OK;
}

int flx_rdma_post_rw(flx_rdma_qp *q, int write, uint64_t wr_id, const flx_rdma_mr *m, void *addr,
                     uint32_t len, uint64_t raddr, uint32_t rkey, int signaled) {
  if (q == NULL || m == NULL || addr == NULL) return FLX_EINVAL;
  struct ibv_sge sge = {.addr = (uintptr_t)addr, .length = len, .lkey = m->mr->lkey};
  struct ibv_send_wr wr;
  memset(&wr, 0, sizeof wr);
  wr.wr_id = wr_id;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
  wr.send_flags = signaled ? IBV_SEND_SIGNALED : 0;
  wr.wr.rdma.remote_addr = raddr;
  wr.wr.rdma.rkey = rkey;
  return post(q, &wr);
}

static int drain(flx_rdma_ctx *c, flx_rdma_wc *out, int max) {
  struct ibv_wc wc[16];
  int total = 0;
  while (total < max) {
    int want = max - total < 16 ? max - total : 16;
    int got = ibv_poll_cq(c->cq, want, wc);
    if (got < 0) return sys_fail(EIO);
    for (int i = 0; i < got; i++) {
      flx_rdma_wc *o = &out[total + i];
      o->wr_id = wc[i].wr_id;
      o->status = wc[i].status;
      o->opcode = wc[i].opcode;
      o->vendor_err = wc[i].vendor_err;
      o->byte_len = wc[i].byte_len;
      o->qp_num = wc[i].qp_num;
      o->pad = 0;
    }
    total += got;
    if (got < want) break;
  }
  return total;
}

int flx_rdma_poll(flx_rdma_ctx *c, flx_rdma_wc *wcs, int max, uint32_t spin, int timeout_ms,
                  int *n) {
  if (c == NULL || wcs == NULL || max <= 0 || n == NULL) return FLX_EINVAL;
  *n = 0;
  for (uint32_t i = 0; i <= spin; i++) {
    int got = drain(c, wcs, max);
    if (got < 0) return got;
    if (got > 0) {
      *n = got;
      return FLX_OK;
    }
  }
  if (timeout_ms == 0) return FLX_EAGAIN;
  /* Arm, then poll once more: a completion that landed before arming raises no event. */
  if (!c->armed) {
    int rc = ibv_req_notify_cq(c->cq, 0);
    if (rc != 0) return sys_fail(rc);
    c->armed = 1;
  }
  int got = drain(c, wcs, max);
  if (got != 0) {
    if (got > 0) *n = got;
    return got < 0 ? got : FLX_OK;
  }
  struct pollfd p = {.fd = c->chan->fd, .events = POLLIN};
  int pr = poll(&p, 1, timeout_ms);
  if (pr < 0) return sys_fail(0);
  if (pr == 0) return FLX_EAGAIN;
  struct ibv_cq *ev_cq;
  void *ev_ctx;
  if (ibv_get_cq_event(c->chan, &ev_cq, &ev_ctx) != 0) return sys_fail(0);
  ibv_ack_cq_events(ev_cq, 1);
  c->armed = 0;
  got = drain(c, wcs, max);
  if (got < 0) return got;
  *n = got;
  return got > 0 ? FLX_OK : FLX_EAGAIN;
}
