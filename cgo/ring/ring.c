//go:build linux && cgo

// The cgo package compiles the same C source that CMake builds into libfluxon_native.a.
#include "../../native/ring/ring.c"
