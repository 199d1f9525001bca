// The stage of the hostile-input catalogue: an HA pair (keeper + vfe-vhostd, as `pnpm start`
// runs it), two victim VFs exchanging numbered streams through the engine with the project's
// driver, and two VFs left to attackers (net and blk, server mode so an attacker connects as
// often as it likes). After every hostile case the catalogue asks `problem()`: both daemons must
// have their first pids, RPC must answer, and the victims' streams must have nothing duplicated,
// corrupted or reordered, with both still moving. At the end `finish()` checks every frame a
// victim missed is one the engine counted as dropped.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { native } from "@vhostd/native";
import { FrontendDriver } from "@vhostd/frontend";
import { Daemon, sleep, waitFor } from "./daemon.js";

export const NET_PF = "0000:af:00.2";
export const BLK_PF = "0000:af:00.3";
export const VF_A = "0000:af:05.5";
export const VF_B = "0000:af:06.5";
/** The attackers' VFs. */
export const VF_NET = "0000:af:04.5";
export const VF_BLK = "0000:af:05.1";
/** Size of the attacker blk VF's disk (a sparse file in the test dir). */
export const BLK_DISK_BYTES = 16 << 20;

export interface StreamCheck {
  rx: number;
  lost: number;
  dup: number;
  corrupt: number;
  reordered: number;
}

export class HostileWorld {
  readonly vhostdPid: number;
  keeperPid: number;
  /** Between killKeeper() and restartKeeper(): vfe-vhostd runs every VF itself. */
  keeperDown = false;
  private lastRx = [0, 0];

  private constructor(
    readonly d: Daemon,
    readonly a: FrontendDriver,
    readonly b: FrontendDriver,
  ) {
    this.vhostdPid = d.proc!.pid!;
    this.keeperPid = d.keeper!.pid!;
  }

  static async start(): Promise<HostileWorld> {
    const d = await Daemon.start({ ha: true });
    try {
      await d.ok(["mgmtpf", "-a", NET_PF]);
      await d.ok(["mgmtpf", "-a", BLK_PF]);
      await d.ok(["vf", "-a", VF_NET, "-v", d.sock("h-net"), "--server"]);
      await d.ok(["vf", "-a", VF_BLK, "-v", d.sock("h-blk"), "--server", "--disk", path.join(d.dir, "h-blk.raw"), "--disk-size", String(BLK_DISK_BYTES)]);
      const aP = FrontendDriver.listen(d.sock("a"), { connectTimeoutMs: 15_000 });
      const bP = FrontendDriver.listen(d.sock("b"), { connectTimeoutMs: 15_000 });
      await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
      await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
      const [a, b] = await Promise.all([aP, bP]);
      await Promise.all([a.handshake(), b.handshake()]);
      // Modest rates: the attackers, both daemons and these drivers share 2 vCPUs, and a
      // receiver that cannot refill its ring in time loses frames to "ring full", which is not
      // what the catalogue is about (those are counted drops, and finish() accepts them).
      a.device.startRx(0);
      b.device.startRx(0);
      a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: 512, ratePps: 2_000, streamId: 7 });
      b.device.startTx(0, { dstMac: a.mac, srcMac: b.mac, frameSize: 256, ratePps: 1_000, streamId: 8 });
      await waitFor(() => b.device.stats(0).rxPackets > 200 && a.device.stats(0).rxPackets > 100, 15_000, "victim traffic");
      return new HostileWorld(d, a, b);
    } catch (e) {
      await d.stop();
      d.cleanup();
      throw e;
    }
  }

  get netSocket(): string {
    return this.d.sock("h-net");
  }

  get blkSocket(): string {
    return this.d.sock("h-blk");
  }

  get rpcSocket(): string {
    return path.join(this.d.runDir, "vfe-vhostd.sock");
  }

  /** One JSON-RPC exchange on vfe-vhostd's socket, as raw text both ways (no CLI start-up per call). */
  rpcRaw(request: string | Buffer, timeoutMs = 5000): Promise<string> {
    return rpcExchange(this.rpcSocket, request, timeoutMs);
  }

  /** A well-formed request; resolves with the response object. */
  async rpc(method: string, params: Record<string, unknown>): Promise<any> {
    return JSON.parse(await this.rpcRaw(JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) + "\n"));
  }

  /** A queue's counters from `vf -i`. */
  async queue(vf: string, index: number): Promise<Record<string, number>> {
    const r = await this.rpc("vf", { info: true, vfdev: vf });
    return r.result.device.queues[index];
  }

  /** The keeper runs the sessions: its log holds the attackers' refusals. */
  keeperLogLines(): Array<Record<string, any>> {
    return this.d.keeperLogLines();
  }

  /** Open fds of a process (the keeper holds every session's). */
  static fdCount(pid: number): number {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  }

  private alive(proc: Daemon["proc"], pid: number): boolean {
    if (!proc || proc.pid !== pid || proc.exitCode !== null || proc.signalCode !== null) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  stream(which: "a->b" | "b->a"): StreamCheck {
    const s = (which === "a->b" ? this.b : this.a).device.stats(0);
    return { rx: s.rxPackets, lost: s.rxLost, dup: s.rxDuplicated, corrupt: s.rxCorrupted, reordered: s.rxReordered };
  }

  /**
   * What is wrong after a case, or null. `moving`: also require both victim streams to have
   * received frames since the last call that asked (callers ask every few cases, since a fast
   * case takes less time than a few frames).
   */
  async problem(moving = false): Promise<string | null> {
    if (!this.alive(this.d.proc, this.vhostdPid)) return `vfe-vhostd (pid ${this.vhostdPid}) is gone or was replaced`;
    if (!this.keeperDown && !this.alive(this.d.keeper, this.keeperPid)) return `vfe-vhostd-ha (pid ${this.keeperPid}) is gone or was replaced`;
    for (const [i, w] of (["a->b", "b->a"] as const).entries()) {
      const s = this.stream(w);
      if (s.dup || s.corrupt || s.reordered) return `victim stream ${w}: ${JSON.stringify(s)}`;
      if (moving) {
        const deadline = Date.now() + 3000;
        while (this.stream(w).rx <= this.lastRx[i]! && Date.now() < deadline) await sleep(20);
        const now = this.stream(w).rx;
        if (now <= this.lastRx[i]!) return `victim stream ${w} stopped at ${now} frames`;
        this.lastRx[i] = now;
      }
    }
    const v = await this.rpc("version", {}).catch((e: Error) => ({ error: e.message }));
    if (!v.result) return `RPC does not answer: ${JSON.stringify(v)}`;
    return null;
  }

  private async haStatus(): Promise<any> {
    return (await this.rpc("ha", { status: true }).catch(() => ({}))).result ?? {};
  }

  /** kill -9 of the keeper; resolves once vfe-vhostd runs every VF (a takeover, no reconnect). */
  async killKeeper(): Promise<void> {
    await this.d.killKeeper();
    this.keeperDown = true;
    await waitFor(async () => ((await this.haStatus()).mirror?.running ?? []).includes(VF_A), 15_000, "vfe-vhostd to take over");
  }

  /** Starts a keeper again; resolves once it runs every VF again and vfe-vhostd holds their copies. */
  async restartKeeper(): Promise<void> {
    await this.d.startKeeper();
    this.keeperPid = this.d.keeper!.pid!;
    this.keeperDown = false;
    await waitFor(
      async () => {
        const s = await this.haStatus();
        return s.keeper?.connected === true && s.mirror?.connected === true && (s.mirror?.running ?? []).length === 0 && s.mirror.copies === s.keeper.vfs;
      },
      30_000,
      "the keeper to take every VF back",
    );
  }

  /** Stops the victims' streams and says what is wrong with them, or null. */
  async finish(): Promise<string | null> {
    this.a.device.stopTx(0);
    this.b.device.stopTx(0);
    await sleep(500);
    const rxDrops = async (vf: string) => {
      const q: Array<Record<string, number>> = (await this.d.ok(["vf", "-i", vf])).device.queues;
      return q.filter((x) => x.index! % 2 === 0).reduce((s, x) => s + x.drops!, 0);
    };
    const checks: Array<[string, FrontendDriver, FrontendDriver, string]> = [
      ["a->b", this.a, this.b, VF_B],
      ["b->a", this.b, this.a, VF_A],
    ];
    for (const [name, tx, rx, rxVf] of checks) {
      const sent = tx.device.stats(0).txPackets;
      const s = rx.device.stats(0);
      const drops = await rxDrops(rxVf);
      if (s.rxDuplicated + s.rxCorrupted + s.rxReordered) return `${name}: ${JSON.stringify(s)}`;
      // rxPackets also counts foreign frames (an attacker's broadcast reaches every port, as on
      // a real switch): only the numbered stream must add up.
      const received = s.rxPackets - s.rxForeign;
      if (received + drops !== sent) return `${name}: sent ${sent}, received ${received} (and ${s.rxForeign} foreign), engine drops ${drops}`;
      if (s.rxLost !== drops) return `${name}: ${s.rxLost} lost but ${drops} counted as dropped`;
    }
    for (const vf of [VF_A, VF_B]) {
      const r = (await this.d.ok(["vf", "-i", vf])).device.reconnects;
      if (r !== 0) return `${vf} reconnected ${r} times`;
    }
    return null;
  }

  async stop(): Promise<void> {
    this.a.close();
    this.b.close();
    await this.d.stop();
    this.d.cleanup();
  }
}

/** Sends `request` and resolves with the first line of the answer ("" if the server hangs up first). */
export function rpcExchange(socket: string, request: string | Buffer, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(socket);
    let got = "";
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`no RPC answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = (v: string) => {
      clearTimeout(timer);
      c.destroy();
      resolve(v);
    };
    c.on("connect", () => c.write(request));
    c.on("data", (d) => {
      got += d.toString("utf8");
      const nl = got.indexOf("\n");
      if (nl >= 0) done(got.slice(0, nl));
    });
    c.on("end", () => done(got));
    c.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}


/** Guest memory of a driver, written through its memfd (GPA == address in this process). */
export class DriverMemory {
  constructor(private readonly dev: { memFd: number; memAddr: bigint; memSize: number }) {}

  write(addr: bigint, data: Buffer): void {
    const off = Number(addr - this.dev.memAddr);
    if (off < 0 || off + data.length > this.dev.memSize) throw new RangeError(`write at 0x${addr.toString(16)} outside driver memory`);
    fs.writeSync(this.dev.memFd, data, 0, data.length, off);
  }

  read(addr: bigint, len: number): Buffer {
    const off = Number(addr - this.dev.memAddr);
    if (off < 0 || off + len > this.dev.memSize) throw new RangeError(`read at 0x${addr.toString(16)} outside driver memory`);
    const b = Buffer.alloc(len);
    fs.readSync(this.dev.memFd, b, 0, len, off);
    return b;
  }

  /** The last `bytes` of memory: scratch for hostile tables and buffers, far from the rings. */
  scratch(bytes: number): bigint {
    return this.dev.memAddr + BigInt(this.dev.memSize - bytes);
  }

  get base(): bigint {
    return this.dev.memAddr;
  }

  get size(): number {
    return this.dev.memSize;
  }
}

export const eventFd = (): number => native.eventFd(0);
