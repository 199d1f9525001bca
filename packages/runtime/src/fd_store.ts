// systemd's file-descriptor store (FileDescriptorStoreMax= in the unit): fds pushed with
// "FDSTORE=1" and a name survive this process; when systemd starts it again they come back
// through LISTEN_FDS / LISTEN_FDNAMES (sd_listen_fds_with_names(3)). Outside systemd (no
// $NOTIFY_SOCKET) every call is a no-op, so the daemons run the same everywhere else.
import type { Logger } from "pino";
import { native } from "@vhostd/native";

/** sd_listen_fds(3): passed fds start here. */
export const LISTEN_FDS_START = 3;
/** Names systemd accepts (fdname_is_valid): printable ASCII without ':', at most 255 bytes. */
const FDNAME = /^[\x21-\x39\x3b-\x7e]{1,255}$/;

export function validFdName(name: string): boolean {
  return FDNAME.test(name);
}

/**
 * The fds systemd passed to this process, by name (names may repeat: a name maps to every fd
 * that carried it, in order). Empty unless LISTEN_PID is this process. The variables are
 * removed from the environment so children do not take the fds for theirs.
 */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid = process.pid): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const forUs = env.LISTEN_PID === String(pid);
  const count = Number(env.LISTEN_FDS);
  const names = (env.LISTEN_FDNAMES ?? "").split(":");
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (!forUs || !Number.isSafeInteger(count) || count <= 0) return out;
  for (let i = 0; i < count; i++) {
    const name = names[i] && validFdName(names[i]!) ? names[i]! : "unknown";
    const fds = out.get(name) ?? [];
    fds.push(LISTEN_FDS_START + i);
    out.set(name, fds);
  }
  return out;
}

/** Pushes fds to systemd's store under names, and takes them out again. */
export class FdStore {
  private warned = false;

  constructor(private readonly log?: Logger) {}

  /** Whether there is a systemd to hold fds (its notify socket is set). */
  get available(): boolean {
    return !!process.env.NOTIFY_SOCKET;
  }

  /** Stores `fds` (ours still; systemd keeps duplicates) under `name`. False when there is no store or the push failed. */
  push(name: string, fds: number[]): boolean {
    if (!validFdName(name)) throw new RangeError(`fd store name ${JSON.stringify(name)} is not valid for systemd`);
    if (fds.length === 0) return true;
    return this.notify(`FDSTORE=1\nFDNAME=${name}`, fds);
  }

  /** Drops every fd stored under `name`. */
  remove(name: string): boolean {
    if (!validFdName(name)) throw new RangeError(`fd store name ${JSON.stringify(name)} is not valid for systemd`);
    return this.notify(`FDSTOREREMOVE=1\nFDNAME=${name}`, []);
  }

  private notify(state: string, fds: number[]): boolean {
    try {
      return native.sdNotify(state, fds);
    } catch (e) {
      if (!this.warned) {
        this.warned = true;
        this.log?.warn({ event: "fd_store_failed", err: (e as Error).message }, `systemd fd store: ${(e as Error).message}`);
      }
      return false;
    }
  }
}
