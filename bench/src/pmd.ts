// dpdk-testpmd processes for the benchmarks: a front-end with several net_virtio_user ports,
// or the reference back-end with net_vhost ports. Unlike the test harness's Testpmd (one
// port), these take any list of --vdev and parse the periodic per-port statistics as they
// arrive, with the time each block was seen.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { sleep, waitFor } from "@vhostd/test/harness/wait";

export interface PortSample {
  /** performance.now() when the block was read. */
  t: number;
  port: number;
  rxPackets: number;
  txPackets: number;
  /** testpmd's "Throughput (since last show)", measured with its own TSC. */
  rxPps: number;
  txPps: number;
}

export interface PmdOptions {
  /** Log file name inside dir, and part of the DPDK file prefix. */
  name: string;
  dir: string;
  /** EAL --lcores, e.g. "0@0,1@0": main lcore 0 and forwarding lcore 1 both on CPU 0. */
  lcores: string;
  vdevs: string[];
  /** Application arguments after "--". */
  args: string[];
  /** Interactive (-i) with stdin held open: ports are started but nothing is forwarded. */
  interactive?: boolean;
  /**
   * Unix sockets the process must have created (server=1) before start() returns. A
   * virtio-user port with server=1 blocks the probe until a back-end connects, so testpmd
   * creates its sockets one at a time: pass only the first.
   */
  waitSockets?: string[];
  /** A command testpmd runs under, e.g. valgrind and its options. */
  wrap?: string[];
  /** How long start() waits for the ports (default 30 s). */
  startTimeoutMs?: number;
}

let seq = 0;
const live = new Set<Pmd>();
/** A bench interrupted or failing must not leave a testpmd polling a CPU. */
export function killAllPmds(): void {
  for (const p of live) p.kill();
}

export class Pmd {
  readonly samples: PortSample[] = [];
  private output = "";
  private pending = "";
  private readonly exited: Promise<number | null>;
  readonly logFile: string;

  private constructor(
    readonly proc: ChildProcess,
    readonly prefix: string,
    readonly opts: PmdOptions,
  ) {
    this.logFile = path.join(opts.dir, `${opts.name}.log`);
    proc.stdout!.on("data", (d: Buffer) => this.append(d));
    proc.stderr!.on("data", (d: Buffer) => this.append(d));
    this.exited = new Promise((r) => proc.once("exit", (code) => r(code)));
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get log(): string {
    return this.output;
  }

  static async start(opts: PmdOptions): Promise<Pmd> {
    const prefix = `vhbench${process.pid}_${opts.name}${seq++}`;
    fs.rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
    for (const s of opts.waitSockets ?? []) fs.rmSync(s, { force: true });
    const args = [
      "--lcores", opts.lcores, "--no-huge", "-m", "512", "--no-pci", `--file-prefix=${prefix}`,
      ...opts.vdevs.flatMap((v) => ["--vdev", v]),
      "--", ...(opts.interactive ? ["-i"] : []), ...opts.args,
    ];
    const [cmd, ...pre] = [...(opts.wrap ?? []), "dpdk-testpmd"];
    const proc = spawn(cmd, [...pre, ...args], { stdio: [opts.interactive ? "pipe" : "ignore", "pipe", "pipe"] });
    const p = new Pmd(proc, prefix, opts);
    live.add(p);
    proc.once("exit", () => live.delete(p));
    proc.once("error", () => live.delete(p));
    fs.writeFileSync(p.logFile, `$ ${[cmd, ...pre].join(" ")} ${args.join(" ")}\n`);
    const socks = opts.waitSockets ?? [];
    try {
      await waitFor(() => proc.exitCode !== null || /No probed ethernet devices/.test(p.output) || (socks.length > 0 ? socks.every((s) => fs.existsSync(s)) : /Port \d+: /.test(p.output)), opts.startTimeoutMs ?? 30_000, `testpmd ${opts.name} to start`);
      if (proc.exitCode !== null || /No probed ethernet devices/.test(p.output)) throw new Error(`testpmd ${opts.name} failed to start:\n${p.output.slice(-3000)}`);
    } catch (e) {
      await p.stop().catch(() => p.kill());
      throw e;
    }
    return p;
  }

  private append(d: Buffer): void {
    const s = d.toString();
    this.output += s;
    fs.appendFileSync(this.logFile, d);
    this.pending += s;
    const re = /NIC statistics for port (\d+)\s*#+([\s\S]*?)#{20,}/g;
    let m: RegExpExecArray | null;
    let consumed = 0;
    const t = performance.now();
    while ((m = re.exec(this.pending))) {
      const body = m[2];
      const num = (r: RegExp) => Number(r.exec(body)?.[1] ?? NaN);
      this.samples.push({ t, port: Number(m[1]), rxPackets: num(/RX-packets:\s+(\d+)/), txPackets: num(/TX-packets:\s+(\d+)/), rxPps: num(/Rx-pps:\s+(\d+)/), txPps: num(/Tx-pps:\s+(\d+)/) });
      consumed = re.lastIndex;
    }
    if (consumed) this.pending = this.pending.slice(consumed);
    if (this.pending.length > 100_000) this.pending = this.pending.slice(-10_000);
  }

  /** Sum over ports of the latest cumulative RX-packets. */
  rxTotal(): number {
    const last = new Map<number, number>();
    for (const s of this.samples) last.set(s.port, s.rxPackets);
    return [...last.values()].reduce((a, b) => a + b, 0);
  }

  /** Ends the process (SIGINT, or "quit" when interactive), SIGKILL after 15 s. */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      if (this.opts.interactive && this.proc.stdin) this.proc.stdin.end("quit\n");
      else this.proc.kill("SIGINT");
    }
    const killer = setTimeout(() => this.kill(), 15_000);
    await this.exited;
    clearTimeout(killer);
    await sleep(10);
    fs.rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
    fs.rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
  }
}
