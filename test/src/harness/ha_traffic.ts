// The traffic both HA kill tests run under: an HA pair with two net PFs;
//  - two client-mode VFs (A, B) with the project's driver carrying numbered streams both ways
//    (exact loss/duplication/corruption accounting);
//  - a server-mode VF (T) with dpdk-testpmd virtio-user in its DEFAULT CLIENT mode (it can never
//    reconnect) in txonly, and a client-mode VF (R) with testpmd server=1 in rxonly, on the
//    second PF (its own switch: txonly floods only to the rxonly VF).
// start() brings it up and streaming; finish() stops it and returns every count the tests judge.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { FrontendDriver, type DriverStats } from "@vhostd/frontend";
import { Daemon, sleep, waitFor } from "./daemon.js";
import { Testpmd } from "./testpmd.js";

export const PF1 = "0000:af:00.2"; // drivers
export const PF2 = "0000:b0:00.2"; // testpmd pair
export const VF_A = "0000:af:04.5";
export const VF_B = "0000:af:05.5";
export const VF_T = "0000:b0:04.5"; // server mode, testpmd default client, txonly
export const VF_R = "0000:b0:05.5"; // client mode, testpmd server=1, rxonly
const PPS = 20_000;
const FRAME = 512;

/** A seeded PRNG (the drill's), so a failing run can be replayed. */
export { rng } from "@vhostd/vhostd";

export async function queueSum(d: Daemon, vf: string, dir: "rx" | "tx", field: "packets" | "drops" | "errors"): Promise<number> {
  const info = await d.ok(["vf", "-i", vf]);
  const queues: Array<Record<string, number>> = info.device.queues;
  return queues.filter((q) => (q.index % 2 === 0) === (dir === "rx")).reduce((s, q) => s + (q[field] ?? 0), 0);
}

export async function vfList(d: Daemon): Promise<Record<string, unknown>[]> {
  const a = await d.ok(["vf", "-l", PF1]);
  const b = await d.ok(["vf", "-l", PF2]);
  return [...a.devices, ...b.devices];
}

/** Busy-polling testpmd must not starve the drivers and the engine on 2 vCPUs. */
function nice(p: Testpmd): void {
  try {
    execFileSync("renice", ["-n", "19", "-p", String(p.proc.pid)], { stdio: "ignore" });
  } catch {
    /* best effort */
  }
}

export interface StreamResult {
  sent: number;
  received: number;
  lost: number;
  dup: number;
  corrupt: number;
  reordered: number;
  maxGapUs: number;
  /** Engine-counted RX drops at the receiver. */
  drops: number;
  /** Times the receiving driver found every buffer it had posted used: the engine had none to
   *  fill, and drops then are the instrument's lateness (driver rxRingEmptied). */
  receiverEmptied: number;
}

export interface HaTrafficResult {
  /** A->B and B->A. */
  streams: [StreamResult, StreamResult];
  reconnects: Record<string, number>;
  testpmdTx: { sent: number; tookByEngine: number };
  testpmdRx: { received: number; delivered: number; drops: number };
}

export class HaTraffic {
  private constructor(
    readonly d: Daemon,
    readonly a: FrontendDriver,
    readonly b: FrontendDriver,
    readonly tx: Testpmd,
    readonly rx: Testpmd,
    private readonly tmp: string,
  ) {}

  /** `env`: for both daemons (and what the test passes to their restarts). */
  static async start(opts: { env?: NodeJS.ProcessEnv } = {}): Promise<HaTraffic> {
    const tmp = fs.mkdtempSync("/tmp/vhostd-ha-cfg-");
    const cfg = `${tmp}/config.json`;
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        pfs: [
          { dev: PF1, type: "net", firstVfOffset: 35, numVfs: 8 },
          { dev: PF2, type: "net", firstVfOffset: 35, numVfs: 8, macPrefix: "52:54:01" },
        ],
      }),
    );
    const d = await Daemon.start({ ha: true, args: ["--config", cfg], ...(opts.env ? { env: opts.env } : {}) });
    try {
      await d.ok(["mgmtpf", "-a", PF1]);
      await d.ok(["mgmtpf", "-a", PF2]);
      // 4096-entry rings absorb 200 ms of stream: on 2 vCPUs shared with two busy-polling
      // testpmds and node start-ups, a receiving driver thread is sometimes not scheduled for
      // ~100 ms (once, in CI, 360 ms). What overflows then is counted by the driver
      // (rxRingEmptied), so the tests can tell the instrument's lateness from a datapath fault.
      // (Raising the drivers' priority instead starved the daemons: their threads wake every
      // 20 µs under traffic.)
      const fo = { connectTimeoutMs: 10_000, queueSize: 4096, memSize: 96 << 20 };
      const aP = FrontendDriver.listen(d.sock("a"), fo);
      const bP = FrontendDriver.listen(d.sock("b"), fo);
      await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
      await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
      const [a, b] = await Promise.all([aP, bP]);
      await Promise.all([a.handshake(), b.handshake()]);
      const rx = await Testpmd.start({ socket: d.sock("r"), server: true, mode: "rxonly", logFile: `${d.dir}/testpmd-rx.log`, lcores: "0@1,1@0", txpkts: 64 });
      await d.ok(["vf", "-a", VF_R, "-v", d.sock("r")]);
      await d.ok(["vf", "-a", VF_T, "-v", d.sock("t"), "--server"]);
      const tx = await Testpmd.start({ socket: d.sock("t"), server: false, mode: "txonly", logFile: `${d.dir}/testpmd-tx.log`, txpkts: 64 });
      nice(rx);
      nice(tx);
      await tx.waitForTraffic("txPackets", 1000);
      await rx.waitForTraffic("rxPackets", 1000);
      // Streams both ways, long enough to outlast every kill (stopped explicitly by finish()).
      const count = PPS * 600;
      a.device.startRx(0);
      b.device.startRx(0);
      // The driver posts its receive buffers from its own thread once RX is active: frames sent
      // at once could find an empty ring.
      await sleep(50);
      a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: FRAME, count, ratePps: PPS, streamId: 1 });
      b.device.startTx(0, { dstMac: a.mac, srcMac: b.mac, frameSize: FRAME, count, ratePps: PPS, streamId: 2 });
      await waitFor(() => a.device.stats(0).rxPackets > 2000 && b.device.stats(0).rxPackets > 2000, 10_000, "streams flowing");
      return new HaTraffic(d, a, b, tx, rx, tmp);
    } catch (e) {
      await d.stop();
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** Frames the two drivers received so far (a datapath progress probe). */
  framesReceived(): number {
    return this.a.device.stats(0).rxPackets + this.b.device.stats(0).rxPackets;
  }

  /** Stops every stream, lets every frame land, and counts. */
  async finish(): Promise<HaTrafficResult> {
    const { a, b, d } = this;
    a.device.stopTx(0);
    b.device.stopTx(0);
    await sleep(200);
    const sentA = a.device.stats(0).txPackets;
    const sentB = b.device.stats(0).txPackets;
    let dropsA = 0;
    let dropsB = 0;
    await waitFor(
      async () => {
        dropsA = await queueSum(d, VF_A, "rx", "drops");
        dropsB = await queueSum(d, VF_B, "rx", "drops");
        return a.device.stats(0).rxPackets + dropsA >= sentB && b.device.stats(0).rxPackets + dropsB >= sentA;
      },
      20_000,
      "every stream frame delivered or counted",
    ).catch(() => undefined); // the tests' assertions say exactly what is missing
    const stream = (s: DriverStats, sent: number, drops: number): StreamResult => ({
      sent,
      received: s.rxPackets,
      lost: s.rxLost,
      dup: s.rxDuplicated,
      corrupt: s.rxCorrupted,
      reordered: s.rxReordered,
      maxGapUs: s.rxMaxGapUs,
      drops,
      receiverEmptied: s.rxRingEmptied,
    });
    const streams: [StreamResult, StreamResult] = [stream(b.device.stats(0), sentA, dropsB), stream(a.device.stats(0), sentB, dropsA)];
    const reconnects: Record<string, number> = {};
    for (const vf of [VF_A, VF_B, VF_T, VF_R]) reconnects[vf] = (await d.ok(["vf", "-i", vf])).device.reconnects;
    const sent = await this.tx.stop();
    await sleep(300);
    const tookByEngine = await queueSum(d, VF_T, "tx", "packets");
    const delivered = await queueSum(d, VF_R, "rx", "packets");
    const dropsR = await queueSum(d, VF_R, "rx", "drops");
    const got = await this.rx.stop();
    return { streams, reconnects, testpmdTx: { sent: sent.txPackets, tookByEngine }, testpmdRx: { received: got.rxPackets, delivered, drops: dropsR } };
  }

  async close(): Promise<void> {
    this.a.close();
    this.b.close();
    await this.d.stop();
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}
