/* Fluxon RDMA: thin wrappers over rdma-core's libibverbs for the rdma transport.
 *
 * Built only where libibverbs is found (CMake: find_library; Go: the `rdma` build
 * tag). Everything returns 0 or a negative FLX_E* code (fluxon/core.h); where a verbs
 * call failed the code is FLX_ESYS and errno holds the reason, except:
 *   FLX_ENODEV  ibv_get_device_list failed with ENOSYS (no RDMA subsystem in this
 *               kernel or container), returned no devices, or the named device is
 *               absent. Callers report "no RDMA device" and fall back.
 *
 * Objects and ownership
 * ---------------------
 * - flx_rdma_ctx: one opened device + protection domain + one completion queue with a
 *   completion channel. Created by flx_rdma_open, freed by flx_rdma_close, which the
 *   caller calls after every QP and MR of the context is destroyed.
 * - flx_rdma_mr: a registered memory region. The memory (`addr`, `len`) belongs to the
 *   caller and must stay mapped until flx_rdma_dereg; Fluxon registers pool segments
 *   (mmap'd shared memory) and C-allocated bounce buffers, never Go-heap memory.
 * - flx_rdma_qp: one RC queue pair on the context's CQ. flx_rdma_qp_destroy frees it.
 * - Buffers named in posted work requests must stay registered and untouched until
 *   their completion is polled.
 *
 * Threading: a context's CQ is polled by one thread at a time (flx_rdma_poll); posts
 * to one QP are serialized by the caller. Different QPs may be posted concurrently.
 */
#ifndef FLUXON_RDMA_H
#define FLUXON_RDMA_H

#include <stddef.h>
#include <stdint.h>

#include "fluxon/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLX_RDMA_NAME_MAX 64

/* What flx_rdma_devices reports about one device (port 1 when it has several). */
typedef struct flx_rdma_dev_info {
  char name[FLX_RDMA_NAME_MAX];
  uint64_t node_guid;   /* network byte order, as ibverbs reports it */
  uint32_t max_qp_wr;   /* deepest send/recv queue the device allows */
  uint32_t max_cqe;
  uint32_t phys_port_cnt;
  uint32_t port_state;  /* enum ibv_port_state of port 1 (4 == ACTIVE) */
  uint32_t link_layer;  /* IBV_LINK_LAYER_* of port 1 (1 IB, 2 Ethernet/RoCE) */
} flx_rdma_dev_info;

/* Fills up to `max` entries of `out` and sets *count to the number of devices.
 * FLX_ENODEV when there are none (or no RDMA subsystem: ENOSYS). */
int flx_rdma_devices(flx_rdma_dev_info *out, int max, int *count);

typedef struct flx_rdma_ctx flx_rdma_ctx;
typedef struct flx_rdma_mr flx_rdma_mr;
typedef struct flx_rdma_qp flx_rdma_qp;

/* Opens device `name` (NULL: the first one), port `port` (1-based), with a CQ of
 * `cq_depth` entries and a completion channel. */
int flx_rdma_open(const char *name, uint8_t port, int cq_depth, flx_rdma_ctx **out);
void flx_rdma_close(flx_rdma_ctx *ctx);

/* Registers [addr, addr+len) for local write and, when `remote` is non-zero, remote
 * read and write. */
int flx_rdma_reg(flx_rdma_ctx *ctx, void *addr, size_t len, int remote, flx_rdma_mr **out);
int flx_rdma_dereg(flx_rdma_mr *mr);
uint32_t flx_rdma_mr_lkey(const flx_rdma_mr *mr);
uint32_t flx_rdma_mr_rkey(const flx_rdma_mr *mr);

/* One side of an RC connection, exchanged over the control channel. gid is all zero
 * on InfiniBand without a GRH; mtu is an enum ibv_mtu value (1 = 256 ... 5 = 4096). */
typedef struct flx_rdma_addr {
  uint16_t lid;
  uint8_t port;
  uint8_t mtu;
  uint8_t gid[16];
  uint32_t gid_index;
  uint32_t qpn; /* 24 bits */
  uint32_t psn; /* 24 bits */
  /* RDMA READs this side serves at once as their target (its QP's
   * max_dest_rd_atomic), 1..FLX_RDMA_MAX_RD_ATOMIC: the device's limit,
   * capped. The peer keeps at most that many in flight to it. */
  uint8_t rd_atomic;
} flx_rdma_addr;

/* Caps the RDMA READs in flight on one QP, either way. */
#define FLX_RDMA_MAX_RD_ATOMIC 16

int flx_rdma_qp_create(flx_rdma_ctx *ctx, uint32_t max_send_wr, uint32_t max_recv_wr,
                       flx_rdma_qp **out);
int flx_rdma_qp_destroy(flx_rdma_qp *qp);
/* This QP's address record, with `psn` as its initial send PSN and the port's
 * active MTU and GID at `gid_index`. */
int flx_rdma_qp_local(flx_rdma_qp *qp, uint32_t gid_index, uint32_t psn, flx_rdma_addr *out);
/* RESET -> INIT -> RTR (to `peer`) -> RTS; `local_psn` as in flx_rdma_qp_local.
 * The path MTU is the smaller of the two sides'. The QP serves local->rd_atomic
 * READs at once and keeps up to the smaller of the device's initiator limit and
 * peer->rd_atomic in flight (a peer's 0, from an old record, counts as 1). */
int flx_rdma_qp_connect(flx_rdma_qp *qp, const flx_rdma_addr *local, const flx_rdma_addr *peer);

/* Work requests. `signaled` asks for a completion on the send CQ (unsignaled sends
 * still take a slot until a later signaled one completes). */
int flx_rdma_post_send(flx_rdma_qp *qp, uint64_t wr_id, const flx_rdma_mr *mr, void *addr,
                       uint32_t len, int signaled);
int flx_rdma_post_recv(flx_rdma_qp *qp, uint64_t wr_id, const flx_rdma_mr *mr, void *addr,
                       uint32_t len);
/* One-sided READ (write == 0: remote -> local) or WRITE (remote <- local). */
int flx_rdma_post_rw(flx_rdma_qp *qp, int write, uint64_t wr_id, const flx_rdma_mr *mr,
                     void *addr, uint32_t len, uint64_t raddr, uint32_t rkey, int signaled);

/* One completion. status is enum ibv_wc_status (0 success); opcode enum ibv_wc_opcode. */
typedef struct flx_rdma_wc {
  uint64_t wr_id;
  uint32_t status;
  uint32_t opcode;
  uint32_t vendor_err;
  uint32_t byte_len;
  uint32_t qp_num;
  uint32_t pad;
} flx_rdma_wc;

/* Polls the context's CQ: spins up to `spin` empty polls, then arms the CQ and
 * waits on the completion channel for at most `timeout_ms` (-1: forever; 0: never
 * sleeps). Sets *n to the completions written (up to max); FLX_EAGAIN on timeout. */
int flx_rdma_poll(flx_rdma_ctx *ctx, flx_rdma_wc *wcs, int max, uint32_t spin, int timeout_ms,
                  int *n);

#ifdef __cplusplus
}
#endif
#endif
