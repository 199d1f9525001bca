// The drill's "VMs": pairs of the project's front-end drivers exchanging numbered, checksummed
// streams both ways through a pair of VFs, so loss, duplication and corruption are counted
// exactly rather than estimated. Each driver also behaves like a VM that reconnects (QEMU
// `reconnect=`, or a virtio-user server socket): when the back-end drops the connection it
// waits for / connects to the back-end again and renegotiates, and counts that as a reconnect.
//
// Accounting is per event *window*: every window uses fresh stream ids and restarts the
// receivers' sequence tracking, and ends with the senders stopped and the receivers drained,
// so "lost" is exact (sent - received once), including frames at the tail of a window that a
// gap-based counter could never see, and the longest gap is the window's own.
import { FrontendDriver } from "@vhostd/frontend";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface StreamWindow {
  /** "<VF>-><VF>" */
  name: string;
  sent: number;
  /** Distinct frames of the stream that arrived intact. */
  received: number;
  lost: number;
  duplicated: number;
  corrupted: number;
  reordered: number;
  /** Longest time between two received frames in the window, µs. */
  maxGapUs: number;
  ringErrors: number;
}

/** One driver and what its reconnect loop has seen. */
class Endpoint {
  reconnects = 0;
  /** Longest time from a dropped connection to a completed handshake, ms. */
  lastReconnectMs = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    readonly vf: string,
    readonly fe: FrontendDriver,
    /** "client": vhostd connects to us (we listen); "server": vhostd listens, we connect. */
    readonly vfMode: "client" | "server",
  ) {}

  /** Runs until stop(): on every lost connection, get a new one and renegotiate. */
  supervise(): void {
    this.loop = (async () => {
      for (;;) {
        await this.fe.closed;
        if (this.stopped) return;
        const t0 = Date.now();
        this.reconnects++;
        for (;;) {
          if (this.stopped) return;
          try {
            await this.fe.reconnect();
            await this.fe.handshake();
            break;
          } catch {
            // the back-end went away again mid-handshake (mix/both events), or is not back yet
            await sleep(20);
          }
        }
        this.lastReconnectMs = Date.now() - t0;
      }
    })();
  }

  /** Connected and negotiated (a driver in its reconnect loop is not). */
  get up(): boolean {
    return this.fe.connected && this.fe.features !== 0n;
  }

  stop(): void {
    this.stopped = true;
    this.fe.close(); // resolves `closed`, so the loop ends
  }
}

export interface LinkSpec {
  index: number;
  pf: string;
  a: { vf: string; sock: string; mode: "client" | "server" };
  b: { vf: string; sock: string; mode: "client" | "server" };
}

/** Two VFs on their own PF (their own L2 switch) and the two drivers behind them. */
export class Link {
  private ends: [Endpoint, Endpoint] | undefined;
  private window: { id: number; txBase: [number, number] } | undefined;

  constructor(readonly spec: LinkSpec) {}

  /**
   * Brings both VFs up: `addVf(vf, sock, mode)` issues `vf -a`. A client-mode VF's driver
   * listens before the VF is added (vhostd connects to it); a server-mode VF's driver
   * connects after (vhostd listens).
   */
  async open(addVf: (vf: string, sock: string, mode: "client" | "server") => Promise<void>, queueSize: number): Promise<void> {
    const fo = { connectTimeoutMs: 60_000, queueSize };
    const drivers: FrontendDriver[] = [];
    try {
      const ends: Endpoint[] = [];
      for (const side of [this.spec.a, this.spec.b]) {
        let fe: FrontendDriver;
        if (side.mode === "client") {
          const p = FrontendDriver.listen(side.sock, fo);
          p.catch(() => undefined); // awaited below; a failing vf -a must not leave it unhandled
          await addVf(side.vf, side.sock, "client");
          fe = await p;
        } else {
          await addVf(side.vf, side.sock, "server");
          fe = await FrontendDriver.connect(side.sock, fo);
        }
        drivers.push(fe);
        ends.push(new Endpoint(side.vf, fe, side.mode));
      }
      await Promise.all(ends.map((e) => e.fe.handshake()));
      this.ends = [ends[0]!, ends[1]!];
      for (const e of this.ends) e.supervise();
    } catch (e) {
      for (const d of drivers) d.close();
      throw e;
    }
  }

  private get e(): [Endpoint, Endpoint] {
    if (!this.ends) throw new Error("link not open");
    return this.ends;
  }

  get reconnects(): number {
    return this.e[0].reconnects + this.e[1].reconnects;
  }

  get lastReconnectMs(): number {
    return Math.max(this.e[0].lastReconnectMs, this.e[1].lastReconnectMs);
  }

  get up(): boolean {
    return this.e[0].up && this.e[1].up;
  }

  /** Frames received so far in this window, per direction (a->b, b->a). */
  rxCounts(): [number, number] {
    const [a, b] = this.e;
    return [b.fe.device.stats(0).rxPackets, a.fe.device.stats(0).rxPackets];
  }

  /**
   * Window `id`, first half: fresh receivers. Called for every link, then (after a moment)
   * startTx(): the driver posts its RX buffers from its own thread, and a frame the engine
   * forwards before they are posted is dropped (virtio-net has no back-pressure) - a loss
   * of the drill's own making, not of the event's.
   */
  startRx(id: number): void {
    const [a, b] = this.e;
    b.fe.device.startRx(0);
    a.fe.device.startRx(0);
    this.window = { id, txBase: [a.fe.device.stats(0).txPackets, b.fe.device.stats(0).txPackets] };
  }

  /** Window second half: senders at `ratePps` until stopTx(). */
  startTx(ratePps: number, frameSize: number): void {
    const [a, b] = this.e;
    const w = this.window!;
    w.txBase = [a.fe.device.stats(0).txPackets, b.fe.device.stats(0).txPackets];
    // Stream ids are unique per window and direction: a receiver whose tracking restarted must
    // see its stream start at seq 0 (the driver keeps a sequence per stream id forever).
    const sid = (dir: number) => (w.id * 64 + this.spec.index) * 2 + dir + 1;
    a.fe.device.startTx(0, { dstMac: b.fe.mac, srcMac: a.fe.mac, frameSize, count: 0, ratePps, streamId: sid(0) });
    b.fe.device.startTx(0, { dstMac: a.fe.mac, srcMac: b.fe.mac, frameSize, count: 0, ratePps, streamId: sid(1) });
  }

  stopTx(): void {
    const [a, b] = this.e;
    a.fe.device.stopTx(0);
    b.fe.device.stopTx(0);
  }

  /** Distinct intact frames received per direction, and what was sent, in this window. */
  private progress(): { sent: [number, number]; got: [number, number] } {
    const [a, b] = this.e;
    const w = this.window!;
    const uniq = (fe: FrontendDriver) => {
      const s = fe.device.stats(0);
      return s.rxPackets - s.rxForeign - s.rxCorrupted - s.rxDuplicated;
    };
    return {
      sent: [a.fe.device.stats(0).txPackets - w.txBase[0], b.fe.device.stats(0).txPackets - w.txBase[1]],
      got: [uniq(b.fe), uniq(a.fe)],
    };
  }

  /** True once every frame sent in the window arrived (nothing more can come). */
  complete(): boolean {
    const p = this.progress();
    return p.got[0] >= p.sent[0] && p.got[1] >= p.sent[1];
  }

  /** The window's figures per direction (call after the senders stopped and the drain). */
  result(): [StreamWindow, StreamWindow] {
    const [a, b] = this.e;
    const p = this.progress();
    const one = (from: Endpoint, to: Endpoint, k: 0 | 1): StreamWindow => {
      const s = to.fe.device.stats(0);
      return {
        name: `${from.vf}->${to.vf}`,
        sent: p.sent[k],
        received: p.got[k],
        lost: Math.max(0, p.sent[k] - p.got[k]),
        duplicated: s.rxDuplicated,
        corrupted: s.rxCorrupted,
        reordered: s.rxReordered,
        maxGapUs: s.rxMaxGapUs,
        ringErrors: s.ringErrors,
      };
    };
    return [one(a, b, 0), one(b, a, 1)];
  }

  close(): void {
    if (!this.ends) return;
    for (const e of this.ends) e.stop();
  }
}

/**
 * Stops every sender and waits until every frame arrived, or nothing moved for `quietMs`
 * (what is still missing then is lost), at most `maxMs`.
 */
export async function drain(links: Link[], quietMs = 300, maxMs = 5000): Promise<void> {
  for (const l of links) l.stopTx();
  const t0 = Date.now();
  let last = JSON.stringify(links.map((l) => l.rxCounts()));
  let since = Date.now();
  while (Date.now() - t0 < maxMs) {
    if (links.every((l) => l.complete())) return;
    await sleep(20);
    const now = JSON.stringify(links.map((l) => l.rxCounts()));
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
  }
}

/**
 * Resolves with the time (ms since `t0`) at which every link was connected and every stream
 * had delivered at least `frames` more frames than at `base`; undefined after `timeoutMs`.
 */
export async function waitFlowing(links: Link[], base: Array<[number, number]>, t0: number, timeoutMs: number, abort?: { aborted: boolean }, frames = 10): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !abort?.aborted) {
    const ok = links.every((l, i) => {
      if (!l.up) return false;
      const c = l.rxCounts();
      return c[0] >= base[i]![0] + frames && c[1] >= base[i]![1] + frames;
    });
    if (ok) return Date.now() - t0;
    await sleep(5);
  }
  return undefined;
}
