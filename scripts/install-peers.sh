#!/usr/bin/env bash
# Installs the real vhost-user peers the tests and benchmarks run against (Debian 12):
# DPDK testpmd (virtio-user front-end, net_vhost reference back-end), QEMU + a guest kernel
# and busybox for initramfs guests, qemu-storage-daemon, ping (the migration drill pings the
# guest from the bridge), valgrind (the benchmarks count instructions per frame with callgrind),
# clang with its sanitizer and libFuzzer runtimes (pnpm fuzz, pnpm run build:asan).
# Idempotent; needs root.
set -euo pipefail
pkgs=(dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23
      qemu-system-x86 qemu-utils qemu-system-common busybox-static cpio kmod iproute2
      iputils-ping valgrind clang-14 libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
command -v dpdk-testpmd >/dev/null
command -v qemu-system-x86_64 >/dev/null
command -v clang++-14 >/dev/null
