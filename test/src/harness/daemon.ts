// Starts vfe-vhostd in a private run/state dir and drives it through the real CLI.
import { spawn, execFile, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { keeperCall } from "@vhostd/vhostd";
import { cliBin, keeperBin, vhostdBin } from "./paths.js";
import { Testpmd } from "./testpmd.js";
import { sleep } from "./wait.js";

export { sleep, waitFor } from "./wait.js";

export interface CliResult {
  code: number;
  /** Why it did not exit by itself: the signal that ended it (a timeout kills it). */
  signal?: string;
  stdout: string;
  stderr: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
}

export interface DaemonOptions {
  server?: boolean;
  env?: NodeJS.ProcessEnv;
  args?: string[];
  /** HA phase 1: start the keeper (vfe-vhostd-ha) first in the same run/state dirs, and vfe-vhostd --ha. */
  ha?: boolean;
  /** A command vfe-vhostd runs under, e.g. valgrind and its options (the benchmarks' instruction counts). */
  wrap?: string[];
  /** How long to wait for its first RPC answer (default 15 s; longer under valgrind). */
  startTimeoutMs?: number;
  /** Node options for both daemons, e.g. --cpu-prof (not allowed in NODE_OPTIONS). */
  nodeArgs?: string[];
  /** Both daemons' --log-level (default debug: tests read the logs; benchmarks run info, as installed). */
  logLevel?: "debug" | "info";
}

export class Daemon {
  proc: ChildProcess | null = null;
  /** The keeper, when started with { ha: true }. */
  keeper: ChildProcess | null = null;
  readonly logFile: string;
  readonly keeperLogFile: string;
  private lastOpts: DaemonOptions = {};
  private logLevel: "debug" | "info" = "debug";

  private constructor(
    readonly dir: string,
    readonly runDir: string,
    readonly stateDir: string,
  ) {
    this.logFile = path.join(dir, "vhostd.log");
    this.keeperLogFile = path.join(dir, "keeper.log");
  }

  static async start(opts: DaemonOptions = {}): Promise<Daemon> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-test-"));
    const d = new Daemon(dir, path.join(dir, "run"), path.join(dir, "state"));
    d.logLevel = opts.logLevel ?? "debug";
    if (opts.ha) await d.startKeeper(opts.env, opts.nodeArgs);
    try {
      await d.launch(opts);
    } catch (e) {
      await d.stopKeeper();
      throw e;
    }
    return d;
  }

  /** A path for a VF socket inside the test's directory. */
  sock(name: string): string {
    return path.join(this.dir, `${name}.sock`);
  }

  /** Starts the keeper and waits until its inspection socket answers (it restored its replica by then). */
  async startKeeper(env?: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<void> {
    const out = fs.openSync(this.keeperLogFile, "a");
    const k = spawn(process.execPath, [...nodeArgs, keeperBin, "--run-dir", this.runDir, "--state-dir", this.stateDir, "--log-level", this.logLevel], { stdio: ["ignore", out, out], env: { ...process.env, ...env } });
    fs.closeSync(out);
    this.keeper = k;
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      // A keeper killed while it starts has a signalCode, not an exitCode: stop waiting for it.
      if (k.exitCode !== null || k.signalCode !== null) throw new Error(`vfe-vhostd-ha exited with ${k.exitCode ?? k.signalCode}:\n${this.keeperLog()}`);
      if (await this.keeperCall({ method: "version" }).catch(() => null)) return;
      await sleep(50);
    }
    throw new Error(`vfe-vhostd-ha did not answer within 15 s:\n${this.keeperLog()}`);
  }

  /** One request on the keeper's inspection socket (<run-dir>/vfe-vhostd-ha.sock). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  keeperCall(req: Record<string, unknown>, timeoutMs = 2000): Promise<any> {
    return keeperCall(this.runDir, req, timeoutMs);
  }


  keeperLog(): string {
    try {
      return fs.readFileSync(this.keeperLogFile, "utf8");
    } catch {
      return "";
    }
  }

  /** kill -9 vfe-vhostd and wait until it is gone. */
  async killVhostd(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await exited;
  }

  /** kill -9 the keeper and wait until it is gone. */
  async killKeeper(): Promise<void> {
    const p = this.keeper;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    const t0 = Date.now();
    p.kill("SIGKILL");
    // A SIGKILLed process whose exit takes long holds its fds (and with them vfe-vhostd's
    // view of it) open: record what its threads were doing, for the test to print.
    const slow = setTimeout(() => this.slowExits.push(`pid ${p.pid} not gone ${Date.now() - t0} ms after SIGKILL:\n${threadStates(p.pid!)}\nother threads in D or R, or in mm code:\n${busyThreads(p.pid!)}`), 200);
    await exited;
    clearTimeout(slow);
    const ms = Date.now() - t0;
    if (ms >= 200) this.slowExits.push(`pid ${p.pid} exited ${ms} ms after SIGKILL`);
  }

  /** Keeper kills whose exit took 200 ms or more, with its threads' states at that moment. */
  readonly slowExits: string[] = [];

  /** Starts vfe-vhostd again with the options it was first started with; resolves once it answers RPC. */
  restartVhostd(): Promise<void> {
    return this.launch(this.lastOpts);
  }

  /**
   * Starts vfe-vhostd again and returns at once, without waiting for it (the benchmarks time
   * its restore by polling the RPC socket themselves: a CLI spawn per poll costs ~0.3 s here).
   */
  spawnVhostd(): void {
    this.spawnProc(this.lastOpts);
  }

  async launch(opts: DaemonOptions = {}): Promise<void> {
    this.spawnProc(opts);
    const limit = opts.startTimeoutMs ?? 15_000;
    const deadline = Date.now() + limit;
    while (Date.now() < deadline) {
      if (this.proc!.exitCode !== null || this.proc!.signalCode !== null) throw new Error(`vfe-vhostd exited with ${this.proc!.exitCode ?? this.proc!.signalCode}:\n${this.log()}`);
      const r = await this.cli(["version"]).catch(() => null);
      if (r && r.code === 0) return;
      await sleep(100);
    }
    throw new Error(`vfe-vhostd did not answer RPC within ${limit / 1000} s:\n${this.log()}`);
  }

  private spawnProc(opts: DaemonOptions): void {
    this.lastOpts = opts;
    const args = [...(opts.nodeArgs ?? []), vhostdBin, "--run-dir", this.runDir, "--state-dir", this.stateDir, "--log-level", this.logLevel, ...(opts.server ? ["--server"] : []), ...(opts.ha ? ["--ha"] : []), ...(opts.args ?? [])];
    const out = fs.openSync(this.logFile, "a");
    const [cmd, ...pre] = [...(opts.wrap ?? []), process.execPath];
    this.proc = spawn(cmd, [...pre, ...args], { stdio: ["ignore", out, out], env: { ...process.env, ...opts.env } });
    fs.closeSync(out);
  }

  cli(args: string[]): Promise<CliResult> {
    return new Promise((resolve) => {
      execFile(process.execPath, [cliBin, "--run-dir", this.runDir, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
        let json: unknown;
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        const signal = err && typeof err.code !== "number" ? `${err.signal ?? "?"}${err.killed ? " (killed: no exit within 20 s)" : ""}` : undefined;
        resolve({ code, ...(signal ? { signal } : {}), stdout, stderr, json });
      });
    });
  }

  /** Runs a CLI command that must succeed, returning its JSON. */
  async ok(args: string[]): Promise<any> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`vfe-vhost-cli ${args.join(" ")} failed (${r.code}${r.signal ? `, ${r.signal}` : ""}): ${r.stdout}${r.stderr}`);
    return r.json;
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }

  /** Parsed pino lines of the daemon's log. */
  logLines(): Array<Record<string, any>> {
    return pinoLines(this.log());
  }

  /** Parsed pino lines of the keeper's log. */
  keeperLogLines(): Array<Record<string, any>> {
    return pinoLines(this.keeperLog());
  }

  async waitForLog(pred: (line: Record<string, any>) => boolean, timeoutMs = 10_000): Promise<Record<string, any>> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const hit = this.logLines().find(pred);
      if (hit) return hit;
      await sleep(50);
    }
    throw new Error(`log line not seen within ${timeoutMs} ms`);
  }

  /** Stops the daemon and any peer the test left running. */
  async stop(): Promise<void> {
    Testpmd.killAll();
    await this.stopVhostd();
    await this.stopKeeper();
  }

  /** SIGTERM vfe-vhostd (in HA mode the keeper keeps running every VF). */
  async stopVhostd(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  }

  /** SIGTERM the keeper, if there is one (it closes every session it runs). */
  async stopKeeper(): Promise<void> {
    const k = this.keeper;
    if (!k || k.exitCode !== null || k.signalCode !== null) return;
    const exited = new Promise((r) => k.once("exit", r));
    k.kill("SIGTERM");
    const t = setTimeout(() => k.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  }

  cleanup(): void {
    // VHOSTD_KEEP_LOGS=1 keeps the run dir (daemon and keeper logs) for a post-mortem.
    if (process.env.VHOSTD_KEEP_LOGS === "1") {
      process.stderr.write(`kept ${this.dir}\n`);
      return;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Each thread of a process: name, state, kernel wait channel and kernel stack (root only). */
/** The JSON lines of a pino log (anything else, e.g. a stack trace, is skipped). */
export function pinoLines(text: string): Array<Record<string, any>> {
  return text
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return {};
      }
    });
}

export function threadStates(pid: number): string {
  const read = (f: string) => {
    try {
      return fs.readFileSync(f, "utf8").trim();
    } catch {
      return "?";
    }
  };
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return "  (gone)";
  }
  return tids
    .map((tid) => {
      const dir = `/proc/${pid}/task/${tid}`;
      const state = /State:\s*(.*)/.exec(read(`${dir}/status`))?.[1] ?? "?";
      return `  ${tid} ${read(`${dir}/comm`)} ${state} wchan=${read(`${dir}/wchan`)}\n    ${read(`${dir}/stack`).split("\n").slice(0, 8).join("\n    ")}`;
    })
    .join("\n");
}

/** Every other thread on the host that is runnable, in disk sleep, or inside memory-map code. */
function busyThreads(except: number): string {
  const out: string[] = [];
  for (const pid of fs.readdirSync("/proc").filter((n) => /^\d+$/.test(n) && Number(n) !== except)) {
    let tids: string[] = [];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      const dir = `/proc/${pid}/task/${tid}`;
      let status = "", stack = "", comm = "";
      try {
        status = fs.readFileSync(`${dir}/status`, "utf8");
        stack = fs.readFileSync(`${dir}/stack`, "utf8");
        comm = fs.readFileSync(`${dir}/comm`, "utf8").trim();
      } catch {
        continue;
      }
      const state = /State:\s*(.*)/.exec(status)?.[1] ?? "?";
      if (/^[DR]/.test(state) || /mmap|rmap|unmap|zap_|populate|fault|mlock|madvise|i_mmap/.test(stack))
        out.push(`  ${pid}/${tid} ${comm} ${state}\n    ${stack.trim().split("\n").slice(0, 10).join("\n    ")}`);
    }
  }
  return out.join("\n");
}
