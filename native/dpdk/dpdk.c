/* See fluxon/dpdk.h. */
#include "fluxon/dpdk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_mempool.h>

#define RX_DESC 1024
#define TX_DESC 1024
#define POOL_CACHE 128

struct flx_dpdk_port {
  uint16_t port_id;
  struct rte_mempool *pool;
};

static int sys_err(int e) {
  errno = e < 0 ? -e : e;
  return FLX_ESYS;
}

int flx_dpdk_eal_init(int argc, char **argv) {
  if (argc < 1 || argv == NULL) return FLX_EINVAL;
  if (rte_eal_init(argc, argv) < 0) return sys_err(rte_errno);
  return 0;
}

int flx_dpdk_eal_cleanup(void) {
  int rc = rte_eal_cleanup();
  return rc < 0 ? sys_err(rc) : 0;
}

/* pool_create is rte_pktmbuf_pool_create with RTE_MEMPOOL_F_NO_IOVA_CONTIG:
 * the mbufs are laid out back to back, none skipped to the next page.
 * net_af_xdp registers the rx pool itself as the socket's UMEM, assuming
 * exactly that layout (UMEM size = mbuf count x object size, from the first
 * mbuf's page); without the flag and without hugepages (--no-huge: 4 KiB
 * pages), each ~2.4 KiB mbuf is placed at the start of a page of its own, so
 * ~40% of them lie past the UMEM's end. The kernel skips every tx or fill
 * descriptor that points at one (counted only in its XDP_STATISTICS): the
 * frame is lost, the mbuf never comes back, and once the fill ring holds no
 * usable entry the port receives nothing. No port here DMAs from the pool,
 * so IOVA-contiguous objects buy nothing. */
static struct rte_mempool *pool_create(const char *name, unsigned n, int socket) {
  struct rte_pktmbuf_pool_private priv;
  memset(&priv, 0, sizeof priv);
  priv.mbuf_data_room_size = RTE_MBUF_DEFAULT_BUF_SIZE;
  struct rte_mempool *mp =
      rte_mempool_create_empty(name, n, sizeof(struct rte_mbuf) + RTE_MBUF_DEFAULT_BUF_SIZE, POOL_CACHE,
                               sizeof(struct rte_pktmbuf_pool_private), socket, RTE_MEMPOOL_F_NO_IOVA_CONTIG);
  if (mp == NULL) return NULL;
  int rc = rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL);
  if (rc == 0) {
    rte_pktmbuf_pool_init(mp, &priv);
    rc = rte_mempool_populate_default(mp);
  }
  if (rc < 0) {
    rte_mempool_free(mp);
    rte_errno = -rc;
    return NULL;
  }
  rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
  return mp;
}

int flx_dpdk_port_open(const char *name, unsigned nb_mbufs, flx_dpdk_port **out, uint8_t mac[6]) {
  if (name == NULL || out == NULL || mac == NULL || nb_mbufs == 0) return FLX_EINVAL;
  uint16_t pid;
  int rc = rte_eth_dev_get_port_by_name(name, &pid);
  if (rc < 0) return FLX_ENOTFOUND;
  flx_dpdk_port *p = calloc(1, sizeof *p);
  if (p == NULL) return FLX_ENOMEM;
  p->port_id = pid;
  char pool_name[RTE_MEMPOOL_NAMESIZE];
  snprintf(pool_name, sizeof pool_name, "flx_pool_%u", (unsigned)pid);
  p->pool = pool_create(pool_name, nb_mbufs, (int)rte_socket_id());
  if (p->pool == NULL) {
    rc = sys_err(rte_errno);
    goto fail;
  }
  struct rte_eth_conf conf;
  memset(&conf, 0, sizeof conf);
  if ((rc = rte_eth_dev_configure(pid, 1, 1, &conf)) < 0) goto fail_sys;
  /* net_af_xdp takes the pool as its UMEM only when it is one run of
   * memory (see pool_create); otherwise it would lose frames silently. */
  struct rte_eth_dev_info info;
  if ((rc = rte_eth_dev_info_get(pid, &info)) < 0) goto fail_sys;
  if (info.driver_name != NULL && strcmp(info.driver_name, "net_af_xdp") == 0 && p->pool->nb_mem_chunks != 1) {
    rc = sys_err(EINVAL);
    goto fail;
  }
  uint16_t nrx = RX_DESC, ntx = TX_DESC;
  if ((rc = rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nrx, &ntx)) < 0) goto fail_sys;
  int sock = rte_eth_dev_socket_id(pid);
  if (sock < 0) sock = 0;
  if ((rc = rte_eth_rx_queue_setup(pid, 0, nrx, (unsigned)sock, NULL, p->pool)) < 0) goto fail_sys;
  if ((rc = rte_eth_tx_queue_setup(pid, 0, ntx, (unsigned)sock, NULL)) < 0) goto fail_sys;
  if ((rc = rte_eth_dev_start(pid)) < 0) goto fail_sys;
  /* Frames for other MACs are dropped in Go; promiscuous mode is not
   * needed over a veth, and a PMD that lacks it fails harmlessly. */
  struct rte_ether_addr a;
  if ((rc = rte_eth_macaddr_get(pid, &a)) < 0) {
    rte_eth_dev_stop(pid);
    goto fail_sys;
  }
  memcpy(mac, a.addr_bytes, 6);
  *out = p;
  return 0;
fail_sys:
  rc = sys_err(rc);
fail:
  if (p->pool != NULL) rte_mempool_free(p->pool);
  free(p);
  return rc;
}

int flx_dpdk_rx(flx_dpdk_port *p, uint8_t *buf, uint32_t *lens, unsigned max) {
  if (p == NULL || buf == NULL || lens == NULL) return FLX_EINVAL;
  if (max > FLX_DPDK_BURST) max = FLX_DPDK_BURST;
  struct rte_mbuf *m[FLX_DPDK_BURST];
  uint16_t n = rte_eth_rx_burst(p->port_id, 0, m, (uint16_t)max);
  for (uint16_t i = 0; i < n; i++) {
    uint32_t len = rte_pktmbuf_pkt_len(m[i]);
    if (len > FLX_DPDK_SLOT) len = FLX_DPDK_SLOT;
    /* A multi-segment mbuf is copied segment by segment. */
    const void *src = rte_pktmbuf_read(m[i], 0, len, buf + (size_t)i * FLX_DPDK_SLOT);
    if (src != buf + (size_t)i * FLX_DPDK_SLOT) memcpy(buf + (size_t)i * FLX_DPDK_SLOT, src, len);
    lens[i] = len;
    rte_pktmbuf_free(m[i]);
  }
  return n;
}

int flx_dpdk_tx(flx_dpdk_port *p, const uint8_t *buf, const uint32_t *lens, unsigned n) {
  if (p == NULL || buf == NULL || lens == NULL || n > FLX_DPDK_BURST) return FLX_EINVAL;
  struct rte_mbuf *m[FLX_DPDK_BURST];
  if (n == 0) return 0;
  if (rte_pktmbuf_alloc_bulk(p->pool, m, n) != 0) return 0; /* pool empty: dropped */
  for (unsigned i = 0; i < n; i++) {
    uint32_t len = lens[i] > FLX_DPDK_SLOT ? FLX_DPDK_SLOT : lens[i];
    char *dst = rte_pktmbuf_append(m[i], (uint16_t)len);
    if (dst == NULL) {
      rte_pktmbuf_free_bulk(m, n);
      return FLX_ETOOBIG;
    }
    memcpy(dst, buf + (size_t)i * FLX_DPDK_SLOT, len);
  }
  uint16_t sent = rte_eth_tx_burst(p->port_id, 0, m, (uint16_t)n);
  if (sent < n) rte_pktmbuf_free_bulk(m + sent, n - sent);
  return sent;
}

int flx_dpdk_port_stats(flx_dpdk_port *p, uint64_t *ipackets, uint64_t *opackets, uint64_t *errors) {
  if (p == NULL) return FLX_EINVAL;
  struct rte_eth_stats s;
  int rc = rte_eth_stats_get(p->port_id, &s);
  if (rc < 0) return sys_err(rc);
  *ipackets = s.ipackets;
  *opackets = s.opackets;
  *errors = s.ierrors + s.oerrors + s.imissed + s.rx_nombuf;
  return 0;
}

int flx_dpdk_vdev_recreate(const char *name, const char *args) {
  if (name == NULL) return FLX_EINVAL;
  /* The device of a port closed earlier is still on the vdev bus, with no
   * ethdev: take it off (an error only means it is not there), then
   * create it afresh, as --vdev did at EAL init. */
  (void)rte_eal_hotplug_remove("vdev", name);
  int rc = rte_eal_hotplug_add("vdev", name, args != NULL ? args : "");
  return rc < 0 ? sys_err(rc) : 0;
}

void flx_dpdk_port_close(flx_dpdk_port *p) {
  if (p == NULL) return;
  rte_eth_dev_stop(p->port_id);
  rte_eth_dev_close(p->port_id);
  rte_mempool_free(p->pool);
  free(p);
}

void flx_dpdk_idle(unsigned us) {
  if (us == 0) {
    sched_yield();
    return;
  }
  struct timespec ts = {.tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000L};
  nanosleep(&ts, NULL);
}

