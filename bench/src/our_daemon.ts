// Our back-end as the net cases run it: one vfe-vhostd pinned to the back-end CPU with the
// bench's PF; every daemon (and testpmd) still running is killed when the bench exits.
import { Daemon } from "@vhostd/test/harness/daemon";
import { killAllPmds } from "./pmd.js";
import { pin } from "./sys.js";
import { BE_CPU, PF } from "./topology.js";

const daemons = new Set<Daemon>();
export function killAll(): void {
  killAllPmds();
  for (const d of daemons) if (d.proc && d.proc.exitCode === null) d.proc.kill("SIGKILL");
}
process.once("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });

export async function startOurs(env?: NodeJS.ProcessEnv): Promise<Daemon> {
  const d = await Daemon.start({ logLevel: "info", env });
  daemons.add(d);
  pin(d.proc!.pid!, String(BE_CPU));
  await d.ok(["mgmtpf", "-a", PF]);
  return d;
}

export async function stopOurs(d: Daemon | undefined, keep: boolean): Promise<void> {
  if (!d) return;
  await d.stop();
  daemons.delete(d);
  if (!keep) d.cleanup();
}

export async function vfsRunning(d: Daemon, vfs: string[]): Promise<boolean> {
  for (const vf of vfs) {
    const r = await d.cli(["vf", "-i", vf]);
    if (r.code !== 0 || r.json?.device?.state !== "running") return false;
  }
  return true;
}
