#!/usr/bin/env bash
# Installs, only where missing, every Debian package that building and testing
# Fluxon needs. Idempotent: a second run installs nothing and does not touch apt.
set -euo pipefail

packages=(
  build-essential pkg-config cmake
  libibverbs-dev librdmacm-dev libucx-dev libdpdk-dev liburing-dev libnuma-dev
  etcd-server etcd-client redis-server redis-tools nats-server iperf3
  iproute2 procps psmisc
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts these services on install; tests run their own instances.
for svc in etcd redis-server nats-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done
