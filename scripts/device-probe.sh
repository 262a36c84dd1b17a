#!/usr/bin/env bash
# Prints what an accelerator host offers for Fluxon's native transports (RDMA devices,
# toolchain), then runs scripts/rdma-device-check.sh when a device and the tools exist.
set -u
echo "== host"; uname -r; nproc; (command -v go cmake gcc pkg-config || true)
echo "== /sys/class/infiniband"; ls /sys/class/infiniband 2>&1 | head
echo "== ibv_devices"; (ibv_devices 2>&1 || true) | head
echo "== libibverbs"; (ldconfig -p | grep -E "ibverbs|rdmacm|ucp" || true) | head
echo "== headers"; ls /usr/include/infiniband/verbs.h /usr/include/ucp/api/ucp.h 2>&1
echo "== net"; ls /sys/class/net; (cat /sys/class/net/*/device/vendor 2>/dev/null | sort | uniq -c || true)
if [ -d /sys/class/infiniband ] && [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ] && command -v go >/dev/null && command -v cmake >/dev/null && [ -e /usr/include/infiniband/verbs.h ]; then
  echo "== rdma-device-check"; timeout 240 bash scripts/rdma-device-check.sh
else
  echo "== rdma-device-check not run (no device, or no go/cmake/verbs headers)"
fi
