/* One-sided get between two UCX nodes (context + worker each) in one process.
 * ctest runs it once per UCX_TLS setting (tcp; sm,self). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxon/ucx.h"

#include <ucs/type/status.h>

static int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)
#define CHECK_RC(expr)                                                                        \
  do {                                                                                        \
    int rc_ = (expr);                                                                         \
    if (rc_ != FLX_OK) {                                                                      \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, flx_ucx_strerror(rc_)); \
      failures++;                                                                             \
    }                                                                                         \
  } while (0)

enum { REGION = 8 << 20 };

int main(void) {
  const char *tls = getenv("UCX_TLS");
  flx_ucx_node *owner = NULL, *reader = NULL;
  int rc = flx_ucx_node_open(&owner);
  if (rc != FLX_OK) {
    fprintf(stderr, "node_open (UCX_TLS=%s): %s\n", tls ? tls : "", flx_ucx_strerror(rc));
    return 1;
  }
  CHECK_RC(flx_ucx_node_open(&reader));

  /* The owner's region, mapped, its rkey packed as it travels to a peer. */
  unsigned char *region = malloc(REGION);
  for (size_t i = 0; i < REGION; i++) region[i] = (unsigned char)(i * 131 + 7);
  flx_ucx_mem *mem = NULL;
  CHECK_RC(flx_ucx_mem_map(owner, region, REGION, &mem));
  unsigned char rkey[4096];
  size_t rkey_len = 0;
  CHECK(flx_ucx_mem_rkey(mem, rkey, 1, &rkey_len) == FLX_ETOOBIG && rkey_len > 1);
  CHECK_RC(flx_ucx_mem_rkey(mem, rkey, sizeof(rkey), &rkey_len));

  unsigned char addr[8192];
  size_t addr_len = 0;
  CHECK(flx_ucx_node_address(owner, addr, 0, &addr_len) == FLX_ETOOBIG && addr_len > 0);
  CHECK_RC(flx_ucx_node_address(owner, addr, sizeof(addr), &addr_len));

  flx_ucx_ep *ep = NULL;
  CHECK_RC(flx_ucx_ep_open(reader, addr, addr_len, &ep));
  flx_ucx_rkey *rk = NULL;
  CHECK_RC(flx_ucx_rkey_unpack(ep, rkey, rkey_len, &rk));
  if (failures) return 1;

  static const struct { size_t off, len; } reads[] = {
      {0, 0}, {0, 1}, {5, 4095}, {4096, 65536}, {3, 1 << 20}, {0, REGION}, {REGION - 1, 1}};
  unsigned char *dst = malloc(REGION);
  for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
    memset(dst, 0, REGION);
    CHECK_RC(flx_ucx_get(ep, rk, (uint64_t)(uintptr_t)(region + reads[i].off), dst, reads[i].len));
    CHECK(memcmp(dst, region + reads[i].off, reads[i].len) == 0);
    CHECK(reads[i].len == REGION || dst[reads[i].len] == 0); /* nothing past len */
  }
  CHECK(flx_ucx_get(ep, rk, 0, NULL, 10) == FLX_EINVAL);
  CHECK(strcmp(flx_ucx_strerror(FLX_UCX_STATUS_BASE + UCS_ERR_NO_MEMORY), "Out of memory") == 0);

  flx_ucx_rkey_destroy(rk);
  flx_ucx_ep_close(ep);
  flx_ucx_mem_unmap(mem);
  flx_ucx_node_close(reader);
  flx_ucx_node_close(owner);
  free(dst);
  free(region);
  if (failures) return 1;
  printf("test_ucx (UCX_TLS=%s): ok\n", tls ? tls : "");
  return 0;
}
