//go:build linux && cgo && ucx

// The cgo package compiles the same C source that CMake builds into libfluxon_ucx.a.
#include "../../native/ucx/ucx.c"
