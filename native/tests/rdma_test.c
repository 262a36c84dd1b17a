/* RDMA tests. Without a device (this is most CI hosts: ibv_get_device_list fails
 * with ENOSYS) it checks that every entry point reports FLX_ENODEV or FLX_EINVAL
 * cleanly and exits 0. With a device it runs a loopback on the first one (or
 * FLX_RDMA_DEVICE): two RC QPs connected to each other, RDMA READ and WRITE of a
 * registered buffer, SEND/RECV, completions through flx_rdma_poll.
 * `rdma_test --require-device` fails instead of passing when there is no device
 * (scripts/rdma-device-check.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxon/rdma.h"

static int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)
#define MUST(call)                                                                      \
  do {                                                                                  \
    int rc_ = (call);                                                                   \
    if (rc_ != FLX_OK) {                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, flx_strerror(rc_)); \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)

static int no_device_checks(void) {
  int count = -1;
  flx_rdma_dev_info info[4];
  CHECK(flx_rdma_devices(NULL, 0, NULL) == FLX_EINVAL);
  CHECK(flx_rdma_devices(NULL, 1, &count) == FLX_EINVAL);
  int rc = flx_rdma_devices(info, 4, &count);
  CHECK(rc == FLX_OK || rc == FLX_ENODEV);
  if (rc == FLX_ENODEV) {
    CHECK(count == 0);
    flx_rdma_ctx *c = (flx_rdma_ctx *)1;
    CHECK(flx_rdma_open(NULL, 1, 16, &c) == FLX_ENODEV);
    CHECK(c == NULL);
    CHECK(flx_rdma_open("mlx5_0", 1, 16, &c) == FLX_ENODEV);
  }
  flx_rdma_ctx *c = NULL;
  CHECK(flx_rdma_open(NULL, 0, 16, &c) == FLX_EINVAL);
  CHECK(flx_rdma_open(NULL, 1, 0, &c) == FLX_EINVAL);
  CHECK(flx_rdma_reg(NULL, info, sizeof info, 1, NULL) == FLX_EINVAL);
  CHECK(flx_rdma_qp_create(NULL, 1, 1, NULL) == FLX_EINVAL);
  flx_rdma_addr a;
  memset(&a, 0, sizeof a);
  CHECK(flx_rdma_qp_connect(NULL, &a, &a) == FLX_EINVAL);
  flx_rdma_wc wc;
  int n;
  CHECK(flx_rdma_poll(NULL, &wc, 1, 0, 0, &n) == FLX_EINVAL);
  flx_rdma_close(NULL);
  CHECK(strstr(flx_strerror(FLX_ENODEV), "FLX_ENODEV") != NULL);
  return rc;
}

/* Waits for one completion with wr_id `id`, failing on any error status. */
static int wait_wc(flx_rdma_ctx *c, uint64_t id) {
  for (int tries = 0; tries < 50; tries++) {
    flx_rdma_wc wc[4];
    int n = 0;
    int rc = flx_rdma_poll(c, wc, 4, 1000, 100, &n);
    if (rc == FLX_EAGAIN) continue;
    if (rc != FLX_OK) return rc;
    for (int i = 0; i < n; i++) {
      if (wc[i].status != 0) {
        fprintf(stderr, "completion %llu: status %u vendor_err %u\n",
                (unsigned long long)wc[i].wr_id, wc[i].status, wc[i].vendor_err);
        return FLX_ESYS;
      }
      if (wc[i].wr_id == id) return FLX_OK;
    }
  }
  fprintf(stderr, "no completion for %llu within 5s\n", (unsigned long long)id);
  return FLX_EAGAIN;
}

static int loopback(const char *dev) {
  enum { N = 1 << 16 };
  flx_rdma_ctx *c;
  MUST(flx_rdma_open(dev, 1, 64, &c));
  char *src = aligned_alloc(4096, N), *dst = aligned_alloc(4096, N);
  if (!src || !dst) return 1;
  for (int i = 0; i < N; i++) src[i] = (char)(i * 7 + 3);
  memset(dst, 0, N);
  flx_rdma_mr *msrc, *mdst;
  MUST(flx_rdma_reg(c, src, N, 1, &msrc));
  MUST(flx_rdma_reg(c, dst, N, 1, &mdst));
  flx_rdma_qp *qa, *qb;
  MUST(flx_rdma_qp_create(c, 16, 16, &qa));
  MUST(flx_rdma_qp_create(c, 16, 16, &qb));
  const char *gi = getenv("FLX_RDMA_GID_INDEX");
  uint32_t gid_index = gi ? (uint32_t)atoi(gi) : 0;
  flx_rdma_addr aa, ab;
  MUST(flx_rdma_qp_local(qa, gid_index, 0x1234, &aa));
  MUST(flx_rdma_qp_local(qb, gid_index, 0x5678, &ab));
  MUST(flx_rdma_qp_connect(qa, &aa, &ab));
  MUST(flx_rdma_qp_connect(qb, &ab, &aa));

  /* READ: qa pulls src (as if remote) into dst. */
  MUST(flx_rdma_post_rw(qa, 0, 1, mdst, dst, N, (uintptr_t)src, flx_rdma_mr_rkey(msrc), 1));
  MUST(wait_wc(c, 1));
  CHECK(memcmp(src, dst, N) == 0);

  /* WRITE: qb pushes the first half of src over dst's second half. */
  MUST(flx_rdma_post_rw(qb, 1, 2, msrc, src, N / 2, (uintptr_t)dst + N / 2, flx_rdma_mr_rkey(mdst), 1));
  MUST(wait_wc(c, 2));
  CHECK(memcmp(dst + N / 2, src, N / 2) == 0);

  /* SEND/RECV: qa sends 64 bytes of src, qb receives them into dst. */
  memset(dst, 0, 64);
  MUST(flx_rdma_post_recv(qb, 3, mdst, dst, 64));
  MUST(flx_rdma_post_send(qa, 4, msrc, src, 64, 1));
  MUST(wait_wc(c, 4));
  MUST(wait_wc(c, 3));
  CHECK(memcmp(dst, src, 64) == 0);

  MUST(flx_rdma_qp_destroy(qa));
  MUST(flx_rdma_qp_destroy(qb));
  MUST(flx_rdma_dereg(msrc));
  MUST(flx_rdma_dereg(mdst));
  flx_rdma_close(c);
  free(src);
  free(dst);
  return 0;
}

int main(int argc, char **argv) {
  int require = argc > 1 && strcmp(argv[1], "--require-device") == 0;
  int rc = no_device_checks();
  if (rc == FLX_ENODEV) {
    printf("rdma_test: no RDMA device on this host; device-free checks %s\n", failures ? "FAILED" : "ok");
    return failures || require ? 1 : 0;
  }
  if (loopback(getenv("FLX_RDMA_DEVICE")) != 0 || failures) {
    printf("rdma_test: loopback FAILED\n");
    return 1;
  }
  printf("rdma_test: loopback ok (READ, WRITE, SEND/RECV)\n");
  return 0;
}
