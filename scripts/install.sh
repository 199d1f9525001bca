#!/usr/bin/env bash
# Installs the built vhostd tree as a self-contained copy under a prefix, puts vfe-vhostd,
# vfe-vhostd-ha and vfe-vhost-cli on the PATH and installs the two systemd units.
#
#   pnpm install && pnpm run build        # first: the tree must be built
#   sudo bash scripts/install.sh           # /opt/vhostd, /usr/local/bin, /etc/systemd/system
#
# Options (DESTDIR is also read from the environment, as with make install):
#   --prefix DIR     where the program goes (default /opt/vhostd)
#   --destdir DIR    stage everything under DIR (packaging); nothing is loaded or started
#   --bindir DIR     where the three commands are linked (default /usr/local/bin)
#   --no-systemd     do not install the units
#   --enable         also `systemctl enable --now` both units (only without DESTDIR, under systemd)
#   --node PATH      the node (>= 20) the launchers exec (default: `command -v node`)
#
# What it writes (paths below DESTDIR):
#   PREFIX/lib/                  the runtime tree: the six packages (compiled JS, package.json,
#                                bin/, the native addons: the engine's and the front-end driver's,
#                                which only the drill loads) and their production dependencies,
#                                made by `pnpm deploy --prod` (pnpm's own layout, no dev deps)
#   PREFIX/bin/vfe-vhostd, vfe-vhostd-ha, vfe-vhost-cli
#                                launchers: `exec NODE PREFIX/lib/.../bin/X.js "$@"` (exec, so the
#                                unit's main process is node itself: NotifyAccess=main)
#   BINDIR/<the same three>      symlinks to the launchers
#   /etc/systemd/system/vfe-vhostd.service, vfe-vhostd-ha.service   (@PREFIX@ substituted)
#   PREFIX/share/doc/vhostd/     operations.md, architecture.md, README.md
#   PREFIX/share/vhostd/uninstall.sh and install-manifest (every file, link and directory this
#                                install created, for uninstall.sh)
# Reinstalling over an earlier install first removes what that install's manifest lists.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/vhostd
DESTDIR=${DESTDIR:-}
BINDIR=/usr/local/bin
SYSTEMD=1
ENABLE=0
NODE=""
UNITDIR=/etc/systemd/system
UNITS=(vfe-vhostd-ha.service vfe-vhostd.service)

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --destdir) DESTDIR=${2?--destdir needs a directory}; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    --bindir) BINDIR=${2:?--bindir needs a directory}; shift 2 ;;
    --bindir=*) BINDIR=${1#*=}; shift ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --enable) ENABLE=1; shift ;;
    --node) NODE=${2:?--node needs a path}; shift 2 ;;
    --node=*) NODE=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be absolute: $PREFIX" ;; esac
case "$BINDIR" in /*) ;; *) die "--bindir must be absolute: $BINDIR" ;; esac
PREFIX=${PREFIX%/}
if [ -n "$DESTDIR" ]; then
  mkdir -p "$DESTDIR"
  DESTDIR=$(cd "$DESTDIR" && pwd)
fi
[ "$PREFIX" != "" ] && [ "$PREFIX" != "/" ] || die "refusing to install with prefix /"
D=$DESTDIR$PREFIX

# ---- preconditions: a built tree, node >= 20, pnpm
for f in packages/proto/dist/src/index.js packages/native/dist/src/index.js packages/vhostd/dist/src/main.js \
         packages/vhostd/dist/src/cli/main.js packages/ha/dist/src/main.js packages/runtime/dist/src/index.js \
         packages/native/build/Release/vhostd_native.node \
         packages/frontend/dist/src/index.js packages/frontend/build/Release/vhostd_frontend.node; do
  [ -f "$ROOT/$f" ] || die "the tree is not built ($f is missing): run 'pnpm install && pnpm run build' first"
done
if [ -z "$NODE" ]; then NODE=$(command -v node) || die "node not found on PATH: pass --node /path/to/node (>= 20)"; fi
case "$NODE" in /*) ;; *) die "--node must be an absolute path: $NODE" ;; esac
major=$("$NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || die "$NODE does not run"
[ "$major" -ge 20 ] || die "$NODE is node $major; vhostd needs node >= 20"
command -v pnpm >/dev/null || die "pnpm not found on PATH (npm i -g pnpm@10)"

# ---- build the runtime tree in a staging directory first (nothing is touched if this fails)
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/vhostd-install.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
deploy() {
  # --legacy: the workspace shares one lockfile and keeps inject-workspace-packages off (the
  # dev tree links workspace packages); --ignore-scripts: the addon is already built and
  # copied, nothing must compile on the target. @vhostd/deploy (packaging/deploy) depends on
  # both daemons' packages, so one deploy holds all three programs.
  (cd "$ROOT" && pnpm --filter @vhostd/deploy deploy --prod --legacy --ignore-scripts "$@" "$STAGE/lib") >"$STAGE/deploy.log" 2>&1
}
if ! deploy --offline; then
  rm -rf "$STAGE/lib"
  deploy --prefer-offline || { cat "$STAGE/deploy.log" >&2; die "pnpm deploy failed"; }
fi
# Only what runs: no TypeScript sources, tests, C++ sources or build intermediates.
while IFS= read -r -d '' pkg; do
  rm -rf "$pkg/src" "$pkg/test" "$pkg/cc" "$pkg/scripts" "$pkg/dist/test" "$pkg/tsconfig.json" "$pkg/binding.gyp"
  find "$pkg/dist" -name '*.tsbuildinfo' -delete 2>/dev/null || true
  if [ -d "$pkg/build" ]; then
    find "$pkg/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
    # Only the addons that run: not the test-support one (vhostd_native_test.node).
    find "$pkg/build/Release" -mindepth 1 -maxdepth 1 \( ! -name '*.node' -o -name '*_test.node' \) -exec rm -rf {} +
  fi
done < <(find "$STAGE/lib/node_modules/.pnpm" -mindepth 5 -maxdepth 5 -path '*/node_modules/@vhostd/*/package.json' -printf '%h\0'; printf '%s\0' "$STAGE/lib")
[ -f "$STAGE/lib/node_modules/@vhostd/native/build/Release/vhostd_native.node" ] || die "the deployed tree has no native addon"
# The daemons never load the front-end driver; the drill (vfe-vhost-cli drill) does.
ls "$STAGE"/lib/node_modules/.pnpm/*/node_modules/@vhostd/frontend/build/Release/vhostd_frontend.node >/dev/null 2>&1 ||
  die "the deployed tree has no front-end driver addon (the drill needs it)"

# ---- never take over a command of somebody else's
for n in vfe-vhostd vfe-vhostd-ha vfe-vhost-cli; do
  if [ -e "$DESTDIR$BINDIR/$n" ] || [ -L "$DESTDIR$BINDIR/$n" ]; then
    [ "$(readlink "$DESTDIR$BINDIR/$n" || true)" = "$PREFIX/bin/$n" ] ||
      die "$DESTDIR$BINDIR/$n exists and is not ours (not a link to $PREFIX/bin/$n); remove it first"
  fi
done

# ---- remove an earlier install (what its manifest lists), then copy
MANIFEST_REL=$PREFIX/share/vhostd/install-manifest
if [ -f "$DESTDIR$MANIFEST_REL" ]; then
  echo "removing the earlier install listed in $DESTDIR$MANIFEST_REL"
  bash "$ROOT/scripts/uninstall.sh" --files-only --quiet --prefix "$PREFIX" ${DESTDIR:+--destdir "$DESTDIR"}
fi

declare -a CREATED_DIRS=() FILES=() LINKS=()
mkdir_rec() { # mkdir -p that records every directory it creates (paths without DESTDIR)
  local rel=$1 path="" part
  local IFS=/
  for part in $rel; do
    [ -n "$part" ] || continue
    path=$path/$part
    if [ ! -d "$DESTDIR$path" ]; then
      mkdir "$DESTDIR$path"
      CREATED_DIRS+=("$path")
    fi
  done
}

mkdir_rec "$PREFIX"
[ ! -e "$D/lib" ] || die "$D/lib exists and is not listed in an install manifest; move it away first"
cp -a "$STAGE/lib" "$D/lib"
CREATED_DIRS+=("$PREFIX/lib")
while IFS= read -r -d '' p; do
  rel=$PREFIX/lib/${p#"$D/lib/"}
  if [ -L "$p" ]; then LINKS+=("$rel"); elif [ -d "$p" ]; then CREATED_DIRS+=("$rel"); else FILES+=("$rel"); fi
done < <(find "$D/lib" -mindepth 1 -print0)

mkdir_rec "$PREFIX/bin"
launcher() { # name, script relative to PREFIX/lib
  local f=$D/bin/$1
  cat >"$f" <<EOF
#!/bin/sh
# $1, installed by vhostd's scripts/install.sh: runs the copy under $PREFIX with $NODE.
exec '$NODE' '$PREFIX/lib/$2' "\$@"
EOF
  chmod 0755 "$f"
  FILES+=("$PREFIX/bin/$1")
}
launcher vfe-vhostd node_modules/@vhostd/vhostd/bin/vfe-vhostd.js
launcher vfe-vhost-cli node_modules/@vhostd/vhostd/bin/vfe-vhost-cli.js
launcher vfe-vhostd-ha node_modules/@vhostd/ha/bin/vfe-vhostd-ha.js

mkdir_rec "$BINDIR"
for n in vfe-vhostd vfe-vhostd-ha vfe-vhost-cli; do
  rm -f "$DESTDIR$BINDIR/$n"  # only ever our own link (checked above)
  ln -s "$PREFIX/bin/$n" "$DESTDIR$BINDIR/$n"
  LINKS+=("$BINDIR/$n")
done

mkdir_rec "$PREFIX/share/doc/vhostd"
for f in docs/operations.md docs/architecture.md README.md; do
  [ -f "$ROOT/$f" ] || continue
  install -m 0644 "$ROOT/$f" "$D/share/doc/vhostd/$(basename "$f")"
  FILES+=("$PREFIX/share/doc/vhostd/$(basename "$f")")
done
mkdir_rec "$PREFIX/share/vhostd"
install -m 0755 "$ROOT/scripts/uninstall.sh" "$D/share/vhostd/uninstall.sh"
FILES+=("$PREFIX/share/vhostd/uninstall.sh")

if [ "$SYSTEMD" = 1 ]; then
  mkdir_rec "$UNITDIR"
  for u in "${UNITS[@]}"; do
    sed "s|@PREFIX@|$PREFIX|g" "$ROOT/packaging/systemd/$u" >"$DESTDIR$UNITDIR/$u"
    chmod 0644 "$DESTDIR$UNITDIR/$u"
    FILES+=("$UNITDIR/$u")
  done
fi

# ---- the manifest: "d|f|l <absolute path without DESTDIR>", directories first
{
  echo "# vhostd install manifest: prefix=$PREFIX bindir=$BINDIR node=$NODE date=$(date -u +%FT%TZ)"
  for p in "${CREATED_DIRS[@]}"; do echo "d $p"; done
  for p in "${FILES[@]}"; do echo "f $p"; done
  for p in "${LINKS[@]}"; do echo "l $p"; done
  echo "f $MANIFEST_REL"
} >"$DESTDIR$MANIFEST_REL"

echo "installed vhostd $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$ROOT/packages/vhostd/package.json" | head -1) into ${DESTDIR:+$DESTDIR (DESTDIR) + }$PREFIX:"
echo "  program     $PREFIX/lib ($(du -sh "$D/lib" | cut -f1), ${#FILES[@]} files), node $NODE (v$("$NODE" -p process.versions.node))"
echo "  commands    $BINDIR/{vfe-vhostd,vfe-vhostd-ha,vfe-vhost-cli} -> $PREFIX/bin/"
[ "$SYSTEMD" = 1 ] && echo "  units       $UNITDIR/vfe-vhostd-ha.service, $UNITDIR/vfe-vhostd.service"
echo "  docs        $PREFIX/share/doc/vhostd/operations.md"
echo "  manifest    $MANIFEST_REL (uninstall: bash $PREFIX/share/vhostd/uninstall.sh${PREFIX:+ --prefix $PREFIX})"

# ---- systemd: reload (and optionally enable) only on a live install under systemd
if [ "$SYSTEMD" = 1 ]; then
  if [ -n "$DESTDIR" ]; then
    echo "DESTDIR install: systemd not touched."
  elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "systemctl daemon-reload: done."
    if [ "$ENABLE" = 1 ]; then
      systemctl enable --now vfe-vhostd-ha.service vfe-vhostd.service
      echo "enabled and started vfe-vhostd-ha.service and vfe-vhostd.service."
    else
      echo "start now and at boot:  systemctl enable --now vfe-vhostd-ha vfe-vhostd"
      echo "after an upgrade:       systemctl restart vfe-vhostd   (see operations.md, Upgrade)"
    fi
  else
    echo "PID 1 is '$(cat /proc/1/comm 2>/dev/null || echo unknown)', not systemd: the units are installed but not loaded."
    echo "  without systemd, run the pair with: $BINDIR/vfe-vhostd-ha & $BINDIR/vfe-vhostd"
  fi
fi
