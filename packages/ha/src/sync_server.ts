// The keeper's end of the HA state channel: a ZeroMQ ROUTER at ipc://<run-dir>/ha-sync.ipc.
//
// ROUTER (keeper) ↔ DEALER (vhostd): both ends send whenever they like (deltas one way,
// acks and heartbeats both ways) without REQ/REP's lock-step, and the ROUTER knows which
// connection a message came from, so a newer vhostd replaces an older one and a stale one
// is told so. Hello, deltas, snapshots and snapshot requests are handled strictly in arrival
// order: a delta is acknowledged only after it is durable in the journal and applied. Deltas
// that are queued together (vhostd pipelines concurrent changes) are journaled together, one
// disk flush for all of them, and then applied and answered one by one in seq order. A
// refused delta is answered with a nack and still counts as handled: the stream goes on.
import { EventEmitter } from "node:events";
import { chmodSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { Router } from "zeromq";
import {
  HA_SYNC_MAX_MESSAGE_BYTES,
  SyncError,
  SyncSequencer,
  HA_SYNC_MAX_ERRNO,
  decodeSyncMessage,
  errnoOf,
  encodeSyncMessage,
  rejectCodeOf,
  type DeltaMsg,
  type HaState,
  type HelloMsg,
  type NackMsg,
  type RejectCode,
  type SnapshotMsg,
  type SyncMessage,
} from "@vhostd/proto";

export interface SyncServerOptions {
  /** ipc://<run-dir>/ha-sync.ipc (see haSyncEndpoint). */
  endpoint: string;
  log: Logger;
  /** The keeper's version, reported in welcome. */
  version?: string;
  /** Where the keeper's journal stands (epoch and last applied seq); default 0/0. */
  initial?: { epoch: number; seq: number };
  /** Whether the keeper holds a replica worth handing back (welcome.hasState). */
  hasState?: () => boolean;
  /** A vhostd said hello (after the epoch check). */
  onHello?: (hello: HelloMsg) => void | Promise<void>;
  /**
   * Makes deltas durable, all in one journal write. One entry per delta: null, or why it is
   * refused (it is then nacked, and neither journaled nor applied). Without it, onDelta
   * journals each delta itself.
   */
  journalDeltas?: (deltas: DeltaMsg[]) => Promise<Array<Error | null>>;
  /** Applies a delta (journaled by then if journalDeltas is given); a rejection nacks it. */
  onDelta: (delta: DeltaMsg) => Promise<void>;
  /** Most deltas journaled in one write (default 64). */
  maxDeltaBatch?: number;
  /** The replica, for a restarted vhostd taking its state back. */
  getSnapshot: () => HaState | Promise<HaState>;
  /** A full state pushed by vhostd (after a gap, or to a keeper that lost its replica). */
  onSnapshot: (snapshot: SnapshotMsg) => Promise<void>;
  heartbeatMs?: number;
  peerTimeoutMs?: number;
  /** Messages waiting to be handled; beyond this they are refused ("overloaded"). */
  maxQueue?: number;
}

export interface SyncPeer {
  epoch: number;
  pid: number;
  version: string;
}

interface Peer extends SyncPeer {
  id: Buffer;
  lastHeard: number;
}

/** Strict FIFO over one zeromq socket: zeromq 6 allows one send() in flight per socket. */
export class ZmqSendQueue<T> {
  private readonly queue: T[] = [];
  private busy = false;
  constructor(
    private readonly sendOne: (msg: T) => Promise<void>,
    private readonly onError: (err: Error) => void,
    private readonly max = 100_000,
  ) {}
  get length(): number {
    return this.queue.length;
  }
  push(msg: T): void {
    if (this.queue.length >= this.max) {
      this.onError(new Error(`send queue full (${this.max})`));
      return;
    }
    this.queue.push(msg);
    if (!this.busy) void this.pump();
  }
  clear(): void {
    this.queue.length = 0;
  }
  private async pump(): Promise<void> {
    this.busy = true;
    while (this.queue.length > 0) {
      const msg = this.queue.shift()!;
      try {
        await this.sendOne(msg);
      } catch (err) {
        this.onError(err as Error);
      }
    }
    this.busy = false;
  }
}

/**
 * Events: "peer_up" (SyncPeer) after a hello is welcomed; "peer_down" ({epoch, pid, reason})
 * on heartbeat timeout or replacement; "rejected" ({code, reason}) for every refused message.
 */
export class SyncServer extends EventEmitter {
  private readonly sock: Router;
  private readonly sendq: ZmqSendQueue<[Buffer, Buffer]>;
  private readonly seq: SyncSequencer;
  private peer_: Peer | null = null;
  private readonly work: { id: Buffer; msg: SyncMessage }[] = [];
  private working = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly heartbeatMs: number;
  private readonly peerTimeoutMs: number;

  constructor(private readonly opts: SyncServerOptions) {
    super();
    this.heartbeatMs = opts.heartbeatMs ?? 500;
    this.peerTimeoutMs = opts.peerTimeoutMs ?? 2000;
    this.seq = new SyncSequencer(opts.initial?.epoch ?? 0, opts.initial?.seq ?? 0);
    this.sock = new Router({
      linger: 0,
      mandatory: true, // a vanished peer is an error we log, not a silent drop
      sendTimeout: this.heartbeatMs,
      maxMessageSize: HA_SYNC_MAX_MESSAGE_BYTES + 64, // zeromq drops the peer that sends more
      receiveHighWaterMark: 10_000,
      sendHighWaterMark: 10_000,
    });
    this.sendq = new ZmqSendQueue(
      ([id, body]) => this.sock.send([id, body]),
      (err) => this.opts.log.debug({ err: err.message }, "sync: send failed (peer gone?)"),
    );
  }

  /** The vhostd currently followed, if any. */
  get peer(): SyncPeer | null {
    return this.peer_ ? { epoch: this.peer_.epoch, pid: this.peer_.pid, version: this.peer_.version } : null;
  }
  get epoch(): number {
    return this.seq.epoch;
  }
  get lastSeq(): number {
    return this.seq.lastSeq;
  }

  async start(): Promise<void> {
    await this.sock.bind(this.opts.endpoint);
    if (this.opts.endpoint.startsWith("ipc://")) chmodSync(this.opts.endpoint.slice("ipc://".length), 0o600);
    this.timer = setInterval(() => this.tick(), this.heartbeatMs);
    this.opts.log.info({ endpoint: this.opts.endpoint, epoch: this.seq.epoch, seq: this.seq.lastSeq }, "sync server listening");
    void this.receiveLoop();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.sendq.clear();
    this.sock.close();
  }

  private async receiveLoop(): Promise<void> {
    while (!this.closed) {
      let frames: Buffer[];
      try {
        frames = await this.sock.receive();
      } catch (err) {
        if (this.closed) return;
        this.opts.log.warn({ err: (err as Error).message }, "sync: receive failed");
        continue;
      }
      this.onFrames(frames);
    }
  }

  private onFrames(frames: Buffer[]): void {
    const id = frames[0]!;
    if (frames.length !== 2) {
      this.refuse(id, "malformed", `expected one frame per message, got ${frames.length - 1}`);
      return;
    }
    let msg: SyncMessage;
    try {
      msg = decodeSyncMessage(frames[1]!);
    } catch (err) {
      const e = err instanceof SyncError ? err : new SyncError("malformed", String(err));
      this.refuse(id, rejectCodeOf(e), e.message);
      return;
    }
    const current = this.peer_ !== null && this.peer_.id.equals(id);
    if (current) this.peer_!.lastHeard = performance.now();
    switch (msg.type) {
      case "hello":
        this.enqueue(id, msg);
        return;
      case "heartbeat":
      case "delta":
      case "snapshot":
      case "snapshot_request":
        if (!current) {
          if (msg.epoch > 0 && msg.epoch < this.seq.epoch)
            this.refuse(id, "stale_epoch", `${msg.type} of epoch ${msg.epoch} < current epoch ${this.seq.epoch}`);
          else this.refuse(id, "no_hello", `${msg.type} before hello`);
          return;
        }
        if (msg.type !== "heartbeat") this.enqueue(id, msg);
        return;
      default:
        this.refuse(id, "malformed", `${msg.type} is the keeper's to send`);
    }
  }

  private enqueue(id: Buffer, msg: SyncMessage): void {
    if (this.work.length >= (this.opts.maxQueue ?? 100_000)) {
      this.refuse(id, "overloaded", `${this.work.length} messages waiting`);
      return;
    }
    this.work.push({ id, msg });
    if (!this.working) void this.drain();
  }

  private async drain(): Promise<void> {
    this.working = true;
    while (this.work.length > 0 && !this.closed) {
      const batch = this.takeDeltaBatch();
      if (batch) {
        try {
          await this.applyDeltas(batch.id, batch.deltas);
        } catch (err) {
          this.opts.log.error({ err: (err as Error).message, deltas: batch.deltas.length }, "sync: delta batch failed");
        }
        continue;
      }
      const { id, msg } = this.work.shift()!;
      try {
        await this.handle(id, msg);
      } catch (err) {
        this.opts.log.error({ err: (err as Error).message, type: msg.type }, "sync: handler failed");
      }
    }
    this.working = false;
  }

  /**
   * The queued deltas at the head of the work queue that apply in a row: from the current
   * peer, the next seqs of the current epoch, and no two touching the same key (a refused
   * delta's key is taken back in the journal, which must not undo a later delta's write).
   * Undefined when the head is anything else: it goes the one-at-a-time way.
   */
  private takeDeltaBatch(): { id: Buffer; deltas: DeltaMsg[] } | undefined {
    const p = this.peer_;
    if (!this.opts.journalDeltas || !p) return undefined;
    const max = this.opts.maxDeltaBatch ?? 64;
    const deltas: DeltaMsg[] = [];
    const keys = new Set<string>();
    while (deltas.length < max && this.work.length > 0) {
      const { id, msg } = this.work[0]!;
      if (msg.type !== "delta" || !id.equals(p.id) || msg.epoch !== this.seq.epoch || msg.seq !== this.seq.lastSeq + 1 + deltas.length) break;
      const mine = msg.ops.map((op) => `${op.table}/${op.key}`);
      if (mine.some((k) => keys.has(k))) break;
      for (const k of mine) keys.add(k);
      deltas.push(msg);
      this.work.shift();
    }
    return deltas.length > 0 ? { id: p.id, deltas } : undefined;
  }

  /** Journals `deltas` (next seqs, in order) at once, then applies and answers each in turn. */
  private async applyDeltas(id: Buffer, deltas: DeltaMsg[]): Promise<void> {
    let refused: Array<Error | null>;
    try {
      refused = this.opts.journalDeltas ? await this.opts.journalDeltas(deltas) : deltas.map(() => null);
    } catch (err) {
      refused = deltas.map(() => err as Error);
    }
    for (const [i, d] of deltas.entries()) {
      let err = refused[i] ?? null;
      if (!err) {
        try {
          await this.opts.onDelta(d);
        } catch (e) {
          err = e as Error;
        }
      }
      // Handled either way: a refused delta changed nothing the journal does not describe.
      this.seq.commit(d.epoch, d.seq);
      if (err) this.nack(id, d.epoch, d.seq, "delta", "apply_failed", `delta ${d.seq} not applied: ${err.message}`, errnoIfAny(err));
      else this.send(id, { type: "ack", epoch: d.epoch, seq: d.seq, of: "delta" });
    }
  }

  private async handle(id: Buffer, msg: SyncMessage): Promise<void> {
    const current = this.peer_ !== null && this.peer_.id.equals(id);
    if (msg.type === "hello") return this.handleHello(id, msg);
    // A hello from another vhostd may have been handled since this one was queued.
    if (!current) {
      this.refuse(id, "replaced", `${msg.type} from a replaced peer`);
      return;
    }
    switch (msg.type) {
      case "delta":
        return this.handleDelta(id, msg);
      case "snapshot":
        return this.handleSnapshot(id, msg);
      case "snapshot_request": {
        const state = await this.opts.getSnapshot();
        this.send(id, { type: "snapshot", epoch: this.seq.epoch, seq: this.seq.lastSeq, state });
        this.opts.log.info({ epoch: this.seq.epoch, seq: this.seq.lastSeq }, "sync: snapshot sent to vhostd");
        return;
      }
      default:
        return;
    }
  }

  private async handleHello(id: Buffer, h: HelloMsg): Promise<void> {
    const lastEpoch = this.seq.epoch;
    const lastSeq = this.seq.lastSeq;
    const verdict = this.seq.hello(h.epoch);
    if (verdict === "stale") {
      this.refuse(id, "stale_epoch", `hello of epoch ${h.epoch} (pid ${h.pid}) < current epoch ${lastEpoch}`);
      return;
    }
    const old = this.peer_;
    if (old && !old.id.equals(id)) {
      this.opts.log.warn(
        { old: { epoch: old.epoch, pid: old.pid }, new: { epoch: h.epoch, pid: h.pid } },
        "sync: vhostd replaced by a newer (or reconnected) one",
      );
      if (h.epoch > old.epoch) this.send(old.id, { type: "reject", code: "replaced", reason: `epoch ${h.epoch} took over` });
      this.emit("peer_down", { epoch: old.epoch, pid: old.pid, reason: "replaced" });
    }
    this.peer_ = { id, epoch: h.epoch, pid: h.pid, version: h.version, lastHeard: performance.now() };
    await this.opts.onHello?.(h);
    this.send(id, {
      type: "welcome",
      version: this.opts.version ?? "0.0.0",
      lastEpoch,
      lastSeq,
      hasState: this.opts.hasState?.() ?? false,
    });
    this.opts.log.info({ epoch: h.epoch, pid: h.pid, version: h.version, verdict, lastEpoch, lastSeq }, "sync: vhostd up");
    this.emit("peer_up", this.peer);
  }

  private async handleDelta(id: Buffer, d: DeltaMsg): Promise<void> {
    const decision = this.seq.decide(d.epoch, d.seq);
    switch (decision.kind) {
      case "apply":
        return this.applyDeltas(id, [d]);
      case "duplicate":
        this.opts.log.debug({ epoch: d.epoch, seq: d.seq }, "sync: replayed delta acknowledged again, not applied");
        this.send(id, { type: "ack", epoch: d.epoch, seq: d.seq, of: "delta" });
        return;
      case "gap":
        this.nack(id, d.epoch, d.seq, "delta", "gap", `delta ${d.seq} after ${decision.expected - 1}: send a snapshot`);
        return;
      case "stale_epoch":
        this.refuse(id, "stale_epoch", `delta of epoch ${d.epoch} < current epoch ${decision.current}`);
        return;
      case "unknown_epoch":
        this.nack(id, d.epoch, d.seq, "delta", "unknown_epoch", `epoch ${d.epoch} was not announced by a hello`);
        return;
    }
  }

  private async handleSnapshot(id: Buffer, s: SnapshotMsg): Promise<void> {
    if (s.epoch < this.seq.epoch) {
      this.refuse(id, "stale_epoch", `snapshot of epoch ${s.epoch} < current epoch ${this.seq.epoch}`);
      return;
    }
    if (s.epoch > this.seq.epoch) {
      this.nack(id, s.epoch, s.seq, "snapshot", "unknown_epoch", `epoch ${s.epoch} was not announced by a hello`);
      return;
    }
    try {
      await this.opts.onSnapshot(s);
    } catch (err) {
      this.nack(id, s.epoch, s.seq, "snapshot", "apply_failed", `snapshot not applied: ${(err as Error).message}`, errnoIfAny(err));
      return;
    }
    this.seq.reset(s.epoch, s.seq);
    this.opts.log.info({ epoch: s.epoch, seq: s.seq }, "sync: snapshot from vhostd applied");
    this.send(id, { type: "ack", epoch: s.epoch, seq: s.seq, of: "snapshot" });
  }

  private tick(): void {
    const p = this.peer_;
    if (!p) return;
    const age = performance.now() - p.lastHeard;
    if (age > this.peerTimeoutMs) {
      this.peer_ = null;
      this.opts.log.warn({ epoch: p.epoch, pid: p.pid, ageMs: Math.round(age) }, "sync: vhostd down (no heartbeat)");
      this.emit("peer_down", { epoch: p.epoch, pid: p.pid, reason: "heartbeat timeout" });
      return;
    }
    this.send(p.id, { type: "heartbeat", epoch: this.seq.epoch, seq: this.seq.lastSeq, monoMs: performance.now() });
  }

  private nack(id: Buffer, epoch: number, seq: number, of: NackMsg["of"], code: NackMsg["code"], reason: string, errno?: number): void {
    this.opts.log.warn({ epoch, seq, code, errno }, `sync: ${of} refused: ${reason}`);
    this.send(id, { type: "nack", epoch, seq, of, code, reason: reason.slice(0, 1000), ...(errno !== undefined ? { errno } : {}) });
    this.emit("rejected", { code, reason });
  }

  /** Every refused message is logged with its reason and answered with a reject. */
  private refuse(id: Buffer, code: RejectCode, reason: string): void {
    this.opts.log.warn({ code, peer: id.toString("hex") }, `sync: message rejected: ${reason}`);
    this.send(id, { type: "reject", code, reason: reason.slice(0, 1000) });
    this.emit("rejected", { code, reason });
  }

  private send(id: Buffer, msg: SyncMessage): void {
    if (this.closed) return;
    let body: Buffer;
    try {
      body = encodeSyncMessage(msg);
    } catch (err) {
      this.opts.log.error({ type: msg.type, err: (err as Error).message }, "sync: cannot encode message");
      return;
    }
    this.sendq.push([id, body]);
  }
}

/** The errno a refusal carries, if any (a nack without one leaves the choice to vfe-vhostd). */
function errnoIfAny(err: unknown): number | undefined {
  const n = errnoOf(err);
  return n !== undefined && n >= -HA_SYNC_MAX_ERRNO ? n : undefined;
}
