// A fresh vhostd pair for a drill: keeper (vfe-vhostd-ha) and vfe-vhostd --ha in a private
// temporary run/state dir, started, SIGKILLed and restarted the way systemd would (keeper first,
// then vfe-vhostd, which waits for nothing but finds the keeper's sockets ready). Every child is
// tracked so that cleanup() - also on SIGINT - leaves no process and no directory behind.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { controlPlaneUp, keeperCall, mirrorComplete } from "./rpc.js";

const here = dirname(fileURLToPath(import.meta.url)); // <vhostd package>/dist/src/drill
const vhostdPkg = resolve(here, "../../..");

/**
 * The daemons' launchers. vfe-vhostd is in this package. The keeper's package (@vhostd/ha) is not
 * a dependency of this one: it is found beside it, in the source tree (packages/ha) or in an
 * install (PREFIX/lib/node_modules/@vhostd/ha, next to the @vhostd/vhostd link the CLI was
 * started through; this module's own path is the link's target in pnpm's store).
 * VHOSTD_KEEPER_BIN overrides both.
 */
export function daemonBins(env: NodeJS.ProcessEnv = process.env): { vhostd: string; keeper: string | undefined } {
  const vhostd = join(vhostdPkg, "bin", "vfe-vhostd.js");
  const launched = process.argv[1] ? resolve(dirname(process.argv[1]), "../../ha/bin/vfe-vhostd-ha.js") : undefined;
  const candidates = [env.VHOSTD_KEEPER_BIN, resolve(vhostdPkg, "../ha/bin/vfe-vhostd-ha.js"), launched];
  return { vhostd, keeper: candidates.find((c): c is string => !!c && existsSync(c)) };
}

export type Daemon = "vhostd" | "keeper";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Environment for the children: nothing that would redirect them or make them talk to systemd. */
function childEnv(): NodeJS.ProcessEnv {
  const e = { ...process.env };
  for (const k of Object.keys(e)) if (k.startsWith("VHOSTD_") || k === "NOTIFY_SOCKET" || k === "WATCHDOG_USEC" || k === "WATCHDOG_PID") delete e[k];
  return e;
}

export interface PairOptions {
  standalone: boolean;
  /** Written to <dir>/config.json and passed with --config (the PFs the drill uses). */
  config: unknown;
  /** Leave the directory (and its logs) in place at cleanup. */
  keep: boolean;
}

export class Pair {
  readonly dir: string;
  readonly runDir: string;
  readonly stateDir: string;
  private procs: Record<Daemon, ChildProcess | undefined> = { vhostd: undefined, keeper: undefined };
  private readonly bins = daemonBins();
  private cleaned = false;

  constructor(private readonly opts: PairOptions) {
    if (!opts.standalone && !this.bins.keeper) throw new Error("the keeper (vfe-vhostd-ha) is not built or not found: build it, set VHOSTD_KEEPER_BIN, or drill --standalone");
    if (!existsSync(this.bins.vhostd) || !existsSync(join(vhostdPkg, "dist", "src", "main.js"))) throw new Error(`vfe-vhostd is not built (${this.bins.vhostd}): run pnpm run build`);
    this.dir = mkdtempSync(join(tmpdir(), "vhostd-drill-"));
    this.runDir = join(this.dir, "run");
    this.stateDir = join(this.dir, "state");
    writeFileSync(join(this.dir, "config.json"), JSON.stringify(opts.config, null, 2));
  }

  get ha(): boolean {
    return !this.opts.standalone;
  }

  /** A path for a front-end socket inside the drill's directory. */
  sock(name: string): string {
    return join(this.dir, `${name}.sock`);
  }

  logFile(d: Daemon): string {
    return join(this.dir, d === "vhostd" ? "vfe-vhostd.log" : "vfe-vhostd-ha.log");
  }

  pid(d: Daemon): number | undefined {
    const p = this.procs[d];
    return p && p.exitCode === null && p.signalCode === null ? p.pid : undefined;
  }

  /** Starts the pair as production does: the keeper first (when HA), then vfe-vhostd. */
  async start(): Promise<void> {
    if (this.ha) await this.startDaemon("keeper");
    await this.startDaemon("vhostd");
  }

  /**
   * Starts one daemon and resolves once it serves: the keeper when its inspection socket
   * answers (it restored its replica by then), vfe-vhostd when `version` answers and, with a
   * keeper, once it holds a copy of every session again (so a keeper kill after it is adopted).
   * This is readiness for the drill's sequencing only; recovery times are measured by the caller.
   */
  async startDaemon(d: Daemon): Promise<void> {
    const args =
      d === "keeper"
        ? [this.bins.keeper!, "--run-dir", this.runDir, "--state-dir", this.stateDir]
        : [this.bins.vhostd, "--run-dir", this.runDir, "--state-dir", this.stateDir, "--config", join(this.dir, "config.json"), ...(this.ha ? ["--ha"] : [])];
    const out = openSync(this.logFile(d), "a");
    const p = spawn(process.execPath, args, { stdio: ["ignore", out, out], env: childEnv() });
    closeSync(out);
    this.procs[d] = p;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.cleaned) throw new Error("drill interrupted");
      if (p.exitCode !== null || p.signalCode !== null) {
        // The directory may be gone by the time anyone reads the message: quote the log's end.
        const tail = readFileSync(this.logFile(d), "utf8").trimEnd().split("\n").slice(-3).join(" | ");
        throw new Error(`${d === "keeper" ? "vfe-vhostd-ha" : "vfe-vhostd"} exited during start-up (${p.exitCode ?? p.signalCode}): ${tail}`);
      }
      const up =
        d === "keeper"
          ? await keeperCall(this.runDir, { method: "version" }).then(() => true, () => false)
          : (await controlPlaneUp(this.runDir, false)) && (!this.running("keeper") || (await mirrorComplete(this.runDir)));
      if (up) return;
      await sleep(25);
    }
    throw new Error(`${d} did not come up within 30 s; see ${this.logFile(d)}`);
  }

  private running(d: Daemon): boolean {
    const p = this.procs[d];
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  /** SIGKILL and wait until the kernel has reaped it (so its sockets are really gone). */
  async kill(d: Daemon): Promise<void> {
    const p = this.procs[d];
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await exited;
  }

  /** SIGTERM (then SIGKILL after 5 s) every child, and remove the directory unless --keep. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    // vfe-vhostd first: a SIGTERMed keeper closes every session, which is the end anyway.
    for (const d of ["vhostd", "keeper"] as const) {
      const p = this.procs[d];
      if (!p || p.exitCode !== null || p.signalCode !== null) continue;
      const exited = new Promise((r) => p.once("exit", r));
      p.kill("SIGTERM");
      const t = setTimeout(() => p.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
    if (!this.opts.keep) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Last resort on process exit (synchronous): nothing may outlive the drill. */
  killAllNow(): void {
    for (const p of Object.values(this.procs)) if (p && p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    if (!this.opts.keep) rmSync(this.dir, { recursive: true, force: true });
  }
}
