// The cgo package compiles the same C source that CMake builds into libfluxon_native.a.
#include "../../native/core/core.c"
