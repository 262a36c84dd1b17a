#include <stdio.h>
#include <string.h>

#include "fluxon/core.h"

static int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)

int main(void) {
  CHECK(strcmp(flx_version(), "0.1.0") == 0);
  CHECK(strstr(flx_strerror(FLX_ENOMEM), "FLX_ENOMEM") != NULL);
  CHECK(strstr(flx_strerror(-999), "unknown") != NULL);
  for (int c = FLX_ECANCELED; c <= FLX_OK; c++) CHECK(strstr(flx_strerror(c), "unknown") == NULL);
  if (failures) return 1;
  printf("test_core: ok\n");
  return 0;
}
