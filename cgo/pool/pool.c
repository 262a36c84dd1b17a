//go:build linux && cgo

// The cgo package compiles the same C sources that CMake builds into libfluxon_native.a.
// pool.c first: heap.c's short macro names come after every system header.
#include "../../native/pool/pool.c"
#include "../../native/pool/heap.c"
