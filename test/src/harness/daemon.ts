// Starts vfe-vhostd in a private run/state dir and drives it through the real CLI.
import { spawn, execFile, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { cliBin, vhostdBin } from "./paths.js";
import { Testpmd } from "./testpmd.js";
import { sleep } from "./wait.js";

export { sleep, waitFor } from "./wait.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
}

export interface DaemonOptions {
  server?: boolean;
  env?: NodeJS.ProcessEnv;
  args?: string[];
}

export class Daemon {
  proc: ChildProcess | null = null;
  readonly logFile: string;

  private constructor(
    readonly dir: string,
    readonly runDir: string,
    readonly stateDir: string,
  ) {
    this.logFile = path.join(dir, "vhostd.log");
  }

  static async start(opts: DaemonOptions = {}): Promise<Daemon> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-test-"));
    const d = new Daemon(dir, path.join(dir, "run"), path.join(dir, "state"));
    await d.launch(opts);
    return d;
  }

  /** A path for a VF socket inside the test's directory. */
  sock(name: string): string {
    return path.join(this.dir, `${name}.sock`);
  }

  async launch(opts: DaemonOptions = {}): Promise<void> {
    const args = [vhostdBin, "--run-dir", this.runDir, "--state-dir", this.stateDir, "--log-level", "debug", ...(opts.server ? ["--server"] : []), ...(opts.args ?? [])];
    const out = fs.openSync(this.logFile, "a");
    this.proc = spawn(process.execPath, args, { stdio: ["ignore", out, out], env: { ...process.env, ...opts.env } });
    fs.closeSync(out);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`vfe-vhostd exited with ${this.proc.exitCode}:\n${this.log()}`);
      const r = await this.cli(["version"]).catch(() => null);
      if (r && r.code === 0) return;
      await sleep(100);
    }
    throw new Error(`vfe-vhostd did not answer RPC within 15 s:\n${this.log()}`);
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
        resolve({ code, stdout, stderr, json });
      });
    });
  }

  /** Runs a CLI command that must succeed, returning its JSON. */
  async ok(args: string[]): Promise<any> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`vfe-vhost-cli ${args.join(" ")} failed (${r.code}): ${r.stdout}${r.stderr}`);
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
    return this.log()
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
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  }

  cleanup(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
