// One VF as a host runs it: its endpoint (client or server), the live connection and the
// vhost-user session on it, its runtime for `vf -i`, and its copy in and out of the HA mirror.
import type { Logger } from "pino";
import { counterIndex, native, portCounterIndex, type NativeEngine, type NativeInbox } from "@vhostd/native";
import { HEADER_SIZE, MAX_PAYLOAD, MESSAGES, MsgFlag, Req, decodeHeader, mirrorVfFdIndices, type MirrorVf } from "@vhostd/proto";
import { portSecurityOf, type VfSpec } from "../vf_host.js";
import type { VfRuntime } from "../vf_host.js";
import { closeAll, MessageFds, VhostUserConnection, type VhostMessage } from "./connection.js";
import { Intake, type Announcer } from "./intake.js";
import { ReplyPipe } from "./reply_pipe.js";
import { ClientEndpoint, ServerEndpoint, type Endpoint } from "./endpoint.js";
import type { DeviceModel } from "./device_model.js";
import { encodeReply } from "./session.js";
import { MirroredSession } from "./session_mirror.js";
import type { CrashLedger } from "./crash_ledger.js";

/** What a VF needs of its host: the HA mirror and the inbox (engine_vf_host.ts wires them). */
export interface VfHooks {
  /** The session changed: push its whole record to the mirror. */
  changed(): void;
  /** Message seq was handled and changed nothing. */
  done(seq: number): void;
  /** The reply in the last record (one that carries fds) was written. */
  replied(): void;
  /** Calls fn once everything pushed so far is in the mirror socket (at once, usually). */
  whenMirrored(fn: () => void): void;
  /** The standby to announce messages to (HA); undefined: none. */
  announcer?: Announcer;
  /** The inbox shared with the peer daemon (intake.ts); undefined: none. */
  inbox?: NativeInbox;
}

/** A message an adopter handles again: taken by the dead runner and not handled by it (intake.ts). */
export interface AnnouncedMessage {
  seq: number;
  bytes: Buffer;
  fds: number[];
}

/** A reply up to this size goes through the reply pipe (a pipe write up to PIPE_BUF is atomic). */
const PIPE_REPLY_MAX = 4096;

/** One VF's endpoint, connection and session. */
export class VfSession {
  state: VfRuntime["state"] = "waiting";
  reconnects = 0;
  lastError: string | undefined;
  /** net: the MAC its switch port locked to from its first source (the engine reported it). */
  lockedMac: string | undefined;
  private conn: VhostUserConnection | null = null;
  private readonly endpoint: Endpoint;
  readonly session: MirroredSession;
  private readonly log: Logger;
  private everConnected = false;

  constructor(
    readonly spec: VfSpec,
    private readonly engine: NativeEngine,
    model: DeviceModel,
    parentLog: Logger,
    private readonly hooks: VfHooks,
    private readonly crashes: CrashLedger,
  ) {
    this.intake = new Intake(spec.devId, hooks.inbox, hooks.announcer);
    this.log = parentLog.child({ vf: spec.dev, socket: spec.socketPath });
    this.session = new MirroredSession(spec.devId, model, engine, this.log, {
      reply: (req, payload, fds = []) => {
        if (this.replies) {
          this.replies.push(encodeReply(req, payload));
          this.replyFds.push(...fds);
        } else this.conn?.send(encodeReply(req, payload), fds);
      },
      fail: (reason) => this.conn?.close(reason, true),
    }, spec.dev);
    const onConnected = (fd: number) => this.connected(fd);
    this.endpoint = spec.mode === "server" ? new ServerEndpoint(spec.socketPath, onConnected) : new ClientEndpoint(spec.socketPath, onConnected);
  }

  start(): void {
    this.state = this.spec.mode === "server" ? "waiting" : "connecting";
    this.endpoint.start();
    this.log.info({ mode: this.spec.mode }, `vhost-user endpoint up (${this.endpoint.description})`);
  }

  /** Runs fn with the JS thread's crash slot naming this VF (see crash_ledger.ts). */
  within<T>(fn: () => T): T {
    return this.crashes.within(this.spec.devId, fn);
  }

  private connected(fd: number): void {
    this.within(() => {
      if (this.everConnected) this.reconnects++;
      this.everConnected = true;
      this.log.info({ reconnects: this.reconnects }, "front-end connected");
      this.attach(fd);
      this.hooks.changed();
    });
  }

  private attach(fd: number, pipe = ReplyPipe.create()): void {
    this.state = "negotiating";
    this.conn = new VhostUserConnection(
      fd,
      {
        onMessage: (msg) => this.within(() => this.handleMessage(msg)),
        onClose: (reason, violation) => this.within(() => this.disconnected(reason, violation)),
        onDrained: () => this.replyWritten(),
      },
      this.intake,
      pipe,
    );
  }

  /**
   * One message, exactly once: its reply goes into the reply pipe, then its effect (the record,
   * or "done") to the mirror, and only once that is in the mirror socket is the reply spliced
   * to the front-end. Killed anywhere in between, the adopter either handles the message again
   * (no record or done of it reached the mirror: the reply in the pipe is dropped, unsent) or
   * sends what is left in the pipe. A reply that carries fds (GET_INFLIGHT_FD) cannot go through
   * a pipe: the record carries it until "replied" (MirrorVf.reply).
   */
  private handleMessage(msg: VhostMessage): void {
    const conn = this.conn;
    this.replies = [];
    this.replyFds = [];
    const outcome = this.session.handle(msg);
    this.lastHandled = msg.seq;
    this.updateState();
    const out = this.replies.length > 0 ? Buffer.concat(this.replies) : null;
    const fds = this.replyFds;
    this.replies = null;
    const piped = out !== null && fds.length === 0 && out.length <= PIPE_REPLY_MAX && conn?.isOpen === true;
    if (piped) conn.pipe.put(out);
    this.pendingReply = piped ? null : out;
    // A message that changed nothing (refused, or one that only reads) costs the mirror no
    // record and no fds; anything else sends the whole record.
    if (outcome !== "unchanged" || this.pendingReply) this.hooks.changed();
    else this.hooks.done(msg.seq);
    if (!out) return;
    // The reply goes once the mirror has the message's effect in its socket (usually at once:
    // the callback runs now); until then no further message is read.
    let waiting = false;
    let called = false;
    this.hooks.whenMirrored(() =>
      this.within(() => {
        called = true;
        if (waiting) {
          if (this.conn !== conn || !conn?.isOpen) return;
          conn.holdReading(false);
        }
        if (piped) conn!.sendPiped();
        else this.sendReply(out, fds);
      }),
    );
    if (!called) {
      waiting = true;
      conn?.holdReading(true);
    }
  }

  /** Writes the pending reply; a front-end that does not read gets it queued (onDrained follows). */
  private sendReply(out: Buffer, fds: number[]): void {
    if (this.conn?.send(out, fds)) this.replyWritten();
  }

  private replyWritten(): void {
    if (!this.pendingReply) return;
    this.pendingReply = null;
    this.hooks.replied();
  }

  private updateState(): void {
    const anyStarted = this.session.vrings.some((v) => v.started);
    if (this.state === "negotiating" && anyStarted) this.state = "running";
    if (this.state === "running") this.runningSince ??= Date.now();
    // Every ring stopped while connected: the VM stopped its device (a live migration's source
    // at switch-over, a guest reset). Its learned MAC is free for the VM's next home, which may
    // be another VF of this switch.
    if (anyStarted) this.ringsRan = true;
    else if (this.ringsRan) {
      this.ringsRan = false;
      this.releasePortLock("every ring stopped");
    }
  }

  /** Some ring ran since the front-end connected or last stopped them all. */
  private ringsRan = false;

  /** Since when the session runs without interruption here (the crash ledger's clean interval). */
  runningSince: number | undefined;

  /**
   * Implicated in crashes in a row (crash_ledger.ts): not served. No endpoint, no connection, no
   * ring; `vf -i` shows state "broken" and why. Only `vf -r` (then `vf -a`) ends it.
   */
  markBroken(reason: string): void {
    this.state = "broken";
    this.lastError = reason;
    this.runningSince = undefined;
  }

  get broken(): boolean {
    return this.state === "broken";
  }

  /** An adopted session that cannot resume (a record that passed the checks but not the engine's): this VF only. */
  failAdoption(reason: string): void {
    this.lastError = reason;
    this.log.error({ reason }, "resuming the adopted session failed; the front-end is disconnected");
    if (this.pendingConn >= 0) {
      this.attach(this.pendingConn, this.pendingPipe ?? undefined);
      this.pendingConn = -1;
      this.pendingPipe = null;
    }
    this.resendReply = null;
    this.dropRehandle();
    this.conn?.close(`adopting the session failed: ${reason}`, true);
  }

  /** This VF for the HA mirror: the record and the fds it names (still ours). */
  exportMirror(): { rec: MirrorVf; fds: number[] } {
    const fds: number[] = [];
    const live = this.conn?.isOpen === true;
    const connFd = live ? this.conn!.fd : this.pendingConn;
    const conn = connFd >= 0 ? fds.push(connFd) - 1 : -1;
    const pipe = live ? this.conn!.pipe : this.pendingPipe;
    const listenFd = this.endpoint instanceof ServerEndpoint ? this.endpoint.fd : -1;
    const listen = listenFd >= 0 ? fds.push(listenFd) - 1 : -1;
    const session = this.session.exportMirror(fds);
    const rec: MirrorVf = { conn, listen, reconnects: this.reconnects, session, seq: this.lastHandled };
    if (conn >= 0 && pipe) rec.replyPipe = { read: fds.push(pipe.read) - 1, write: fds.push(pipe.write) - 1 };
    if (this.pendingReply) rec.reply = this.pendingReply.toString("hex");
    if (this.lockedMac) rec.lockedMac = this.lockedMac;
    return { rec, fds };
  }

  /** An adopted connection not read yet (resume starts reading it), and its reply pipe. */
  private pendingConn = -1;
  private pendingPipe: ReplyPipe | null = null;
  /** Takes messages off the connection, exactly once (intake.ts). */
  private readonly intake: Intake;
  /** The last message handled (its seq). */
  private lastHandled = 0;
  /** Adoption: the message the dead runner took and did not handle, handled at resume. */
  private rehandle: AnnouncedMessage | null = null;
  /** Replies produced while a message is handled (sent after the mirror has its effect). */
  private replies: Buffer[] | null = null;
  /** Fds those replies carry (the session's own: the kernel sends duplicates). */
  private replyFds: number[] = [];
  private pendingReply: Buffer | null = null;
  /** Adoption: the dead runner's last reply, maybe never written; sent at resume. */
  private resendReply: Buffer | null = null;

  /**
   * Takes over a session the peer daemon ran, in place (no reconnect). Owns `fds` from now on.
   * Nothing runs yet: rings start and the connection is read only at resume(), once every VF
   * is adopted and this process holds the VF's lock.
   */
  adopt(rec: MirrorVf, fds: readonly number[], announced?: AnnouncedMessage): void {
    this.reconnects = rec.reconnects;
    const conn = rec.conn >= 0 ? fds[rec.conn]! : -1;
    if (this.endpoint instanceof ServerEndpoint && rec.listen >= 0) this.endpoint.adopt(fds[rec.listen]!, conn >= 0);
    else if (rec.listen >= 0) closeAll([fds[rec.listen]!]);
    if (conn < 0) {
      // A session without a connection is empty; a record that says otherwise leaks nothing.
      closeAll(mirrorVfFdIndices(rec).filter((i) => i !== rec.listen).map((i) => fds[i]!));
      if (announced) closeAll(announced.fds);
      if (!(this.endpoint instanceof ServerEndpoint && rec.listen >= 0)) this.start();
      else this.state = "waiting";
      return;
    }
    this.everConnected = true;
    this.pendingConn = conn;
    // A record from a runner without reply pipes (older version) gets a new, empty one.
    this.pendingPipe = rec.replyPipe ? new ReplyPipe(fds[rec.replyPipe.read]!, fds[rec.replyPipe.write]!) : ReplyPipe.create();
    this.lastHandled = rec.seq ?? 0;
    this.resendReply = null;
    this.dropRehandle();
    this.state = "negotiating";
    try {
      // Goes to the front-end as it is: it must be whole replies, as our sessions write them.
      if (rec.reply) this.resendReply = checkedReplies(Buffer.from(rec.reply, "hex"));
      this.session.adoptMirror(rec.session, fds, false);
      this.rehandle = this.unhandled(announced);
      announced = undefined;
      // A later message was announced, so this reply had gone before it was read.
      if (this.rehandle) this.resendReply = null;
      this.intake.restart(this.rehandle?.seq ?? this.lastHandled);
    } catch (err) {
      if (announced) closeAll(announced.fds);
      this.attach(conn, this.pendingPipe);
      this.pendingConn = -1;
      this.pendingPipe = null;
      this.conn?.close(`adopting the session failed: ${(err as Error).message}`, true);
    }
  }

  /**
   * The message the dead runner took off the connection and did not handle (intake.ts): the
   * announced copy if the inbox slot says the message left the socket; none if it is still
   * there (it is read from there). Throws when that cannot be known. Owns `announced`'s fds.
   */
  private unhandled(announced: AnnouncedMessage | undefined): AnnouncedMessage | null {
    const pending = announced && announced.seq > this.lastHandled ? announced : undefined;
    if (announced && !pending) closeAll(announced.fds); // handled: the record has its effect
    const slot = this.hooks.inbox?.state(this.spec.devId);
    const stillThere = () => {
      if (!pending) return null;
      closeAll(pending.fds); // announced, never taken: read from the socket
      this.log.info({ seq: pending.seq }, "the message the dead runner announced is still in the socket; it is read from there");
      return null;
    };
    if (!slot || slot.seq <= this.lastHandled || (pending && slot.seq < pending.seq)) return stillThere();
    try {
      if (slot.multipart) throw new Error(`the dead runner was reading message ${slot.seq} in pieces; how much of it left the socket is unknown`);
      if (!slot.consumed) return stillThere();
      if (!pending || pending.seq !== slot.seq) throw new Error(`message ${slot.seq} was taken off the connection but never announced`);
      if (!slot.bytes.equals(pending.bytes)) throw new Error(`message ${slot.seq}: the inbox and its announcement differ`);
    } catch (err) {
      if (pending) closeAll(pending.fds);
      throw err;
    }
    return pending;
  }

  private dropRehandle(): void {
    if (this.rehandle) closeAll(this.rehandle.fds);
    this.rehandle = null;
  }

  /** Starts what an adoption left stopped: receive rings, then transmit rings, then the connection. */
  resume(which: "rx" | "tx" | "conn"): void {
    if (which !== "conn") {
      this.session.resumeAdopted(which);
      return;
    }
    if (this.pendingConn < 0) return;
    this.attach(this.pendingConn, this.pendingPipe ?? undefined);
    this.pendingConn = -1;
    this.pendingPipe = null;
    const conn = this.conn!;
    const again = this.rehandle;
    this.rehandle = null;
    if (again) {
      // Its reply, if the dead runner got that far, is in the pipe and was never sent: drop it.
      const dropped = conn.pipe.discard();
      const header = decodeHeader(again.bytes);
      this.log.warn({ seq: again.seq, request: header.request, droppedReplyBytes: dropped }, "handling again the message the dead runner took off the connection and did not finish");
      const msg: VhostMessage = { seq: again.seq, header, payload: Buffer.from(again.bytes.subarray(HEADER_SIZE)), fds: new MessageFds(again.fds) };
      try {
        this.handleMessage(msg);
      } finally {
        msg.fds.closeUntaken();
      }
    } else if (conn.pipe.pending > 0) {
      this.log.info({ bytes: conn.pipe.pending }, "sending the rest of the dead runner's reply");
      conn.sendPiped();
    }
    if (this.resendReply) {
      // A missing reply freezes the front-end; a duplicate fails one of its requests.
      this.log.warn({ bytes: this.resendReply.length }, "resent the reply to the last message the dead runner handled (it may have written it already)");
      // A GET_INFLIGHT_FD reply carries the area's fd, which the adopted session holds.
      const fds = this.resendReply.length >= 4 && this.resendReply.readUInt32LE(0) === Req.GET_INFLIGHT_FD ? this.session.inflightFds() : [];
      this.pendingReply = this.resendReply;
      this.resendReply = null;
      this.sendReply(this.pendingReply, fds);
    }
    this.updateState();
    if (this.state === "running") this.runningSince = Date.now();
    this.log.info({ state: this.state, queues: this.session.vrings.filter((v) => v.started).length }, "session adopted in place");
  }

  /** Hand-back, step 1: stop reading vhost-user messages (they wait in the socket for the peer). */
  pauseMessages(): void {
    const conn = this.conn;
    if (!conn?.isOpen) return;
    const unsent = conn.detach();
    this.conn = null;
    this.pendingConn = conn.fd;
    this.pendingPipe = conn.pipe;
    // A reply still queued for a front-end that had not read yet stays pending: the record the
    // peer gets carries it, and resumeMessages() sends it if the hand-back does not happen.
    if (unsent.bytes.length > 0) {
      if (unsent.partial) this.log.error({ bytes: unsent.bytes.length }, "hand-back with a reply half written; the front-end's stream may be cut");
      this.pendingReply = unsent.bytes;
      this.resendReply = unsent.bytes;
    }
  }

  /** A hand-back that did not happen: read messages again. */
  resumeMessages(): void {
    this.resume("conn");
  }

  /** The adoption cannot run (the peer still holds the VF's lock): close our copies only. */
  abandon(): void {
    this.state = "stopped";
    if (this.pendingConn >= 0) closeAll([this.pendingConn]);
    this.pendingConn = -1;
    this.pendingPipe?.close();
    this.pendingPipe = null;
    this.dropRehandle();
    if (this.endpoint instanceof ServerEndpoint) {
      const fd = this.endpoint.fd;
      this.endpoint.detach();
      if (fd >= 0) closeAll([fd]);
    } else this.endpoint.stop();
    this.session.reset();
  }

  /** Stops the rings and lets go of every fd without closing any (a mirror copy owns them now). */
  detach(): void {
    this.state = "stopped";
    this.runningSince = undefined;
    this.conn?.detach();
    this.conn = null;
    this.pendingConn = -1;
    this.pendingPipe = null; // a mirror copy owns it now
    this.dropRehandle();
    if (this.endpoint instanceof ServerEndpoint) this.endpoint.detach();
    else this.endpoint.stop();
    this.session.disown();
  }

  private disconnected(reason: string, violation: boolean): void {
    this.conn = null;
    this.pendingReply = null;
    this.runningSince = undefined;
    this.session.reset();
    this.ringsRan = false;
    this.releasePortLock("front-end gone");
    if (violation) this.lastError = reason;
    this.log[violation ? "error" : "info"]({ reason }, "front-end disconnected");
    if (this.state === "stopped") return;
    this.state = this.spec.mode === "server" ? "waiting" : "connecting";
    this.endpoint.start();
    this.hooks.changed();
  }

  stop(): void {
    this.state = "stopped";
    this.runningSince = undefined;
    this.endpoint.stop();
    this.conn?.close("VF removed", false);
    this.session.reset();
  }

  /** Reads the engine's shared counters for one queue (no native call). */
  private counters(queue: number) {
    const c = this.engine.counters;
    const at = (field: number) => Number(c[counterIndex(this.engine.maxQueues, this.spec.devId, queue, field)]);
    const port = (field: number) => Number(c[portCounterIndex(this.engine.maxDevices, this.engine.maxQueues, this.spec.devId, queue, field)]);
    const ps = this.spec.kind === "net" && queue % 2 === 1 ? { spoofed: port(0), unlearned: port(1) } : {};
    return { packets: at(0), bytes: at(1), drops: at(2), kicks: at(3), calls: at(4), errors: at(5), ...ps };
  }

  /** Live while the queue runs (the engine's own index); otherwise the index it resumes at. */
  private lastAvail(queue: number, started: boolean, base: number): number {
    const live = started ? this.engine.queueLastAvail(this.spec.devId, queue) : -1;
    return live >= 0 ? live : base;
  }

  runtime(owner: string): VfRuntime {
    const s = this.session;
    const hex = (v: bigint) => `0x${v.toString(16)}`;
    return {
      state: this.state,
      connected: this.conn !== null || this.pendingConn >= 0,
      features: `0x${s.features.toString(16)}`,
      protocolFeatures: `0x${s.protocolFeatures.toString(16)}`,
      reconnects: this.reconnects,
      ...(s.model.writeback !== undefined ? { writeback: s.model.writeback === 1 } : {}),
      owner,
      regions: s.memoryRegions.map((r) => ({ guestAddr: hex(r.guestAddr), size: hex(r.size), userAddr: hex(r.userAddr), mmapOffset: hex(r.mmapOffset) })),
      queues: s.vrings.map((v) => ({
        index: v.index,
        size: v.num,
        enabled: v.enabled,
        started: v.started,
        lastAvailIdx: this.lastAvail(v.index, v.started, v.base),
        ...(v.addr ? { desc: hex(v.addr.desc), avail: hex(v.addr.avail), used: hex(v.addr.used) } : {}),
        ...this.counters(v.index),
      })),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(this.spec.kind === "net" ? { lockedMac: this.portLock() } : {}),
    };
  }

  /** The next front-end may be another VM: its first source locks the port anew. */
  private releasePortLock(why: string): void {
    if (this.spec.kind !== "net" || portSecurityOf(this.spec).macAdmin) return;
    try {
      this.engine.setPortSecurity(this.spec.devId, { lockedMac: "" });
    } catch {
      /* engine closed */
    }
    if (this.lockedMac) this.log.info({ mac: this.lockedMac }, `switch port unlocked (${why})`);
    this.lockedMac = undefined;
  }

  private portLock(): string {
    try {
      return this.engine.portState(this.spec.devId).lockedMac;
    } catch {
      return this.lockedMac ?? "";
    }
  }

}

/**
 * The reply bytes of an adopted record (MirrorVf.reply) are resent to the front-end unseen by
 * any handler: they must be what our sessions write, whole replies (VERSION|REPLY, a request
 * we handle, a payload within the limit), or the adoption of that VF fails.
 */
export function checkedReplies(bytes: Buffer): Buffer {
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < HEADER_SIZE) throw new Error(`mirrored reply: ${bytes.length - at} trailing bytes are not a message`);
    const h = decodeHeader(bytes, at);
    if (h.flags !== (MsgFlag.VERSION | MsgFlag.REPLY)) throw new Error(`mirrored reply: flags 0x${h.flags.toString(16)} are not VERSION|REPLY`);
    if (!MESSAGES.has(h.request)) throw new Error(`mirrored reply to request ${h.request}, which we do not handle`);
    if (h.size > MAX_PAYLOAD || at + HEADER_SIZE + h.size > bytes.length) throw new Error(`mirrored reply of ${h.size} bytes does not fit`);
    at += HEADER_SIZE + h.size;
  }
  return bytes;
}
