#!/usr/bin/env bash
# Stops vfe-vhostd, then vfe-vhostd-ha, by their pid files in the run dir (SIGTERM, then
# SIGKILL after 10 s). VHOSTD_RUN_DIR as for start-pair.sh (default /run/vhostd).
set -uo pipefail
RUN_DIR=${VHOSTD_RUN_DIR:-/run/vhostd}
rc=0

stop_one() { # name pidfile
  local name=$1 pidfile=$2 pid
  if [ ! -f "$pidfile" ]; then
    echo "$name: not running (no $pidfile)"
    return
  fi
  pid=$(cat "$pidfile")
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
    echo "$name: not running (stale pid file removed)"
    rm -f "$pidfile"
    return
  fi
  # Only signal the process if it is really ours (pid files can outlive reboots).
  if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$name"; then
    echo "$name: pid $pid is not $name; leaving it alone and removing $pidfile" >&2
    rm -f "$pidfile"
    return
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: pid $pid ignored SIGTERM for 10 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
    rc=1
  fi
  rm -f "$pidfile"
  echo "$name: stopped (pid $pid)"
}

stop_one vfe-vhostd "$RUN_DIR/vfe-vhostd.pid"
stop_one vfe-vhostd-ha "$RUN_DIR/vfe-vhostd-ha.pid"
exit $rc
