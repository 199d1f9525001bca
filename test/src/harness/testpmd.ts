// DPDK testpmd with a net_virtio_user port: the real front-end for interop tests.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import { sleep, waitFor } from "./wait.js";

export type ForwardMode = "txonly" | "rxonly" | "io" | "macswap" | "icmpecho";

export interface TestpmdOptions {
  /** vhost-user socket path of the VF. */
  socket: string;
  /** server=1: testpmd listens and our VF connects (client mode on our side). */
  server: boolean;
  mode: ForwardMode;
  queues?: number;
  txpkts?: number;
  /** Extra virtio_user devargs, e.g. "mrg_rxbuf=0". */
  devargs?: string;
  mac?: string;
  ethPeer?: string;
  lcores?: string;
  /** Send a first burst at start (seeds an io/macswap loop). */
  txFirst?: boolean;
  logFile: string;
}

export interface PortTotals {
  rxPackets: number;
  rxDropped: number;
  txPackets: number;
  txDropped: number;
}

/**
 * Frames testpmd counts as sent but the back-end never saw: those still in the TX ring when
 * testpmd stops its port (GET_VRING_BASE stops the ring; a NIC discards them the same way).
 */
export function unsentInRing(sent: number, taken: number, queues: number, ringSize = 256): boolean {
  return taken <= sent && sent - taken <= queues * ringSize;
}

let seq = 0;
/** Every testpmd still running, so a failing test cannot leave one polling the CPU. */
const live = new Set<Testpmd>();
process.once("exit", () => Testpmd.killAll());

export class Testpmd {
  private output = "";
  private exited: Promise<number | null>;
  readonly prefix: string;

  private constructor(
    readonly proc: ChildProcess,
    readonly opts: TestpmdOptions,
    prefix: string,
  ) {
    this.prefix = prefix;
    proc.stdout!.on("data", (d: Buffer) => this.append(d));
    proc.stderr!.on("data", (d: Buffer) => this.append(d));
    this.exited = new Promise((r) => proc.once("exit", (code) => r(code)));
  }

  static async start(opts: TestpmdOptions): Promise<Testpmd> {
    const prefix = `vht${process.pid}_${seq++}`;
    fs.rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
    // A killed testpmd leaves its socket file and DPDK will not bind over it (QEMU unlinks
    // first); remove it as an orchestrator restarting the VM would.
    if (opts.server) fs.rmSync(opts.socket, { force: true });
    const q = opts.queues ?? 1;
    const dev = [`net_virtio_user0`, `path=${opts.socket}`, `queues=${q}`, ...(opts.server ? ["server=1"] : []), ...(opts.mac ? [`mac=${opts.mac}`] : []), ...(opts.devargs ? [opts.devargs] : [])].join(",");
    const args = [
      "--lcores", opts.lcores ?? "0@0,1@1", "--no-huge", "-m", "512", "--no-pci", `--file-prefix=${prefix}`, "--vdev", dev, "--",
      "--stats-period", "1", `--forward-mode=${opts.mode}`, `--rxq=${q}`, `--txq=${q}`, "--total-num-mbufs=32768",
      ...(opts.txpkts ? [`--txpkts=${opts.txpkts}`] : []),
      ...(opts.ethPeer ? [`--eth-peer=0,${opts.ethPeer}`] : []),
      ...(opts.txFirst ? ["--tx-first"] : []),
    ];
    const proc = spawn("dpdk-testpmd", args, { stdio: ["ignore", "pipe", "pipe"] });
    const t = new Testpmd(proc, opts, prefix);
    live.add(t);
    proc.once("exit", () => live.delete(t));
    t.append(Buffer.from(`$ dpdk-testpmd ${args.join(" ")}\n`));
    if (opts.server) await waitFor(() => fs.existsSync(opts.socket) || proc.exitCode !== null, 20_000, `testpmd to listen on ${opts.socket}`);
    else await waitFor(() => /Port 0: |No probed ethernet devices/.test(t.output) || proc.exitCode !== null, 20_000, "testpmd to probe its port");
    if (proc.exitCode !== null || /No probed ethernet devices/.test(t.output)) throw new Error(`testpmd failed to start:\n${t.output}`);
    return t;
  }

  private append(d: Buffer): void {
    this.output += d.toString();
    fs.appendFileSync(this.opts.logFile, d);
  }

  get log(): string {
    return this.output;
  }

  /** The port's counters from the latest periodic statistics (cumulative). */
  nicStats(): { rxPackets: number; txPackets: number } {
    const blocks = this.output.split("NIC statistics for port 0");
    const last = blocks.length > 1 ? blocks[blocks.length - 1] : "";
    const rx = /RX-packets:\s+(\d+)/.exec(last);
    const tx = /TX-packets:\s+(\d+)/.exec(last);
    return { rxPackets: rx ? Number(rx[1]) : 0, txPackets: tx ? Number(tx[1]) : 0 };
  }

  /** Waits until the periodic statistics show the counter past `min`. */
  async waitForTraffic(which: "rxPackets" | "txPackets", min: number, timeoutMs = 20_000): Promise<void> {
    await waitFor(() => this.nicStats()[which] > min, timeoutMs, `testpmd ${which} > ${min}`);
  }

  /** Ends testpmd with SIGINT and returns its accumulated totals. */
  async stop(): Promise<PortTotals> {
    if (this.proc.exitCode === null) this.proc.kill("SIGINT");
    const killer = setTimeout(() => this.proc.kill("SIGKILL"), 15_000);
    await this.exited;
    clearTimeout(killer);
    await sleep(10);
    fs.rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
    const acc = this.output.split("Accumulated forward statistics")[1];
    if (!acc) throw new Error(`testpmd printed no accumulated statistics:\n${this.output.slice(-3000)}`);
    const num = (re: RegExp) => Number(re.exec(acc)?.[1] ?? NaN);
    return {
      rxPackets: num(/RX-packets:\s+(\d+)/),
      rxDropped: num(/RX-dropped:\s+(\d+)/),
      txPackets: num(/TX-packets:\s+(\d+)/),
      txDropped: num(/TX-dropped:\s+(\d+)/),
    };
  }

  /** Kills every testpmd this process started (test teardown). */
  static killAll(): void {
    for (const t of live) t.kill();
  }

  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}
