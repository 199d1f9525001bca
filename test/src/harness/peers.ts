// Real peers must be present: a missing one fails the test loudly, unless the run was
// explicitly told to skip peer tests (VHOSTD_SKIP_PEERS=1), in which case the test says so.
import { execFileSync } from "node:child_process";
import type { ExecutionContext } from "ava";

export function which(cmd: string): string | null {
  try {
    return execFileSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

/** Returns false (test skipped with the reason) only when skipping was asked for. */
export function needPeer(t: ExecutionContext, cmd: string): boolean {
  if (which(cmd)) return true;
  if (process.env.VHOSTD_SKIP_PEERS === "1") {
    t.log(`skipped: ${cmd} is not installed and VHOSTD_SKIP_PEERS=1`);
    t.pass();
    return false;
  }
  throw new Error(`${cmd} is not installed: run scripts/install-peers.sh (or set VHOSTD_SKIP_PEERS=1 to skip peer tests)`);
}
