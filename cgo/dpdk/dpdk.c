//go:build linux && cgo && dpdk

// The cgo package compiles the same C source that CMake builds into libfluxon_dpdk.a.
#include "../../native/dpdk/dpdk.c"
