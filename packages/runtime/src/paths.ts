// Where both daemons and their tools keep things: every file name inside the run and state
// directories is spelled here once. Other tools (scripts, tests) depend on these names exactly.
import { join, resolve } from "node:path";
import { MIRROR_SOCKET_NAME, RPC_SOCKET_NAME } from "@vhostd/proto";

export const DEFAULT_RUN_DIR = "/run/vhostd";
export const DEFAULT_STATE_DIR = "/var/lib/vhostd";
export const ENV_RUN_DIR = "VHOSTD_RUN_DIR";
export const ENV_STATE_DIR = "VHOSTD_STATE_DIR";

export const PID_FILE_NAME = "vfe-vhostd.pid";
/** The keeper's pid file (written by vfe-vhostd-ha or by scripts/start-pair.sh). */
export const HA_PID_FILE_NAME = "vfe-vhostd-ha.pid";
/** Default prefix of VF sockets inside the run dir: <run-dir>/vf-<DEVICE>. */
export const VF_SOCKET_PREFIX = "vf-";
/** The journal inside the state dir: <state-dir>/journal (LMDB: data.mdb, lock.mdb). */
export const JOURNAL_DIR_NAME = "journal";

export interface Paths {
  runDir: string;
  stateDir: string;
  /** <run-dir>/vfe-vhostd.sock, mode 0600. */
  rpcSocket: string;
  /** <run-dir>/vfe-vhostd.pid */
  pidFile: string;
  haPidFile: string;
  /** <state-dir>/logs */
  logDir: string;
  /** <state-dir>/journal: the LMDB journal (a directory), see journal.ts. */
  journalDir: string;
}

/** Flag, else environment, else default. */
export function resolvePaths(opts: { runDir?: string; stateDir?: string }, env: NodeJS.ProcessEnv = process.env): Paths {
  // One spelling (absolute, no "//", "." or ".."): default VF sockets are <run-dir>/vf-<DEVICE>
  // and must pass the same one-spelling rule as a socket given with `vf -a -v`.
  const runDir = resolve(opts.runDir || env[ENV_RUN_DIR] || DEFAULT_RUN_DIR);
  const stateDir = resolve(opts.stateDir || env[ENV_STATE_DIR] || DEFAULT_STATE_DIR);
  return {
    runDir,
    stateDir,
    rpcSocket: join(runDir, RPC_SOCKET_NAME),
    pidFile: join(runDir, PID_FILE_NAME),
    haPidFile: join(runDir, HA_PID_FILE_NAME),
    logDir: join(stateDir, "logs"),
    journalDir: join(stateDir, JOURNAL_DIR_NAME),
  };
}

/** The keeper's local inspection socket inside the run dir (0600). */
export const KEEPER_SOCKET_NAME = "vfe-vhostd-ha.sock";
/** Largest request or reply line on the keeper socket. */
export const KEEPER_MAX_LINE_BYTES = 1 << 20;

export function keeperSocketPath(runDir: string): string {
  return join(runDir, KEEPER_SOCKET_NAME);
}

/** <run-dir>/locks: one OFD-locked file per VF whose queues run (see session/vf_lock.ts). */
export function mirrorLockDir(runDir: string): string {
  return join(runDir, "locks");
}

/** <run-dir>/engine-shared: counters and TX progress records both daemons' engines map. */
export function mirrorSharedPath(runDir: string): string {
  return join(runDir, "engine-shared");
}

/** <run-dir>/session-inbox: the vhost-user message inbox both daemons map (cc/inbox.cc). */
export function inboxPath(runDir: string): string {
  return join(runDir, "session-inbox");
}

/** <run-dir>/keeper.beacon: the keeper's exit beacon (native armExitBeacon / ExitProbe). */
export function keeperBeaconPath(runDir: string): string {
  return join(runDir, "keeper.beacon");
}

/** The session mirror's socket: the keeper sends, vfe-vhostd holds. */
export function mirrorSocketPath(runDir: string): string {
  return join(runDir, MIRROR_SOCKET_NAME);
}
