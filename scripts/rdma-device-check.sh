#!/usr/bin/env bash
# On a host WITH an RDMA device (a NIC, or Soft-RoCE: `rdma link add rxe0 type rxe netdev eth0`),
# builds native/rdma and runs its loopback: two RC QPs on one device connected to each other,
# RDMA READ and WRITE of a registered buffer, SEND/RECV. Prints PASS or FAIL.
#   FLX_RDMA_DEVICE=mlx5_0     device to use (default: the first one)
#   FLX_RDMA_GID_INDEX=1       GID index for RoCE (default 0; RoCE v2 is often 1 or 3)
# Then runs the Go tests with -tags rdma against the same device.
set -uo pipefail
cd "$(dirname "$0")/.."
build=build/rdma-check
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug >/dev/null || ! cmake --build "$build" -j2 --target rdma_test >/dev/null; then
  echo "FAIL: could not build native/rdma (install libibverbs-dev / rdma-core-devel)"
  exit 1
fi
if [ ! -x "$build/native/rdma_test" ]; then
  echo "FAIL: libibverbs not found by CMake, rdma_test not built"
  exit 1
fi
if ! "$build/native/rdma_test" --require-device; then
  echo "FAIL: native loopback (see above; no device, or QP/READ/SEND failed)"
  exit 1
fi
if ! CGO_ENABLED=1 go test -count=1 -tags rdma ./cgo/rdma/ ./services/transport/rdma/; then
  echo "FAIL: go tests with -tags rdma"
  exit 1
fi
echo "PASS: RDMA loopback (READ, WRITE, SEND/RECV) and go tests on ${FLX_RDMA_DEVICE:-the first device}"
