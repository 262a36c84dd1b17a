/* One-sided get between two UCX nodes (context + worker each) in one process.
 * ctest runs it once per UCX_TLS setting (tcp; sm,self). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int read_full(int fd, void *buf, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* What the peer process sends up its pipe. */
struct peer_info {
  uint64_t region;
  size_t addr_len, rkey_len;
  unsigned char addr[8192], rkey[4096];
};

enum { PEER_REGION = 1 << 20 };

/* The peer: maps a region, says where, then serves until killed. */
static void peer_main(int wfd) {
  flx_ucx_node *n = NULL;
  flx_ucx_mem *m = NULL;
  static struct peer_info pi;
  unsigned char *region = malloc(PEER_REGION);
  memset(region, 0xAB, PEER_REGION);
  if (flx_ucx_node_open(&n) != FLX_OK || flx_ucx_mem_map(n, region, PEER_REGION, &m) != FLX_OK ||
      flx_ucx_mem_rkey(m, pi.rkey, sizeof(pi.rkey), &pi.rkey_len) != FLX_OK ||
      flx_ucx_node_address(n, pi.addr, sizeof(pi.addr), &pi.addr_len) != FLX_OK)
    _exit(2);
  pi.region = (uint64_t)(uintptr_t)region;
  if (write(wfd, &pi, sizeof(pi)) != (ssize_t)sizeof(pi)) _exit(3);
  for (;;) pause();
}

static int cancel_flag;

static void *cancel_later(void *arg) {
  (void)arg;
  usleep(100000);
  __atomic_store_n(&cancel_flag, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* A get from a peer that stopped answering (SIGSTOP) gives up at its
 * deadline or on cancel, closes its ep, and never writes dst afterwards.
 * Both over tcp and over shared memory (UCX 1.13 moves a get of this size
 * through the peer's progress) a stopped peer stalls a get.
 * Runs before this process opens any UCX node (fork). */
static void stalled_peer(void) {
  int pfd[2];
  if (pipe(pfd) != 0) {
    CHECK(0);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    peer_main(pfd[1]);
  }
  close(pfd[1]);
  static struct peer_info pi;
  CHECK(read_full(pfd[0], &pi, sizeof(pi)) == 0);
  close(pfd[0]);
  flx_ucx_node *n = NULL;
  CHECK_RC(flx_ucx_node_open(&n));
  flx_ucx_ep *ep = NULL;
  flx_ucx_rkey *rk = NULL;
  CHECK_RC(flx_ucx_ep_open(n, pi.addr, pi.addr_len, &ep));
  CHECK_RC(flx_ucx_rkey_unpack(ep, pi.rkey, pi.rkey_len, &rk));
  if (failures) goto out;
  unsigned char *dst = malloc(PEER_REGION);
  memset(dst, 0, PEER_REGION);
  CHECK_RC(flx_ucx_get(ep, rk, pi.region, dst, PEER_REGION, 5000000000ull, NULL));
  CHECK(dst[0] == 0xAB && dst[PEER_REGION - 1] == 0xAB);

  /* kill() only queues the signal: wait until the peer has stopped, or it may
   * still answer the get below. */
  kill(pid, SIGSTOP);
  int wst = 0;
  CHECK(waitpid(pid, &wst, WUNTRACED) == pid && WIFSTOPPED(wst));
  memset(dst, 0, PEER_REGION);
  uint64_t t0 = mono_ns();
  CHECK(flx_ucx_get(ep, rk, pi.region, dst, PEER_REGION, 300000000ull, NULL) == FLX_ETIMEDOUT);
  uint64_t took = mono_ns() - t0;
  CHECK(took >= 300000000ull && took < 5000000000ull);
  /* The ep is unusable now: later gets fail at once. */
  CHECK(flx_ucx_get(ep, rk, pi.region, dst, 1, 0, NULL) == FLX_UCX_STATUS_BASE + UCS_ERR_CONNECTION_RESET);
  flx_ucx_rkey_destroy(rk);
  flx_ucx_ep_close(ep);

  /* A fresh ep to the stopped peer, a get cancelled from another thread. */
  CHECK_RC(flx_ucx_ep_open(n, pi.addr, pi.addr_len, &ep));
  CHECK_RC(flx_ucx_rkey_unpack(ep, pi.rkey, pi.rkey_len, &rk));
  pthread_t th;
  pthread_create(&th, NULL, cancel_later, NULL);
  t0 = mono_ns();
  CHECK(flx_ucx_get(ep, rk, pi.region, dst, PEER_REGION, 0, &cancel_flag) == FLX_ECANCELED);
  took = mono_ns() - t0;
  CHECK(took >= 100000000ull && took < 5000000000ull);
  pthread_join(th, NULL);
  flx_ucx_rkey_destroy(rk);
  flx_ucx_ep_close(ep);
  /* The peer wakes up and may serve the abandoned gets: nothing lands in
   * dst any more. */
  kill(pid, SIGCONT);
  usleep(200000);
  size_t nonzero = 0;
  for (size_t i = 0; i < PEER_REGION; i++) nonzero += dst[i] != 0;
  CHECK(nonzero == 0);
  free(dst);
out:
  flx_ucx_node_close(n);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

int main(void) {
  const char *tls = getenv("UCX_TLS");
  stalled_peer();
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
    CHECK_RC(flx_ucx_get(ep, rk, (uint64_t)(uintptr_t)(region + reads[i].off), dst, reads[i].len, 0, NULL));
    CHECK(memcmp(dst, region + reads[i].off, reads[i].len) == 0);
    CHECK(reads[i].len == REGION || dst[reads[i].len] == 0); /* nothing past len */
  }
  CHECK(flx_ucx_get(ep, rk, 0, NULL, 10, 0, NULL) == FLX_EINVAL);
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
