#!/usr/bin/env bash
# Removes exactly what scripts/install.sh installed, as listed in its manifest
# (PREFIX/share/vhostd/install-manifest): files, links, then the directories it created, if
# they are empty. Installed copies live at PREFIX/share/vhostd/uninstall.sh.
#
#   sudo bash scripts/uninstall.sh                 # the /opt/vhostd install
#
# Options (DESTDIR is also read from the environment):
#   --prefix DIR    the prefix given to install.sh (default /opt/vhostd)
#   --destdir DIR   the DESTDIR given to install.sh
#   --files-only    only remove files (install.sh uses this before reinstalling): no systemctl
#   --quiet         print nothing but errors
#
# On a live install under systemd the units are first stopped and disabled (vfe-vhostd, then
# the keeper): that ends every VM's vhost-user connection. The journal (/var/lib/vhostd) and the
# runtime directory (/run/vhostd) are the daemons' data, not the install's: they stay, and the
# last lines printed say how to remove them.
set -euo pipefail

PREFIX=/opt/vhostd
DESTDIR=${DESTDIR:-}
FILES_ONLY=0
QUIET=0
die() { echo "uninstall.sh: $*" >&2; exit 1; }
say() { [ "$QUIET" = 1 ] || echo "$@"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --destdir) DESTDIR=${2?--destdir needs a directory}; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    --files-only) FILES_ONLY=1; shift ;;
    --quiet) QUIET=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
PREFIX=${PREFIX%/}
case "$PREFIX" in /?*) ;; *) die "--prefix must be absolute and not /: '$PREFIX'" ;; esac
if [ -n "$DESTDIR" ]; then DESTDIR=$(cd "$DESTDIR" && pwd) || die "no such DESTDIR"; fi
MANIFEST=$DESTDIR$PREFIX/share/vhostd/install-manifest
[ -f "$MANIFEST" ] || die "no install manifest at $MANIFEST (was vhostd installed with --prefix $PREFIX${DESTDIR:+ --destdir $DESTDIR}?)"

# Read the manifest before anything is removed (it lists itself). Only absolute paths, no "..".
declare -a DIRS=() FILES=() LINKS=() UNITS=()
while IFS= read -r line; do
  case "$line" in '#'*|'') continue ;; esac
  kind=${line%% *}
  path=${line#* }
  case "$path" in /*) ;; *) die "manifest: not an absolute path: $line" ;; esac
  case "/$path/" in */../*) die "manifest: '..' in a path: $line" ;; esac
  case "$kind" in
    d) DIRS+=("$path") ;;
    f) FILES+=("$path")
       case "$path" in */systemd/system/*.service) UNITS+=("$(basename "$path")") ;; esac ;;
    l) LINKS+=("$path") ;;
    *) die "manifest: unknown entry: $line" ;;
  esac
done <"$MANIFEST"

live_systemd=0
if [ "$FILES_ONLY" = 0 ] && [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && [ ${#UNITS[@]} -gt 0 ]; then
  live_systemd=1
  # vfe-vhostd first, the keeper last (the order systemd uses too: vfe-vhostd is After= it).
  for u in vfe-vhostd.service vfe-vhostd-ha.service; do
    if printf '%s\n' "${UNITS[@]}" | grep -qx "$u"; then
      systemctl disable --now "$u" >/dev/null 2>&1 && say "stopped and disabled $u" || say "$u: not running or not enabled"
    fi
  done
fi

removed=0
# A listed file that is no longer a regular file, or a listed link that is no longer a link,
# was replaced by someone else: it stays.
for p in "${FILES[@]}"; do
  t=$DESTDIR$p
  if [ -f "$t" ] && [ ! -L "$t" ]; then rm -f "$t"; removed=$((removed + 1))
  elif [ -e "$t" ] || [ -L "$t" ]; then say "left $t: no longer the file vhostd installed"; fi
done
for p in "${LINKS[@]}"; do
  t=$DESTDIR$p
  if [ -L "$t" ]; then rm -f "$t"; removed=$((removed + 1))
  elif [ -e "$t" ]; then say "left $t: no longer the link vhostd installed"; fi
done
# Deepest directories first; a directory holding something we did not install stays.
left=0
while IFS= read -r p; do
  [ -n "$p" ] || continue
  t=$DESTDIR$p
  [ -d "$t" ] && [ ! -L "$t" ] || continue
  if rmdir "$t" 2>/dev/null; then removed=$((removed + 1)); else say "left $t: not empty (holds files vhostd did not install)"; left=$((left + 1)); fi
done < <(printf '%s\n' "${DIRS[@]}" | awk '{ print gsub("/", "/") "\t" $0 }' | sort -rn -k1,1 | cut -f2-)

[ "$live_systemd" = 1 ] && systemctl daemon-reload
note=""
[ "$left" = 0 ] || note=" ($left directories left, see above)"
say "removed $removed installed files, links and directories of ${DESTDIR:+$DESTDIR (DESTDIR) + }$PREFIX$note"
if [ "$FILES_ONLY" = 0 ] && [ -z "$DESTDIR" ]; then
  [ "$live_systemd" = 1 ] || [ ${#UNITS[@]} -eq 0 ] || say "systemd is not PID 1 here: no unit was stopped; stop running daemons yourself (pid files in /run/vhostd)"
  say "kept the daemons' data: the journal in /var/lib/vhostd (every PF/VF; remove with rm -rf /var/lib/vhostd) and /run/vhostd"
fi
