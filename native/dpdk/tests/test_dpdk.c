/* native/dpdk over a net_ring vdev looped back on itself (no NIC, no
 * hugepages, no root): a frame sent comes back on rx intact. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fluxon/dpdk.h"

#define CHECK(c)                                                      \
  do {                                                                \
    if (!(c)) {                                                       \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      return 1;                                                       \
    }                                                                 \
  } while (0)

static uint8_t buf[FLX_DPDK_BURST * FLX_DPDK_SLOT];
static uint8_t rbuf[FLX_DPDK_BURST * FLX_DPDK_SLOT];

int main(void) {
  char prefix[64];
  snprintf(prefix, sizeof prefix, "--file-prefix=flxtest%d", (int)getpid());
  char *argv[] = {"test_dpdk", "--no-huge", "-m", "64", "--no-pci", "--no-shconf", prefix,
                  "--vdev=net_ring0", "-l", "0", "--log-level=lib.eal:error", NULL};
  int argc = (int)(sizeof argv / sizeof argv[0]) - 1;
  CHECK(flx_dpdk_eal_init(0, NULL) == FLX_EINVAL);
  CHECK(flx_dpdk_eal_init(argc, argv) == 0);
  flx_dpdk_port *p = NULL;
  uint8_t mac[6];
  CHECK(flx_dpdk_port_open("no_such_port", 1024, &p, mac) == FLX_ENOTFOUND);
  CHECK(flx_dpdk_port_open("net_ring0", 1024, &p, mac) == 0);
  uint32_t lens[FLX_DPDK_BURST], rlens[FLX_DPDK_BURST];
  for (unsigned i = 0; i < FLX_DPDK_BURST; i++) {
    lens[i] = 60 + i * 40;
    for (uint32_t j = 0; j < lens[i]; j++) buf[i * FLX_DPDK_SLOT + j] = (uint8_t)(i * 31 + j);
  }
  CHECK(flx_dpdk_tx(p, buf, lens, FLX_DPDK_BURST + 1) == FLX_EINVAL);
  int sent = flx_dpdk_tx(p, buf, lens, FLX_DPDK_BURST);
  CHECK(sent == FLX_DPDK_BURST);
  int got = 0;
  for (int tries = 0; got < sent && tries < 1000; tries++) {
    int n = flx_dpdk_rx(p, rbuf + (size_t)got * FLX_DPDK_SLOT, rlens + got, (unsigned)(FLX_DPDK_BURST - got));
    CHECK(n >= 0);
    got += n;
  }
  CHECK(got == sent);
  for (int i = 0; i < got; i++) {
    CHECK(rlens[i] == lens[i]);
    CHECK(memcmp(rbuf + (size_t)i * FLX_DPDK_SLOT, buf + (size_t)i * FLX_DPDK_SLOT, lens[i]) == 0);
  }
  uint64_t in, out, errs;
  CHECK(flx_dpdk_port_stats(p, &in, &out, &errs) == 0);
  CHECK(out == (uint64_t)sent);
  /* idle(0) only yields the core; idle(n) sleeps: both return. */
  flx_dpdk_idle(0);
  flx_dpdk_idle(1);
  flx_dpdk_port_close(p);
  /* A closed vdev port is gone until its device is created again. */
  CHECK(flx_dpdk_port_open("net_ring0", 1024, &p, mac) == FLX_ENOTFOUND);
  CHECK(flx_dpdk_vdev_recreate(NULL, NULL) == FLX_EINVAL);
  CHECK(flx_dpdk_vdev_recreate("net_ring0", "") == 0);
  CHECK(flx_dpdk_port_open("net_ring0", 1024, &p, mac) == 0);
  CHECK(flx_dpdk_tx(p, buf, lens, 1) == 1);
  got = 0;
  for (int tries = 0; got < 1 && tries < 1000; tries++) {
    int n = flx_dpdk_rx(p, rbuf, rlens, FLX_DPDK_BURST);
    CHECK(n >= 0);
    got += n;
  }
  CHECK(got == 1 && rlens[0] == lens[0] && memcmp(rbuf, buf, lens[0]) == 0);
  flx_dpdk_port_close(p);
  CHECK(flx_dpdk_eal_cleanup() == 0);
  printf("test_dpdk: %d frames looped through net_ring0, and one more after it was closed and created again\n", sent);
  return 0;
}
