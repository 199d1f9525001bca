// vfe-vhostd's end of the HA state channel: a ZeroMQ DEALER connected to the keeper's ROUTER
// at ipc://<run-dir>/ha-sync.ipc (see packages/ha/src/sync_server.ts for the pattern).
//
// send(ops) numbers each delta (monotonic per epoch, from 1) and resolves when the keeper
// acknowledged it, i.e. it is durable in the keeper's journal and applied. The caller must
// have applied the ops to its own state first: after a gap the client answers with a
// snapshot of that state (getState), and the acknowledged snapshot settles every delta it
// covers. Heartbeats go both ways; silence longer than peerTimeoutMs marks the keeper
// down, and the client says hello again until a (possibly restarted) keeper welcomes it.
import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { Dealer } from "zeromq";
import {
  HA_SYNC_MAX_MESSAGE_BYTES,
  HA_SYNC_PROTOCOL_VERSION,
  SyncError,
  decodeSyncMessage,
  encodeSyncMessage,
  type HaOp,
  type HaState,
  type NackMsg,
  type RejectMsg,
  type SnapshotMsg,
  type SyncMessage,
  type WelcomeMsg,
} from "@vhostd/proto";

export interface HaClientOptions {
  endpoint: string;
  log: Logger;
  /** This vhostd's epoch: bumped and persisted at every start, >= 1. */
  epoch: number;
  /** vhostd's version, sent in hello. */
  version?: string;
  heartbeatMs?: number;
  peerTimeoutMs?: number;
  /** A delta, snapshot or request not answered within this fails. Default 5000. */
  requestTimeoutMs?: number;
  /** The full state including every op sent so far; lets the client heal a gap by itself. */
  getState?: () => HaState | Promise<HaState>;
}

/** A refusal from the keeper (nack or reject), or a timeout. */
export class HaSyncError extends Error {
  constructor(
    readonly code: NackMsg["code"] | RejectMsg["code"] | "timeout" | "closed" | "too_large",
    message: string,
    /** A nack's errno (negative), when the keeper gave one. */
    readonly errno?: number,
  ) {
    super(message);
    this.name = "HaSyncError";
  }
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

type LinkState = "idle" | "helloing" | "up" | "down" | "fenced" | "closed";

/**
 * Events: "keeper_up" (WelcomeMsg), "keeper_down" ({ageMs}), "fenced" ({code, reason}) when a
 * newer vhostd took over (nothing more is sent), "rejected" ({code, reason}).
 */
export class HaClient extends EventEmitter {
  private readonly sock: Dealer;
  private readonly queue: Buffer[] = [];
  private sending = false;
  private state: LinkState = "idle";
  private timer: NodeJS.Timeout | null = null;
  private lastHeard = 0;
  private lastSeq = 0;
  private lastAcked_ = 0;
  private readonly deltas = new Map<number, Waiter<{ seq: number }>>();
  private readonly hellos: Waiter<WelcomeMsg>[] = [];
  private readonly snapshotReqs: Waiter<SnapshotMsg>[] = [];
  /** Snapshots pushed by us, by seq (the seq of the last delta they include). */
  private readonly pushes = new Map<number, Waiter<{ seq: number }>>();
  /** Highest seq covered by a snapshot on its way (gap healing in progress). */
  private healingUpTo = 0;
  private readonly heartbeatMs: number;
  private readonly peerTimeoutMs: number;
  private readonly requestTimeoutMs: number;

  constructor(private readonly opts: HaClientOptions) {
    super();
    if (!Number.isSafeInteger(opts.epoch) || opts.epoch < 1) throw new RangeError(`epoch must be an integer >= 1, got ${opts.epoch}`);
    this.heartbeatMs = opts.heartbeatMs ?? 500;
    this.peerTimeoutMs = opts.peerTimeoutMs ?? 2000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.sock = new Dealer({
      linger: 0,
      sendTimeout: this.heartbeatMs, // never let the send queue stall behind a full pipe
      maxMessageSize: HA_SYNC_MAX_MESSAGE_BYTES + 64,
      sendHighWaterMark: 10_000,
      receiveHighWaterMark: 10_000,
      reconnectInterval: 50,
      reconnectMaxInterval: 500,
    });
  }

  get epoch(): number {
    return this.opts.epoch;
  }
  get keeperUp(): boolean {
    return this.state === "up";
  }
  get fenced(): boolean {
    return this.state === "fenced";
  }
  /** Highest seq the keeper acknowledged. */
  get lastAcked(): number {
    return this.lastAcked_;
  }
  /** Milliseconds since anything was heard from the keeper (Infinity before that). */
  get heartbeatAgeMs(): number {
    return this.lastHeard === 0 ? Infinity : performance.now() - this.lastHeard;
  }

  async connect(): Promise<void> {
    if (this.state !== "idle") return;
    this.sock.connect(this.opts.endpoint);
    this.timer = setInterval(() => this.tick(), this.heartbeatMs);
    this.state = "down";
    void this.receiveLoop();
  }

  /** Says hello; resolves with the keeper's welcome (also emitted as keeper_up). */
  hello(): Promise<WelcomeMsg> {
    return this.waitFor(this.hellos, "hello", () => this.sendHello());
  }

  /** Sends ops as the next delta; resolves with its seq once the keeper has it durable and applied. */
  send(ops: HaOp[]): Promise<{ seq: number }> {
    if (this.state === "fenced" || this.state === "closed") return Promise.reject(new HaSyncError("closed", `client is ${this.state}`));
    const seq = this.lastSeq + 1;
    let buf: Buffer;
    try {
      buf = encodeSyncMessage({ type: "delta", epoch: this.opts.epoch, seq, ops });
    } catch (err) {
      return Promise.reject(new HaSyncError(err instanceof SyncError && err.code === "too_large" ? "too_large" : "closed", (err as Error).message));
    }
    this.lastSeq = seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.settleDelta(seq, new HaSyncError("timeout", `delta ${seq} not acknowledged in ${this.requestTimeoutMs} ms`)), this.requestTimeoutMs);
      this.deltas.set(seq, { resolve, reject, timer });
      this.enqueue(buf);
    });
  }

  /** Pushes the full state (covering every delta sent so far); resolves when the keeper applied it. */
  sendSnapshot(state: HaState): Promise<{ seq: number }> {
    const seq = this.lastSeq;
    let buf: Buffer;
    try {
      buf = encodeSyncMessage({ type: "snapshot", epoch: this.opts.epoch, seq, state });
    } catch (err) {
      return Promise.reject(new HaSyncError("too_large", (err as Error).message));
    }
    this.healingUpTo = Math.max(this.healingUpTo, seq);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pushes.delete(seq);
        reject(new HaSyncError("timeout", `snapshot ${seq} not acknowledged in ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this.pushes.get(seq)?.reject(new HaSyncError("closed", "superseded by another snapshot"));
      this.pushes.set(seq, { resolve, reject, timer });
      this.enqueue(buf);
    });
  }

  /** Takes the keeper's replica (a restarted vhostd recovering its state). */
  requestSnapshot(): Promise<SnapshotMsg> {
    return this.waitFor(this.snapshotReqs, "snapshot request", () => this.sendMsg({ type: "snapshot_request", epoch: this.opts.epoch }));
  }

  close(): void {
    if (this.state === "closed") return;
    this.failAll(new HaSyncError("closed", "client closed"));
    this.state = "closed";
    if (this.timer) clearInterval(this.timer);
    this.queue.length = 0;
    this.sock.close();
  }

  /* ---------------------------------------------------------------------- internals */

  private waitFor<T>(list: Waiter<T>[], what: string, kick: () => void): Promise<T> {
    if (this.state === "fenced" || this.state === "closed") return Promise.reject(new HaSyncError("closed", `client is ${this.state}`));
    return new Promise<T>((resolve, reject) => {
      const w: Waiter<T> = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = list.indexOf(w);
          if (i >= 0) list.splice(i, 1);
          reject(new HaSyncError("timeout", `${what} not answered in ${this.requestTimeoutMs} ms`));
        }, this.requestTimeoutMs),
      };
      list.push(w);
      kick();
    });
  }

  private sendHello(): void {
    this.helloSent = true;
    if (this.state === "down") this.state = "helloing";
    this.sendMsg({ type: "hello", protocolVersion: HA_SYNC_PROTOCOL_VERSION, epoch: this.opts.epoch, pid: process.pid, version: this.opts.version ?? "0.0.0" });
  }

  private sendMsg(msg: SyncMessage): void {
    this.enqueue(encodeSyncMessage(msg));
  }

  private enqueue(buf: Buffer): void {
    if (this.state === "closed" || this.state === "fenced") return;
    this.queue.push(buf);
    if (!this.sending) void this.pump();
  }

  /** zeromq 6: one send() in flight per socket. */
  private async pump(): Promise<void> {
    this.sending = true;
    while (this.queue.length > 0 && this.state !== "closed") {
      const buf = this.queue.shift()!;
      try {
        await this.sock.send(buf);
      } catch (err) {
        // A full pipe to a dead keeper: the message is lost; its waiter times out.
        this.opts.log.debug({ err: (err as Error).message }, "ha: send failed");
      }
    }
    this.sending = false;
  }

  private async receiveLoop(): Promise<void> {
    while (this.state !== "closed") {
      let frames: Buffer[];
      try {
        frames = await this.sock.receive();
      } catch (err) {
        if ((this.state as LinkState) === "closed") return;
        this.opts.log.warn({ err: (err as Error).message }, "ha: receive failed");
        continue;
      }
      this.onFrames(frames);
    }
  }

  private onFrames(frames: Buffer[]): void {
    let msg: SyncMessage;
    try {
      if (frames.length !== 1) throw new SyncError("malformed", `expected one frame, got ${frames.length}`);
      msg = decodeSyncMessage(frames[0]!);
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, "ha: message from the keeper rejected");
      return;
    }
    this.lastHeard = performance.now();
    switch (msg.type) {
      case "welcome":
        for (const w of this.hellos.splice(0)) {
          clearTimeout(w.timer);
          w.resolve(msg);
        }
        if (this.state !== "up" && this.state !== "fenced" && this.state !== "closed") {
          this.state = "up";
          this.opts.log.info({ keeper: msg.version, lastEpoch: msg.lastEpoch, lastSeq: msg.lastSeq, hasState: msg.hasState }, "ha: keeper up");
          this.emit("keeper_up", msg);
        }
        return;
      case "ack":
        if (msg.epoch !== this.opts.epoch) return;
        if (msg.of === "delta") {
          this.lastAcked_ = Math.max(this.lastAcked_, msg.seq);
          this.settleDelta(msg.seq, null);
        } else {
          this.snapshotAcked(msg.seq);
        }
        return;
      case "nack":
        this.onNack(msg);
        return;
      case "snapshot": {
        const w = this.snapshotReqs.shift();
        if (w) {
          clearTimeout(w.timer);
          w.resolve(msg);
        }
        return;
      }
      case "reject":
        this.onReject(msg);
        return;
      case "heartbeat":
        return;
      default:
        this.opts.log.warn({ type: msg.type }, "ha: message from the keeper rejected: not the keeper's to send");
    }
  }

  private onNack(n: NackMsg): void {
    if (n.epoch !== this.opts.epoch) return;
    this.opts.log.warn({ seq: n.seq, of: n.of, code: n.code, errno: n.errno }, `ha: keeper refused ${n.of} ${n.seq}: ${n.reason}`);
    this.emit("rejected", { code: n.code, reason: n.reason });
    if (n.of === "snapshot") {
      const w = this.pushes.get(n.seq);
      if (w) {
        this.pushes.delete(n.seq);
        clearTimeout(w.timer);
        w.reject(new HaSyncError(n.code, n.reason, n.errno));
      }
      return;
    }
    if (n.code === "gap") {
      if (n.seq <= this.healingUpTo) return; // a snapshot covering it is on its way
      if (this.opts.getState) {
        void this.heal();
        return;
      }
    }
    this.settleDelta(n.seq, new HaSyncError(n.code, n.reason, n.errno));
  }

  /** Heals a gap: a snapshot of our state covers every delta sent so far. */
  private async heal(): Promise<void> {
    const upTo = this.lastSeq;
    this.healingUpTo = upTo;
    this.opts.log.info({ upTo }, "ha: keeper missed deltas; sending a snapshot");
    try {
      const state = await this.opts.getState!();
      await this.sendSnapshot(state);
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, "ha: snapshot to heal a gap failed");
      for (const seq of [...this.deltas.keys()]) if (seq <= upTo) this.settleDelta(seq, err as Error);
    }
  }

  private snapshotAcked(seq: number): void {
    this.lastAcked_ = Math.max(this.lastAcked_, seq);
    const w = this.pushes.get(seq);
    if (w) {
      this.pushes.delete(seq);
      clearTimeout(w.timer);
      w.resolve({ seq });
    }
    for (const s of [...this.deltas.keys()]) if (s <= seq) this.settleDelta(s, null);
  }

  private onReject(r: RejectMsg): void {
    this.opts.log.warn({ code: r.code }, `ha: keeper rejected a message: ${r.reason}`);
    this.emit("rejected", { code: r.code, reason: r.reason });
    if (r.code === "stale_epoch" || r.code === "replaced") {
      // Another vhostd is in charge: stop talking, or two writers would fight over the keeper.
      this.failAll(new HaSyncError(r.code, r.reason));
      this.state = "fenced";
      this.queue.length = 0;
      this.opts.log.error({ epoch: this.opts.epoch }, "ha: fenced by a newer vhostd; no more sync");
      this.emit("fenced", { code: r.code, reason: r.reason });
      return;
    }
    if (r.code === "no_hello" && this.state !== "helloing") {
      // The keeper restarted and does not know us: introduce ourselves again.
      if (this.state === "up") {
        this.opts.log.warn({}, "ha: keeper down (it no longer knows us: restarted?)");
        this.emit("keeper_down", { ageMs: 0 });
      }
      this.state = "down";
      this.sendHello();
      return;
    }
    if (r.code === "bad_version") for (const w of this.hellos.splice(0)) (clearTimeout(w.timer), w.reject(new HaSyncError(r.code, r.reason)));
  }

  private settleDelta(seq: number, err: Error | null): void {
    const w = this.deltas.get(seq);
    if (!w) return;
    this.deltas.delete(seq);
    clearTimeout(w.timer);
    if (err) w.reject(err);
    else w.resolve({ seq });
  }

  /**
   * The keeper is known gone by other means (its mirror connection ended: the exit probe saw
   * it die, or it handed over): down now, not after a missed heartbeat. A keeper that is in
   * fact alive welcomes the next hello and is up again.
   */
  keeperGone(why: string): void {
    if (this.state !== "up") return;
    this.state = "down";
    this.opts.log.warn({ why }, "ha: keeper down (its mirror connection ended)");
    this.emit("keeper_down", { ageMs: this.heartbeatAgeMs, why });
  }

  private tick(): void {
    if (this.state === "fenced" || this.state === "closed" || this.state === "idle") return;
    if (this.state === "up") {
      const age = this.heartbeatAgeMs;
      if (age > this.peerTimeoutMs) {
        this.state = "down";
        this.opts.log.warn({ ageMs: Math.round(age) }, "ha: keeper down (no heartbeat)");
        this.emit("keeper_down", { ageMs: age });
      } else {
        this.sendMsg({ type: "heartbeat", epoch: this.opts.epoch, seq: this.lastAcked_, monoMs: performance.now() });
        return;
      }
    }
    // Down (or never welcomed): keep saying hello so a restarted keeper finds us at once.
    if (this.everHelloed()) {
      this.state = "down";
      this.sendHello();
    }
  }

  private helloSent = false;
  private everHelloed(): boolean {
    return this.helloSent || this.hellos.length > 0 || this.lastHeard > 0;
  }

  private failAll(err: Error): void {
    for (const seq of [...this.deltas.keys()]) this.settleDelta(seq, err);
    for (const list of [this.hellos, this.snapshotReqs] as Waiter<unknown>[][])
      for (const w of list.splice(0)) (clearTimeout(w.timer), w.reject(err));
    for (const [seq, w] of this.pushes) {
      this.pushes.delete(seq);
      clearTimeout(w.timer);
      w.reject(err);
    }
  }
}
