#!/usr/bin/env bash
# Builds the QEMU guest of the e2e tests and of `vfe-vhost-cli drill --migrate`: a Debian
# kernel (vmlinuz) and a busybox initramfs (initrd.cpio.gz) holding the virtio modules and
# init.sh (beside this script) as /init.
# Usage: packages/vhostd/guest/build.sh OUTDIR
# Idempotent: the kernel is downloaded once, the initrd is rebuilt only when an input is
# newer than it. Needs root (or at least apt-get download + dpkg-deb) on Debian 12.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
init_src=$here/init.sh
# Load order matters for insmod (no dependency resolution in the guest).
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         failover net_failover virtio_net virtio_blk)

# Tests may call this from parallel workers: one builder at a time.
exec 9>"$out/.lock"
flock 9

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- kernel + modules: once per kernel version --------------------------------------------
if [ ! -s "$out/vmlinuz" ] || [ ! -s "$out/modules/order" ]; then
  # The version apt would install as "the" Debian kernel: the metapackage's dependency.
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  pkg=$(kpkg)
  if [ -z "$pkg" ]; then apt-get update -qq; pkg=$(kpkg); fi
  [ -n "$pkg" ] || { echo "build-guest: apt offers no linux-image-amd64 kernel" >&2; exit 1; }
  echo "build-guest: fetching $pkg" >&2
  fetch() { (cd "$scratch" && apt-get download -qq "$pkg" 2>&1 | grep -v 'unsandboxed' >&2 || true); }
  fetch
  deb=$(ls "$scratch"/linux-image-*.deb 2>/dev/null | head -1)
  if [ -z "$deb" ]; then  # stale package lists name a version the mirror no longer has
    apt-get update -qq; pkg=$(kpkg); fetch
    deb=$(ls "$scratch"/linux-image-*.deb 2>/dev/null | head -1)
  fi
  [ -n "$deb" ] || { echo "build-guest: apt-get download $pkg failed" >&2; exit 1; }
  dpkg-deb -x "$deb" "$scratch/k"
  kver=$(ls "$scratch/k/lib/modules" | head -1)
  kdir=$scratch/k/lib/modules/$kver
  rm -rf "$out/modules.new" && mkdir -p "$out/modules.new"
  : >"$out/modules.new/order"
  for m in "${modules[@]}"; do
    f=$(find "$kdir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -1)
    if [ -n "$f" ]; then
      case "$f" in
        *.xz) xz -dc "$f" >"$out/modules.new/$m.ko" ;;
        *.zst) zstd -qdc "$f" >"$out/modules.new/$m.ko" ;;
        *) cp "$f" "$out/modules.new/$m.ko" ;;
      esac
      echo "$m" >>"$out/modules.new/order"
    elif grep -q "/$m.ko\$" "$kdir/modules.builtin" 2>/dev/null; then
      echo "build-guest: $m is built into $kver" >&2
    else
      echo "build-guest: module $m is neither in $pkg nor built in" >&2; exit 1
    fi
  done
  cp "$scratch"/k/boot/vmlinuz-* "$out/vmlinuz.new"
  echo "$kver" >"$out/modules.new/kernel-version"
  rm -rf "$out/modules" && mv "$out/modules.new" "$out/modules"
  mv "$out/vmlinuz.new" "$out/vmlinuz"
  rm -f "$out/initrd.cpio.gz"   # built against other modules
fi

# --- initramfs: rebuilt when init.sh, busybox, the modules or this script change ----------
# By content, not mtime: a checkout or copy can make an old image look newer than its inputs.
busybox=$(command -v busybox) || { echo "build-guest: busybox missing (apt-get install busybox-static)" >&2; exit 1; }
inputs=$(cat "$init_src" "$busybox" "$0" "$out/modules/order" | sha256sum | cut -d' ' -f1)
stale=0
[ -s "$out/initrd.cpio.gz" ] || stale=1
[ "$(cat "$out/initrd.inputs" 2>/dev/null)" = "$inputs" ] || stale=1
if [ "$stale" = 1 ]; then
  # A dynamically linked busybox would need its libraries in the initrd too.
  if ldd "$busybox" >/dev/null 2>&1; then echo "build-guest: $busybox is not static (install busybox-static)" >&2; exit 1; fi
  r=$scratch/root
  mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp,mnt,lib/modules}
  cp "$busybox" "$r/bin/busybox"
  for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
  cp "$out"/modules/* "$r/lib/modules/"
  cp "$init_src" "$r/init" && chmod 755 "$r/init"
  # The kernel needs /dev/console before /init runs to give it a stdout.
  mknod -m 600 "$r/dev/console" c 5 1
  mknod -m 666 "$r/dev/null" c 1 3
  (cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) >"$out/initrd.cpio.gz.new"
  mv "$out/initrd.cpio.gz.new" "$out/initrd.cpio.gz"
  echo "$inputs" >"$out/initrd.inputs"
fi

echo "kernel: $out/vmlinuz ($(cat "$out/modules/kernel-version"))"
echo "initrd: $out/initrd.cpio.gz"
