/* Fluxon DPDK module: the thinnest layer over DPDK's EAL and one ethdev
 * port, for raw L2 frames that Go's reliable stream (services/transport/
 * dpdk/rel) runs over.
 *
 * Threading: DPDK lets one process initialise its EAL once. Call
 * flx_dpdk_eal_init, then every other function, from the same thread (the
 * Go side pins a goroutine to it with runtime.LockOSThread): a port has one
 * rx and one tx queue, which DPDK does not make thread safe.
 *
 * Batching: flx_dpdk_rx and flx_dpdk_tx move a burst of frames per call,
 * copied between mbufs and one caller buffer of fixed-size slots, so the
 * cgo boundary is crossed once per burst, not once per frame.
 *
 * Errors: every function returns >= 0 or a negative FLX_E* code (fluxon/
 * core.h); a DPDK error (-rte_errno or a negative errno DPDK returned) is
 * FLX_ESYS with errno set to it.
 *
 * Ownership: a port belongs to the caller until flx_dpdk_port_close. The
 * buffers given to rx and tx are used only while the call runs.
 */
#ifndef FLUXON_DPDK_H
#define FLUXON_DPDK_H

#include <stddef.h>
#include <stdint.h>

#include "fluxon/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Frames per rx/tx burst, and the slot size of the burst buffers. */
#define FLX_DPDK_BURST 32
#define FLX_DPDK_SLOT 2048

typedef struct flx_dpdk_port flx_dpdk_port;

/* flx_dpdk_eal_init runs rte_eal_init(argc, argv) (argv[0] is a program
 * name). Returns 0, or FLX_ESYS with errno = rte_errno. */
int flx_dpdk_eal_init(int argc, char **argv);

/* flx_dpdk_eal_cleanup releases the EAL (after every port is closed). */
int flx_dpdk_eal_cleanup(void);

/* flx_dpdk_port_open starts the ethdev named name (a --vdev given to
 * init, e.g. "net_af_packet0") with one rx and one tx queue and a pool of
 * nb_mbufs mbufs, and writes its MAC address to mac. */
int flx_dpdk_port_open(const char *name, unsigned nb_mbufs, flx_dpdk_port **out, uint8_t mac[6]);

/* flx_dpdk_rx receives up to max (<= FLX_DPDK_BURST) frames: frame i is
 * copied to buf + i*FLX_DPDK_SLOT (truncated to the slot), its length to
 * lens[i]. Returns the number received (0: none waiting). */
int flx_dpdk_rx(flx_dpdk_port *p, uint8_t *buf, uint32_t *lens, unsigned max);

/* flx_dpdk_tx sends n (<= FLX_DPDK_BURST) frames, frame i being lens[i]
 * bytes at buf + i*FLX_DPDK_SLOT. Returns how many the port took (the
 * rest were dropped: the link is unreliable by contract). */
int flx_dpdk_tx(flx_dpdk_port *p, const uint8_t *buf, const uint32_t *lens, unsigned n);

/* flx_dpdk_port_stats returns the port's counters: received, sent, and
 * frames the port dropped or failed on. */
int flx_dpdk_port_stats(flx_dpdk_port *p, uint64_t *ipackets, uint64_t *opackets, uint64_t *errors);

/* flx_dpdk_idle sleeps the calling thread for us microseconds
 * (nanosleep): how the EAL thread parks between polls when idle. Go's own
 * timers may round a sleep this short up to a millisecond. With us == 0 it
 * only gives the core to any other thread ready to run there
 * (sched_yield): what the EAL thread does between empty polls while it
 * spins, so that a spinning lcore does not starve the threads that produce
 * and consume its frames on a shared core. */
void flx_dpdk_idle(unsigned us);

/* flx_dpdk_vdev_recreate creates the virtual device name (with args, the
 * part of a --vdev spec after its first comma) on a running EAL, first
 * removing a device of that name left from a port closed earlier: a
 * vdev port closed in this process can then be opened again. */
int flx_dpdk_vdev_recreate(const char *name, const char *args);

/* flx_dpdk_port_close stops and closes the port and frees its pool. */
void flx_dpdk_port_close(flx_dpdk_port *p);

#ifdef __cplusplus
}
#endif
#endif
