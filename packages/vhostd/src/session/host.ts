// The VfHost that runs VFs for real: one native engine for the daemon, and per VF an
// endpoint (client or server), the live connection and its vhost-user session.
import fs from "node:fs";
import type { Logger } from "pino";
import { counterIndex, native, portCounterIndex, type EngineEvent, type NativeEngine } from "@vhostd/native";
import { HEADER_SIZE, MAX_PAYLOAD, MESSAGES, MsgFlag, Req, decodeHeader, mirrorVfFdIndices, type MirrorVf } from "@vhostd/proto";
import { LinuxErrno, errnoOf, type DeviceKind } from "@vhostd/proto";
import { portSecurityOf, type FdbRow, type VfHost, type VfRuntime, type VfSpec } from "../vf_host.js";
import { closeAll } from "./connection.js";
import { VfLock } from "./vf_lock.js";
import { VhostUserConnection } from "./connection.js";
import { ClientEndpoint, ServerEndpoint, type Endpoint } from "./endpoint.js";
import { BlkModel } from "./blk_model.js";
import type { DeviceModel } from "./device_model.js";
import { NetModel, rarpFrame } from "./net_model.js";
import { Rejection, VhostSession, encodeReply } from "./session.js";
import { CrashLedger, DEFAULT_CLEAN_MS, KEEPER_CRASH_ROLE, VHOSTD_CRASH_ROLE, type CrashVerdict, type DevLookup } from "./crash_ledger.js";

export interface VfHostOptions {
  log: Logger;
  runDir: string;
  /** Datapath worker threads (default 1, or VHOSTD_WORKERS; VHOSTD_POLL_US sets the busy-poll time). */
  workers?: number;
  /** HA: hold <lockDir>/<dev>.lock while running a VF's queues (exactly one process runs them). */
  lockDir?: string;
  /** HA: counters and TX progress in this file (tmpfs), shared with the peer daemon. */
  sharedPath?: string;
  /** Reported as the owner of every session and queue (default "vfe-vhostd"). */
  owner?: string;
  /**
   * A VF implicated in a crash that then runs this long without one starts again from zero
   * crashes (default 60 s, or VHOSTD_CRASH_CLEAN_MS). See crash_ledger.ts.
   */
  crashCleanMs?: number;
}

/**
 * Where the HA session mirror goes (the keeper pushes to vfe-vhostd). The fds are the host's
 * own: the sink sends duplicates and keeps nothing. Called after every change, synchronously.
 */
export interface MirrorSink {
  vf(dev: string, rec: MirrorVf, fds: number[]): void;
  /** A message that changed nothing (refused, or read-only) has this reply to write: the copy carries it. */
  reply(dev: string, reply: Buffer): void;
  /** The reply in the VF's last record (or reply()) was written. */
  replied(dev: string): void;
  /**
   * Calls `fn` once everything pushed so far is in the socket to the peer (now, usually). Sends
   * to the peer never wait, so a record may still be queued in this process; a reply must not
   * reach the front-end before the record of its message reached the socket, which outlives us.
   */
  whenSent(fn: () => void): void;
  pf(dev: string, switchId: number, tapFd: number): void;
  drop(dev: string): void;
}

class HostError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

/** One VF's endpoint, connection and session. */
class VfSession {
  state: VfRuntime["state"] = "waiting";
  reconnects = 0;
  lastError: string | undefined;
  /** net: the MAC its switch port locked to from its first source (the engine reported it). */
  lockedMac: string | undefined;
  private conn: VhostUserConnection | null = null;
  private readonly endpoint: Endpoint;
  readonly session: VhostSession;
  private readonly log: Logger;
  private everConnected = false;

  constructor(
    readonly spec: VfSpec,
    private readonly engine: NativeEngine,
    model: DeviceModel,
    parentLog: Logger,
    private readonly onChange: () => void,
    private readonly onReplied: () => void,
    private readonly onReplyPending: (reply: Buffer) => void,
    private readonly whenMirrored: (fn: () => void) => void,
    private readonly crashes: CrashLedger,
  ) {
    this.log = parentLog.child({ vf: spec.dev, socket: spec.socketPath });
    this.session = new VhostSession(spec.devId, model, engine, this.log, {
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
      this.onChange();
    });
  }

  private attach(fd: number): void {
    this.state = "negotiating";
    this.conn = new VhostUserConnection(fd, {
      onMessage: (msg) =>
        this.within(() => {
          // The message's effect reaches the mirror before its reply reaches the front-end; the
          // record carries the reply until "replied" says it was written (see MirrorVf.reply).
          this.replies = [];
          this.replyFds = [];
          const outcome = this.session.handle(msg);
          this.updateState();
          const out = this.replies.length > 0 ? Buffer.concat(this.replies) : null;
          this.replies = null;
          this.pendingReply = out;
          // A message that changed nothing (refused, or one that only reads) costs the mirror no
          // record and no fds, only its pending reply; anything else sends the whole record.
          if (outcome !== "unchanged") this.onChange();
          else if (out) this.onReplyPending(out);
          if (!out) return;
          const conn = this.conn;
          const fds = this.replyFds;
          // The reply goes once the mirror has the message's effect in its socket (usually at once:
          // the callback runs now); until then no further message is read.
          let waiting = false;
          let called = false;
          this.whenMirrored(() =>
            this.within(() => {
              called = true;
              if (waiting) {
                if (this.conn !== conn || !conn?.isOpen) return;
                conn.holdReading(false);
              }
              this.sendReply(out, fds);
            }),
          );
          if (!called) {
            waiting = true;
            conn?.holdReading(true);
          }
        }),
      onClose: (reason, violation) => this.within(() => this.disconnected(reason, violation)),
      onDrained: () => this.replyWritten(),
    });
  }

  /** Writes the pending reply; a front-end that does not read gets it queued (onDrained follows). */
  private sendReply(out: Buffer, fds: number[]): void {
    if (this.conn?.send(out, fds)) this.replyWritten();
  }

  private replyWritten(): void {
    if (!this.pendingReply) return;
    this.pendingReply = null;
    this.onReplied();
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
      this.attach(this.pendingConn);
      this.pendingConn = -1;
    }
    this.resendReply = null;
    this.conn?.close(`adopting the session failed: ${reason}`, true);
  }

  /** This VF for the HA mirror: the record and the fds it names (still ours). */
  exportMirror(): { rec: MirrorVf; fds: number[] } {
    const fds: number[] = [];
    const connFd = this.conn?.isOpen ? this.conn.fd : this.pendingConn;
    const conn = connFd >= 0 ? fds.push(connFd) - 1 : -1;
    const listenFd = this.endpoint instanceof ServerEndpoint ? this.endpoint.fd : -1;
    const listen = listenFd >= 0 ? fds.push(listenFd) - 1 : -1;
    const session = this.session.exportMirror(fds);
    const rec: MirrorVf = { conn, listen, reconnects: this.reconnects, session };
    if (this.pendingReply) rec.reply = this.pendingReply.toString("hex");
    if (this.lockedMac) rec.lockedMac = this.lockedMac;
    return { rec, fds };
  }

  /** An adopted connection not read yet (resume starts reading it). */
  private pendingConn = -1;
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
  adopt(rec: MirrorVf, fds: readonly number[]): void {
    this.reconnects = rec.reconnects;
    const conn = rec.conn >= 0 ? fds[rec.conn]! : -1;
    if (this.endpoint instanceof ServerEndpoint && rec.listen >= 0) this.endpoint.adopt(fds[rec.listen]!, conn >= 0);
    else if (rec.listen >= 0) closeAll([fds[rec.listen]!]);
    if (conn < 0) {
      // A session without a connection is empty; a record that says otherwise leaks nothing.
      closeAll(mirrorVfFdIndices(rec).filter((i) => i !== rec.listen).map((i) => fds[i]!));
      if (!(this.endpoint instanceof ServerEndpoint && rec.listen >= 0)) this.start();
      else this.state = "waiting";
      return;
    }
    this.everConnected = true;
    this.pendingConn = conn;
    this.resendReply = null;
    this.state = "negotiating";
    try {
      // Goes to the front-end as it is: it must be whole replies, as our sessions write them.
      if (rec.reply) this.resendReply = checkedReplies(Buffer.from(rec.reply, "hex"));
      this.session.adoptMirror(rec.session, fds, false);
    } catch (err) {
      this.attach(conn);
      this.pendingConn = -1;
      this.conn?.close(`adopting the session failed: ${(err as Error).message}`, true);
    }
  }

  /** Starts what an adoption left stopped: receive rings, then transmit rings, then the connection. */
  resume(which: "rx" | "tx" | "conn"): void {
    if (which !== "conn") {
      this.session.resumeAdopted(which);
      return;
    }
    if (this.pendingConn < 0) return;
    this.attach(this.pendingConn);
    this.pendingConn = -1;
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
    this.onChange();
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

export class EngineVfHost implements VfHost {
  readonly engine: NativeEngine;
  private readonly vfs = new Map<string, VfSession>();
  private readonly byDevId = new Map<number, VfSession>();
  /** TAP uplink fd per switch, owned here, and the PF it belongs to. */
  private readonly taps = new Map<number, number>();
  private readonly pfOfSwitch = new Map<number, string>();
  private readonly locks = new Map<string, VfLock>();
  /** Moves whenever this host stops running its VFs: a late lock taken for an older run is dropped. */
  private lockEpoch = 0;
  /** Adopted VFs and TAP uplinks waiting for resumeAdopted(). */
  private readonly adopting = new Set<string>();
  private readonly pendingUplinks = new Map<number, number>();
  private readonly log: Logger;
  private mirror: MirrorSink | undefined;
  /** Crash attribution and the poison-pill verdicts (crash_ledger.ts), in the shared engine file. */
  readonly crashes: CrashLedger;
  private readonly cleanTimer: NodeJS.Timeout;

  constructor(private readonly opts: VfHostOptions) {
    this.log = opts.log;
    const workers = opts.workers ?? (Number(process.env.VHOSTD_WORKERS) || 1);
    const pollUs = engineEnvInt("VHOSTD_POLL_US", 0, 10_000_000);
    const cleanMs = opts.crashCleanMs ?? engineEnvInt("VHOSTD_CRASH_CLEAN_MS", 100, 86_400_000) ?? DEFAULT_CLEAN_MS;
    let sharedFd: number | undefined;
    if (opts.sharedPath) sharedFd = fs.openSync(opts.sharedPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const crashRole = opts.owner === "vfe-vhostd-ha" ? KEEPER_CRASH_ROLE : VHOSTD_CRASH_ROLE;
    try {
      this.engine = new native.Engine({ workers, crashRole, ...(pollUs !== undefined ? { pollUs } : {}), ...(sharedFd !== undefined ? { sharedFd } : {}) }, (ev) => this.onEngineEvent(ev));
    } finally {
      if (sharedFd !== undefined) fs.closeSync(sharedFd); // the engine keeps its mapping
    }
    this.crashes = new CrashLedger(this.engine, this.log);
    this.cleanTimer = setInterval(() => this.clearCleanCounts(cleanMs), Math.min(5000, Math.max(50, Math.floor(cleanMs / 4))));
    this.cleanTimer.unref();
  }

  /**
   * Takes the crash records a dead daemon left in the shared file and judges the VFs they name
   * (crash_ledger.ts). Call before running anything the dead one ran. `lookup` names device ids
   * this host does not run (yet), for the log.
   */
  claimCrashes(lookup?: DevLookup): CrashVerdict[] {
    return this.crashes.claim((id) => this.byDevId.get(id)?.spec ?? lookup?.(id));
  }

  /** VFs that ran cleanly for cleanMs since a crash named them start again from zero. */
  private clearCleanCounts(cleanMs: number): void {
    if (!this.crashes.anyCounted()) return;
    const now = Date.now();
    for (const vf of this.vfs.values()) {
      if (vf.runningSince === undefined || now - vf.runningSince < cleanMs) continue;
      if (this.crashes.clean(vf.spec))
        this.log.info({ event: "crash_count_cleared", vf: vf.spec.dev, socket: vf.spec.socketPath, cleanMs }, `VF ${vf.spec.dev} ran ${Math.round((now - vf.runningSince) / 1000)} s without a crash: its crash count starts again from zero`);
    }
  }

  /** HA: from now on every change is mirrored to `sink` (undefined: stop mirroring). */
  setMirror(sink: MirrorSink | undefined): void {
    this.mirror = sink;
  }

  /** Sends the whole state to the mirror (a new mirror connection). */
  mirrorAll(): void {
    for (const [switchId, pf] of this.pfOfSwitch) this.mirror?.pf(pf, switchId, this.taps.get(switchId) ?? -1);
    for (const dev of this.vfs.keys()) this.mirrorVf(dev);
  }

  private mirrorVf(dev: string): void {
    const vf = this.vfs.get(dev);
    if (!vf || !this.mirror) return;
    const { rec, fds } = vf.exportMirror();
    this.mirror.vf(dev, rec, fds);
  }

  addPf(pf: string, switchId: number, kind: DeviceKind, uplinkTap?: string): void {
    if (kind !== "net") return;
    let fd = -1;
    if (uplinkTap) {
      try {
        fd = native.openTap(uplinkTap);
      } catch (err) {
        throw new HostError(`uplink ${uplinkTap}: ${(err as Error).message}`, -19 /* ENODEV */);
      }
    }
    this.adoptPf(pf, switchId, fd);
    this.log.info({ pf, switchId, kind, uplink: uplinkTap }, "PF datapath ready");
  }

  /**
   * A PF's switch with an already open TAP uplink fd (-1: none); the fd is ours from now on.
   * `deferUplink` (adoption): the TAP is read only from resumeAdopted() on, as the peer may
   * still be reading it.
   */
  adoptPf(pf: string, switchId: number, tapFd: number, deferUplink = false): void {
    this.engine.addSwitch(switchId);
    this.pfOfSwitch.set(switchId, pf);
    if (tapFd >= 0 && deferUplink) {
      this.taps.set(switchId, tapFd);
      this.pendingUplinks.set(switchId, tapFd);
      return;
    }
    if (tapFd < 0) {
      this.mirror?.pf(pf, switchId, -1);
      return;
    }
    try {
      this.engine.setSwitchUplink(switchId, tapFd);
    } catch (err) {
      this.engine.removeSwitch(switchId);
      native.closeFd(tapFd);
      throw new HostError(`uplink of ${pf}: ${(err as Error).message}`, -19);
    }
    this.taps.set(switchId, tapFd);
    this.mirror?.pf(pf, switchId, tapFd);
  }

  removePf(pf: string, switchId: number, kind: DeviceKind): void {
    if (kind !== "net") return;
    const tap = this.releasePf(switchId);
    if (tap >= 0) native.closeFd(tap); // the engine keeps no copy after detaching; the TAP device goes away
    this.mirror?.drop(pf);
  }

  /** Takes the PF's switch down and hands its TAP fd (or -1) to the caller, open. */
  releasePf(switchId: number): number {
    const tap = this.taps.get(switchId) ?? -1;
    if (tap >= 0) {
      if (!this.pendingUplinks.delete(switchId)) this.engine.setSwitchUplink(switchId, -1); // idempotent
      this.taps.delete(switchId);
    }
    this.pfOfSwitch.delete(switchId);
    this.engine.removeSwitch(switchId);
    return tap;
  }

  /** The TAP uplink fd of a switch (-1: none); still ours. */
  tapFd(switchId: number): number {
    return this.taps.get(switchId) ?? -1;
  }

  /** PFs this host runs: dev -> switch id. */
  pfList(): Map<string, number> {
    return new Map([...this.pfOfSwitch].map(([sw, pf]) => [pf, sw]));
  }

  open(spec: VfSpec): void {
    const vf = this.create(spec);
    if (this.stayBroken(vf)) return;
    try {
      vf.start();
    } catch (err) {
      this.destroy(vf);
      throw new HostError(`cannot serve ${spec.socketPath}: ${(err as Error).message}`, -5);
    }
    this.mirrorVf(spec.dev);
  }

  /**
   * HA: prepares a VF whose session another daemon runs or ran (it died, or hands it over): the
   * session is rebuilt from the record, nothing runs until resumeAdopted(). Owns `fds` from the
   * call on. The VF's lock is not taken here: the peer may still hold it.
   */
  adopt(spec: VfSpec, rec: MirrorVf, fds: number[]): void {
    let vf: VfSession;
    try {
      vf = this.create(spec, true, rec.lockedMac);
    } catch (err) {
      closeAll(fds);
      throw err;
    }
    if (this.stayBroken(vf)) {
      closeAll(fds); // the last copies of its connection: the front-end sees the disconnect
      return;
    }
    const crash = this.crashes.state(spec);
    if (crash.count > 0) this.log.warn({ event: "crash_suspect_resumed", vf: spec.dev, socket: spec.socketPath, count: crash.count }, `running VF ${spec.dev} again although ${crash.reason}`);
    vf.within(() => vf.adopt(rec, fds));
    this.adopting.add(spec.dev);
  }

  /** A VF the crash ledger says is broken is created but never served (crash_ledger.ts). */
  private stayBroken(vf: VfSession): boolean {
    const crash = this.crashes.state(vf.spec);
    if (!crash.broken) return false;
    vf.markBroken(crash.reason!);
    this.log.error({ event: "vf_broken", vf: vf.spec.dev, socket: vf.spec.socketPath, count: crash.count, reason: crash.reason }, `VF ${vf.spec.dev} on ${vf.spec.socketPath} is not served: ${crash.reason}`);
    this.mirrorVf(vf.spec.dev);
    return true;
  }

  /**
   * Runs every adopted VF: takes each one's lock (waiting up to `lockWaitMs` for a dying peer to
   * drop it), sets deferred TAP uplinks, starts every receive ring, then every transmit ring (no
   * frame is forwarded to a port that does not run yet), kicks and signals each once, and only
   * then reads the connections. Returns the VFs whose lock stayed held (abandoned here).
   */
  async resumeAdopted(lockWaitMs: number, holderExiting?: () => boolean): Promise<string[]> {
    const devs = [...this.adopting];
    this.adopting.clear();
    const failed: string[] = [];
    await Promise.all(
      devs.map(async (dev) => {
        const vf = this.vfs.get(dev);
        if (!vf || !this.opts.lockDir) return;
        const lock = await VfLock.take(this.opts.lockDir, dev, lockWaitMs, holderExiting);
        if (lock === "holder-exiting") {
          this.log.info({ vf: dev, socket: vf.spec.socketPath }, "adopted while the dead runner's lock awaits the kernel's teardown; taken when released");
          this.lockWhenReleased(dev);
        } else if (lock) this.locks.set(dev, lock);
        else {
          failed.push(dev);
          vf.abandon();
          this.destroy(vf);
          this.log.error({ vf: dev, socket: vf.spec.socketPath }, "adoption abandoned: another process still runs this VF's queues");
        }
      }),
    );
    for (const [switchId, fd] of this.pendingUplinks) this.engine.setSwitchUplink(switchId, fd);
    this.pendingUplinks.clear();
    const live = devs.map((d) => this.vfs.get(d)).filter((v): v is VfSession => v !== undefined);
    // One VF's record may pass every check and still not start (a ring outside the memory it
    // maps): that VF fails alone, the others resume.
    const bad = new Set<VfSession>();
    const step = (vf: VfSession, fn: () => void) => {
      if (bad.has(vf)) return;
      try {
        vf.within(fn);
      } catch (err) {
        bad.add(vf);
        vf.within(() => vf.failAdoption((err as Error).message));
      }
    };
    this.engine.hold(true);
    try {
      for (const vf of live) step(vf, () => vf.resume("rx"));
      for (const vf of live) step(vf, () => vf.resume("tx"));
    } finally {
      this.engine.hold(false);
    }
    for (const vf of live) {
      step(vf, () => vf.resume("conn"));
      this.mirrorVf(vf.spec.dev);
    }
    return failed;
  }

  /**
   * HA hand-back, step 1 (traffic keeps flowing): stop reading vhost-user messages and return
   * every VF's record and fds (still ours and in use) for the peer to prepare.
   */
  offerAll(): Array<{ dev: string; rec: MirrorVf; fds: number[] }> {
    for (const vf of this.vfs.values()) vf.pauseMessages();
    return [...this.vfs].map(([dev, vf]) => ({ dev, ...vf.exportMirror() }));
  }

  /** The hand-back did not happen: read messages again. */
  cancelOffer(): void {
    for (const vf of this.vfs.values()) vf.resumeMessages();
  }

  /**
   * The part of a hand-back the peer waits for: every ring stopped, every TAP uplink detached,
   * every VF lock dropped. dropAll() does the rest after the peer was told.
   */
  /**
   * Takes a VF's lock once a dying holder's teardown releases it, unless the VF was stopped,
   * closed or handed on meanwhile (lockEpoch moved): then the lock is dropped at once.
   */
  private lockWhenReleased(dev: string): void {
    const epoch = this.lockEpoch;
    const dir = this.opts.lockDir!;
    void VfLock.take(dir, dev, 600_000, undefined, 10).then((lock) => {
      if (!(lock instanceof VfLock)) {
        this.log.error({ vf: dev }, "the dead runner's lock was not released within 10 min; this VF runs unfenced");
        return;
      }
      if (epoch !== this.lockEpoch || !this.vfs.has(dev) || this.locks.has(dev)) lock.release();
      else this.locks.set(dev, lock);
    });
  }

  stopAndUnlockAll(): void {
    this.lockEpoch++;
    this.engine.hold(true);
    try {
      for (const vf of this.vfs.values()) vf.session.stopRings();
      for (const [switchId] of this.taps) if (!this.pendingUplinks.has(switchId)) this.engine.setSwitchUplink(switchId, -1);
    } finally {
      this.engine.hold(false);
    }
    for (const lock of this.locks.values()) lock.release();
    this.locks.clear();
  }

  /** Drops every VF and PF without closing their fds; returns the TAP fds (open, the caller's). */
  dropAll(): Array<{ dev: string; switchId: number; fd: number }> {
    for (const vf of [...this.vfs.values()]) {
      vf.detach();
      this.destroy(vf);
    }
    return [...this.pfList()].map(([dev, switchId]) => ({ dev, switchId, fd: this.releasePf(switchId) }));
  }

  /**
   * A new VF takes its lock now; an adopted one (`adopting`) takes it at resumeAdopted, since the
   * peer may still hold it, and continues the counters the peer left in shared memory.
   */
  private create(spec: VfSpec, adopting = false, lockedMac?: string): VfSession {
    if (spec.kind !== "net" && spec.kind !== "blk") throw new HostError(`${String(spec.kind)} VFs are not implemented`, -95 /* EOPNOTSUPP */);
    if (spec.kind === "blk" && !spec.disk) throw new HostError(`blk VF ${spec.dev} has no disk`, -22);
    if (this.vfs.has(spec.dev)) throw new HostError(`VF ${spec.dev} is already open`, -17);
    this.crashes.register(spec); // the device id is this VF's from now on (crash_ledger.ts)
    let lock: VfLock | undefined;
    if (this.opts.lockDir && !adopting) {
      lock = VfLock.tryTake(this.opts.lockDir, spec.dev) ?? undefined;
      if (!lock) throw new HostError(`another process runs the queues of ${spec.dev} (${VfLock.file(this.opts.lockDir, spec.dev)} is locked)`, -16);
    }
    const keepCounters = adopting;
    let model: DeviceModel;
    try {
      if (spec.kind === "blk") model = this.addBlk(spec, keepCounters);
      else {
        // Port security goes with the device: no frame passes the switch before it applies.
        const ps = portSecurityOf(spec);
        const portSecurity = { spoofchk: ps.spoofchk, trust: ps.trust, adminMac: ps.macAdmin, reportLock: true, ...(lockedMac && !ps.macAdmin ? { lockedMac } : {}) };
        this.engine.addNetDevice(spec.devId, { switchId: spec.switchId, mac: spec.mac, mtu: spec.mtu, maxQueuePairs: spec.queuePairs, keepCounters, portSecurity });
        model = new NetModel(spec.mac, spec.mtu, spec.queuePairs, (mac) => {
          try {
            this.engine.injectFrame(spec.devId, rarpFrame(mac));
          } catch (err) {
            // A RARP announces the VF's own MAC only (port security): refused, the session goes on.
            throw new Rejection(`RARP announcement for ${mac} refused: ${(err as Error).message}`);
          }
        });
      }
    } catch (err) {
      lock?.release();
      throw err;
    }
    const vf = new VfSession(
      spec,
      this.engine,
      model,
      this.log,
      () => this.mirrorVf(spec.dev),
      () => this.mirror?.replied(spec.dev),
      (reply) => this.mirror?.reply(spec.dev, reply),
      (fn) => (this.mirror ? this.mirror.whenSent(fn) : fn()),
      this.crashes,
    );
    if (spec.kind === "net" && !portSecurityOf(spec).macAdmin) {
      // What the engine pinned: a carried lock another port holds by now is not the port's.
      const locked = this.engine.portState(spec.devId).lockedMac;
      if (locked) vf.lockedMac = locked;
    }
    this.vfs.set(spec.dev, vf);
    this.byDevId.set(spec.devId, vf);
    if (lock) this.locks.set(spec.dev, lock);
    return vf;
  }

  /**
   * Opens a blk VF's backing (never creating it: `vf -a` did that) and its engine device. The
   * path is opened O_NONBLOCK so a FIFO put in its place cannot hang us, then checked with
   * fstat on the open fd (no window between check and use).
   */
  private addBlk(spec: VfSpec, keepCounters: boolean): BlkModel {
    const disk = spec.disk!;
    let fd = -1;
    if (disk.path !== "null") {
      const c = fs.constants;
      try {
        fd = fs.openSync(disk.path, (disk.readonly ? c.O_RDONLY : c.O_RDWR) | c.O_NONBLOCK | c.O_NOCTTY);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new HostError(`disk ${disk.path}: ${e.message}`, errnoOf(e, LinuxErrno.EIO));
      }
    }
    try {
      if (fd >= 0) {
        const st = fs.fstatSync(fd);
        if (!st.isFile() && !st.isBlockDevice()) throw new HostError(`disk ${disk.path} is not a regular file or block device`, -22);
      }
      const serial = `vhostd-${spec.dev}`.slice(0, 20);
      let info;
      try {
        info = this.engine.addBlkDevice(spec.devId, { fd, nullBytes: disk.size, numQueues: spec.queuePairs, readonly: disk.readonly, direct: disk.direct, serial, keepCounters });
      } catch (err) {
        throw new HostError(`disk ${disk.path}: ${(err as Error).message}`, -5);
      }
      if (info.capacity === 0n) {
        this.engine.removeDevice(spec.devId);
        throw new HostError(`disk ${disk.path} holds no whole 512-byte sector`, -22);
      }
      this.log.info({ vf: spec.dev, disk: disk.path, sectors: info.capacity.toString(), logicalBlock: info.logicalBlockSize, readonly: disk.readonly, direct: disk.direct }, "blk disk opened");
      return new BlkModel(info, spec.queuePairs, disk.readonly, (wb) => this.engine.setBlkWriteback(spec.devId, wb));
    } finally {
      if (fd >= 0) fs.closeSync(fd); // the engine holds its own dup
    }
  }

  private destroy(vf: VfSession): void {
    this.engine.removeDevice(vf.spec.devId);
    this.vfs.delete(vf.spec.dev);
    this.byDevId.delete(vf.spec.devId);
    this.locks.get(vf.spec.dev)?.release();
    this.locks.delete(vf.spec.dev);
  }

  /** `vf -r`: also forgets the VF's crash record (re-adding it starts clean); not at shutdown. */
  async close(dev: string, removed = true): Promise<void> {
    const vf = this.vfs.get(dev);
    if (!vf) return;
    vf.within(() => vf.stop());
    this.destroy(vf);
    if (removed) this.crashes.forget(vf.spec);
    this.mirror?.drop(dev);
    this.log.info({ vf: dev, socket: vf.spec.socketPath }, "VF datapath released");
  }

  runtime(dev: string): VfRuntime | undefined {
    return this.vfs.get(dev)?.runtime(this.opts.owner ?? "vfe-vhostd");
  }

  has(dev: string): boolean {
    return this.vfs.has(dev);
  }

  devs(): string[] {
    return [...this.vfs.keys()];
  }

  session(dev: string): VhostSession | undefined {
    return this.vfs.get(dev)?.session;
  }

  async shutdown(): Promise<void> {
    this.mirror = undefined; // a shutdown is not a change the peer should copy
    clearInterval(this.cleanTimer);
    for (const dev of [...this.vfs.keys()]) await this.close(dev, false);
    this.engine.close();
  }

  /** A net PF's switch forwarding table. */
  fdb(switchId: number): FdbRow[] {
    return this.engine.fdb(switchId).map((e) => ({ mac: e.mac, devId: e.devId, ageMs: e.ageMs, pinned: e.pinned }));
  }

  private onEngineEvent(ev: EngineEvent): void {
    const vf = this.byDevId.get(ev.devId);
    if (ev.kind === "port-locked") {
      // Carried by the HA mirror so that an adopter pins it before any frame flows.
      if (!vf) return;
      vf.lockedMac = ev.reason;
      this.log.info({ vf: vf.spec.dev, socket: vf.spec.socketPath, mac: ev.reason }, `switch port locked to source MAC ${ev.reason} (port security)`);
      this.mirrorVf(vf.spec.dev);
      return;
    }
    this.log.warn({ vf: vf?.spec.dev ?? `devId ${ev.devId}`, socket: vf?.spec.socketPath, queue: ev.queue, kind: ev.kind }, ev.reason);
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

export function createVfHost(opts: VfHostOptions): EngineVfHost {
  return new EngineVfHost(opts);
}

/**
 * An engine tuning from the environment (the same for vfe-vhostd and the keeper, which both
 * run an engine): undefined when unset; a value that is not an integer in [min, max] stops
 * the daemon rather than being ignored.
 */
function engineEnvInt(name: string, min: number, max: number): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) throw new HostError(`${name}=${raw.slice(0, 32)}: must be an integer in ${min}..${max}`, -22);
  return v;
}
