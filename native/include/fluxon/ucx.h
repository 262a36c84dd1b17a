/* Fluxon UCX module: one-sided reads of a peer's memory over UCX (UCP).
 *
 * A node is one UCP context and one worker, with a progress thread that
 * spins on ucp_worker_progress for a bounded time (FLX_UCX_SPIN_NS) and then
 * sleeps on the worker's event fd, so an idle node costs no CPU. The worker
 * runs in UCS_THREAD_MODE_MULTI: every function below may be called from any
 * thread, concurrently with the progress thread.
 *
 * Which UCX transports are used comes from the environment (UCX_TLS, e.g.
 * "tcp", "sm,self", "rc,ud,sm,self"), read once by flx_ucx_node_open.
 *
 * Errors: every function returns 0 or a negative code. Codes above
 * FLX_UCX_STATUS_BASE are FLX_E* codes (fluxon/core.h); a code at or below
 * it is FLX_UCX_STATUS_BASE + a ucs_status_t (UCX's own negative status),
 * which flx_ucx_strerror names.
 *
 * Ownership: handles belong to the caller until their close/destroy call.
 * flx_ucx_mem_map keeps using the caller's buffer until flx_ucx_mem_unmap
 * (the caller must keep it allocated and in place). flx_ucx_get writes dst
 * only while it runs. An ep, mem or rkey must be released before its node.
 */
#ifndef FLUXON_UCX_H
#define FLUXON_UCX_H

#include <stddef.h>
#include <stdint.h>

#include "fluxon/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLX_UCX_STATUS_BASE (-1000)
/* The progress thread's spin before it sleeps on the event fd. */
#define FLX_UCX_SPIN_NS 20000

typedef struct flx_ucx_node flx_ucx_node;
typedef struct flx_ucx_ep flx_ucx_ep;
typedef struct flx_ucx_mem flx_ucx_mem;
typedef struct flx_ucx_rkey flx_ucx_rkey;

/* Names a code returned by this module (an FLX_E* or a UCX status). Static. */
const char *flx_ucx_strerror(int code);

/* Opens a context + worker + progress thread. */
int flx_ucx_node_open(flx_ucx_node **out);
/* Stops the progress thread and frees the node. NULL is a no-op. */
void flx_ucx_node_close(flx_ucx_node *n);
/* Copies the worker's address (what a peer passes to flx_ucx_ep_open) into
 * buf; *len gets its size. FLX_ETOOBIG (and *len) when cap is too small. */
int flx_ucx_node_address(flx_ucx_node *n, void *buf, size_t cap, size_t *len);

/* Connects to the worker whose address is addr. Where the transports can
 * detect a dead peer (tcp, rdma), its failure fails the ep's operations with
 * a UCX status; over shared memory alone (UCX 1.13) they cannot, and a read
 * from a peer that died mid-read waits for the caller to close the ep. */
int flx_ucx_ep_open(flx_ucx_node *n, const void *addr, size_t len, flx_ucx_ep **out);
/* Closes the ep (unless a get closed it) and frees it. No get may be in
 * flight on it. */
void flx_ucx_ep_close(flx_ucx_ep *ep);

/* Maps [addr, addr+len) for remote access and returns a handle. */
int flx_ucx_mem_map(flx_ucx_node *n, void *addr, size_t len, flx_ucx_mem **out);
/* Packs the mapping's rkey into buf; *len as for flx_ucx_node_address. */
int flx_ucx_mem_rkey(flx_ucx_mem *m, void *buf, size_t cap, size_t *len);
void flx_ucx_mem_unmap(flx_ucx_mem *m);

/* Unpacks a peer's packed rkey for use on ep. */
int flx_ucx_rkey_unpack(flx_ucx_ep *ep, const void *buf, size_t len, flx_ucx_rkey **out);
void flx_ucx_rkey_destroy(flx_ucx_rkey *rk);

/* Reads len bytes at the peer's address raddr (inside the mapping rk came
 * from) into dst, and waits until they are there, the read failed, the
 * timeout passed (timeout_ns; 0: none) or *cancel became nonzero (cancel
 * may be NULL; it is read atomically about every millisecond). dst needs no
 * mapping: UCX registers or bounces it as its transport needs.
 *
 * UCX cannot cancel a get, so a get that gives up (FLX_ETIMEDOUT,
 * FLX_ECANCELED) closes the ep, forced where the ep has peer error
 * handling, and waits for UCX to complete the get with an error: dst is
 * never written after this returns. The ep's other gets fail with it, and
 * so do later ones; the caller closes the ep and opens a new one. */
int flx_ucx_get(flx_ucx_ep *ep, flx_ucx_rkey *rk, uint64_t raddr, void *dst, size_t len, uint64_t timeout_ns,
                const int *cancel);

#ifdef __cplusplus
}
#endif
#endif
