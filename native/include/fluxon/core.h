/* Fluxon C core: version and the error codes shared by every native module.
 *
 * Every native function that can fail returns an int: 0 on success or a negative
 * FLX_E* code below. Where the failure came from a system call, the module also
 * records errno so the Go wrapper can report code + errno + message.
 */
#ifndef FLUXON_CORE_H
#define FLUXON_CORE_H

#ifdef __cplusplus
extern "C" {
#endif

#define FLX_VERSION_MAJOR 0
#define FLX_VERSION_MINOR 1
#define FLX_VERSION_PATCH 0

/* Error codes. Stable: Go maps them to sentinel errors by value. */
enum flx_err {
  FLX_OK = 0,
  FLX_EINVAL = -1,      /* bad argument */
  FLX_ENOMEM = -2,      /* pool or segment has no room */
  FLX_ESYS = -3,        /* a system call failed; see errno */
  FLX_ENOTFOUND = -4,   /* no such object */
  FLX_EBUSY = -5,       /* object is referenced or being written */
  FLX_EEXIST = -6,      /* object already exists */
  FLX_ECORRUPT = -7,    /* shared-memory layout failed validation */
  FLX_EVERSION = -8,    /* layout/protocol version mismatch */
  FLX_EAGAIN = -9,      /* ring full or empty; try again */
  FLX_ETOOBIG = -10,    /* request larger than the structure can ever hold */
  FLX_ENOTSUP = -11,    /* feature or device not available on this host */
  FLX_ENODEV = -12,     /* no RDMA (or other) device on this host, or none usable */
  FLX_ETIMEDOUT = -13,  /* an operation's deadline passed before it completed */
  FLX_ECANCELED = -14,  /* the caller cancelled an operation before it completed */
};

/* Returns a static, human-readable name for an flx_err code ("FLX_ENOMEM"). */
const char *flx_strerror(int code);

/* Returns the static version string of the C core, e.g. "0.1.0". */
const char *flx_version(void);

#ifdef __cplusplus
}
#endif
#endif
