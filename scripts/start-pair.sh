#!/usr/bin/env bash
# Starts vfe-vhostd-ha (the keeper, if built) and vfe-vhostd in the background, logging to
# <state-dir>/logs/*.log, and waits until the RPC answers `vfe-vhost-cli version` (10 s).
#   VHOSTD_RUN_DIR   (default /run/vhostd)      VHOSTD_STATE_DIR (default /var/lib/vhostd)
# Extra arguments go to vfe-vhostd (e.g. --server, --config FILE, --log-level debug).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${VHOSTD_RUN_DIR:-/run/vhostd}
STATE_DIR=${VHOSTD_STATE_DIR:-/var/lib/vhostd}
LOG_DIR=$STATE_DIR/logs
VHOSTD=$ROOT/packages/vhostd/bin/vfe-vhostd.js
KEEPER=$ROOT/packages/ha/bin/vfe-vhostd-ha.js
CLI=(node "$ROOT/packages/vhostd/bin/vfe-vhost-cli.js" --run-dir "$RUN_DIR" --timeout 2)

for d in "$RUN_DIR" "$STATE_DIR"; do
  [ -d "$d" ] || { mkdir -p "$d"; chmod 700 "$d"; }
done
mkdir -p "$LOG_DIR"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ ! -f "$ROOT/packages/vhostd/dist/src/main.js" ]; then
  echo "vfe-vhostd is not built: run 'pnpm run build' first" >&2
  exit 1
fi
if alive "$RUN_DIR/vfe-vhostd.pid"; then
  echo "vfe-vhostd is already running (pid $(cat "$RUN_DIR/vfe-vhostd.pid"), run dir $RUN_DIR); use scripts/stop-pair.sh first" >&2
  exit 1
fi

# The keeper first: it restores every VF from its replica journal, then vfe-vhostd --ha
# tells it what to run (HA phase 1: the keeper runs every session and the datapath).
HA_ARGS=()
if [ -f "$ROOT/packages/ha/dist/src/main.js" ]; then
  HA_ARGS=(--ha)
  if alive "$RUN_DIR/vfe-vhostd-ha.pid"; then
    echo "vfe-vhostd-ha already running (pid $(cat "$RUN_DIR/vfe-vhostd-ha.pid"))"
  else
    nohup node "$KEEPER" --run-dir "$RUN_DIR" --state-dir "$STATE_DIR" >>"$LOG_DIR/vfe-vhostd-ha.log" 2>&1 </dev/null &
    kpid=$!
    echo $kpid >"$RUN_DIR/vfe-vhostd-ha.pid"
    # Wait until it serves (its inspection socket appears once its VFs are restored).
    for _ in $(seq 1 100); do
      [ -S "$RUN_DIR/vfe-vhostd-ha.sock" ] && break
      kill -0 "$kpid" 2>/dev/null || { echo "vfe-vhostd-ha exited during start-up; see $LOG_DIR/vfe-vhostd-ha.log" >&2; tail -n 20 "$LOG_DIR/vfe-vhostd-ha.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "vfe-vhostd-ha started (pid $kpid)"
  fi
else
  echo "vfe-vhostd-ha (the keeper) is not built yet (no packages/ha/dist/src/main.js): starting vfe-vhostd alone"
fi

nohup node "$VHOSTD" --run-dir "$RUN_DIR" --state-dir "$STATE_DIR" "${HA_ARGS[@]}" "$@" >>"$LOG_DIR/vfe-vhostd.log" 2>&1 </dev/null &
pid=$!

for _ in $(seq 1 100); do
  if "${CLI[@]}" version >/dev/null 2>&1; then
    cat <<MSG
vfe-vhostd started (pid $pid) and answers RPC.
  run dir    $RUN_DIR   (RPC socket $RUN_DIR/vfe-vhostd.sock, pid files *.pid)
  state dir  $STATE_DIR
  logs       $LOG_DIR/vfe-vhostd.log, $LOG_DIR/vfe-vhostd-ha.log
  cli        node packages/vhostd/bin/vfe-vhost-cli.js --run-dir $RUN_DIR version
  stop       VHOSTD_RUN_DIR=$RUN_DIR bash scripts/stop-pair.sh
MSG
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "vfe-vhostd exited during start-up; last log lines ($LOG_DIR/vfe-vhostd.log):" >&2
    tail -n 20 "$LOG_DIR/vfe-vhostd.log" >&2 || true
    exit 1
  fi
  sleep 0.1
done
echo "vfe-vhostd (pid $pid) did not answer RPC on $RUN_DIR/vfe-vhostd.sock within 10 s; see $LOG_DIR/vfe-vhostd.log" >&2
exit 1
