#include "fluxon/core.h"

#define FLX_STR2(x) #x
#define FLX_STR(x) FLX_STR2(x)

const char *flx_version(void) {
  return FLX_STR(FLX_VERSION_MAJOR) "." FLX_STR(FLX_VERSION_MINOR) "." FLX_STR(FLX_VERSION_PATCH);
}

const char *flx_strerror(int code) {
  switch (code) {
  case FLX_OK: return "FLX_OK";
  case FLX_EINVAL: return "FLX_EINVAL: invalid argument";
  case FLX_ENOMEM: return "FLX_ENOMEM: no room in the pool";
  case FLX_ESYS: return "FLX_ESYS: system call failed";
  case FLX_ENOTFOUND: return "FLX_ENOTFOUND: not found";
  case FLX_EBUSY: return "FLX_EBUSY: busy";
  case FLX_EEXIST: return "FLX_EEXIST: already exists";
  case FLX_ECORRUPT: return "FLX_ECORRUPT: shared-memory layout is corrupt";
  case FLX_EVERSION: return "FLX_EVERSION: layout version mismatch";
  case FLX_EAGAIN: return "FLX_EAGAIN: try again";
  case FLX_ETOOBIG: return "FLX_ETOOBIG: too big";
  case FLX_ENOTSUP: return "FLX_ENOTSUP: not supported on this host";
  case FLX_ENODEV: return "FLX_ENODEV: no device";
  case FLX_ETIMEDOUT: return "FLX_ETIMEDOUT: deadline passed";
  case FLX_ECANCELED: return "FLX_ECANCELED: cancelled";
  default: return "FLX_E?: unknown error code";
  }
}
