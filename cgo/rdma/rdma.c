//go:build linux && cgo && rdma

// The cgo package compiles the same C source that CMake builds into libfluxon_rdma.a.
#include "../../native/rdma/rdma.c"
