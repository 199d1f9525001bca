// The VfHost that runs VFs for real: one native engine for the daemon, the PFs' switches and
// TAP uplinks, the per-VF locks and crash ledger, and one VfSession (vf_session.ts) per VF.
import fs from "node:fs";
import type { Logger } from "pino";
import { native, type EngineEvent, type NativeEngine, type NativeInbox } from "@vhostd/native";
import { LinuxErrno, errnoOf, type DeviceKind, type MirrorVf } from "@vhostd/proto";
import { portSecurityOf, type FdbRow, type VfHost, type VfRuntime, type VfSpec } from "../vf_host.js";
import { closeAll } from "./connection.js";
import { VfLock } from "./vf_lock.js";
import { BlkModel } from "./blk_model.js";
import type { DeviceModel } from "./device_model.js";
import { NetModel, rarpFrame } from "./net_model.js";
import { Rejection, type VhostSession } from "./session.js";
import { VfSession, type AnnouncedMessage } from "./vf_session.js";
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
  /** HA: the message inbox shared with the peer daemon (cc/inbox.cc, session/intake.ts). */
  inboxPath?: string;
  /** Where guests' choices that must outlive both daemons are kept (the keeper: its replica). */
  guestChoices?: GuestChoices;
  /** Reported as the owner of every session and queue (default "vfe-vhostd"). */
  owner?: string;
  /**
   * A VF implicated in a crash that then runs this long without one starts again from zero
   * crashes (default 60 s, or VHOSTD_CRASH_CLEAN_MS). See crash_ledger.ts.
   */
  crashCleanMs?: number;
}

/** Choices a guest makes that must outlive this process and its peer (both killed). */
export interface GuestChoices {
  /** A blk guest's CONFIG_WCE (1 write-back, 0 write-through); undefined: never set. */
  writeback(dev: string): number | undefined;
  /** Durable when it returns (the guest's config write is answered after). */
  setWriteback(dev: string, writeback: number): void;
  /** The VF was removed: its next guest starts from the defaults. */
  forget(dev: string): void;
}

/**
 * Where the HA session mirror goes (the keeper pushes to vfe-vhostd). The fds are the host's
 * own: the sink sends duplicates and keeps nothing. Called after every change, synchronously.
 */
export interface MirrorSink {
  vf(dev: string, rec: MirrorVf, fds: number[]): void;
  /** The peer hears announcements now (it is connected). */
  readonly connected: boolean;
  /** Message seq (whole bytes, fds: ours, duplicated) is about to be taken off the VF's connection. */
  msg(dev: string, seq: number, bytes: Buffer, fds: readonly number[]): void;
  /** Message seq was handled and changed nothing. */
  done(dev: string, seq: number): void;
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
  /** The message inbox (HA); undefined without inboxPath. */
  private readonly inbox: NativeInbox | undefined;
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
    this.inbox = opts.inboxPath ? new native.Inbox(opts.inboxPath, this.engine.maxDevices) : undefined;
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
  adopt(spec: VfSpec, rec: MirrorVf, fds: number[], announced?: AnnouncedMessage): void {
    let vf: VfSession;
    try {
      vf = this.create(spec, true, rec.lockedMac);
    } catch (err) {
      closeAll([...fds, ...(announced?.fds ?? [])]);
      throw err;
    }
    if (this.stayBroken(vf)) {
      closeAll([...fds, ...(announced?.fds ?? [])]); // the last copies of its connection: the front-end sees the disconnect
      return;
    }
    const crash = this.crashes.state(spec);
    if (crash.count > 0) this.log.warn({ event: "crash_suspect_resumed", vf: spec.dev, socket: spec.socketPath, count: crash.count }, `running VF ${spec.dev} again although ${crash.reason}`);
    vf.within(() => vf.adopt(rec, fds, announced));
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

  /**
   * The part of a hand-back the peer waits for: every ring stopped, every TAP uplink detached,
   * every VF lock dropped. dropAll() does the rest after the peer was told.
   */
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
    const dev = spec.dev;
    const vf = new VfSession(
      spec,
      this.engine,
      model,
      this.log,
      {
        changed: () => this.mirrorVf(dev),
        done: (seq) => this.mirror?.done(dev, seq),
        replied: () => this.mirror?.replied(dev),
        whenMirrored: (fn) => (this.mirror ? this.mirror.whenSent(fn) : fn()),
        announcer: {
          standby: () => this.mirror?.connected ?? false,
          announce: (seq, bytes, fds) => this.mirror?.msg(dev, seq, bytes, fds),
          whenSent: (fn) => (this.mirror ? this.mirror.whenSent(fn) : fn()),
        },
        ...(this.inbox ? { inbox: this.inbox } : {}),
      },
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
      const choices = this.opts.guestChoices;
      const model = new BlkModel(info, spec.queuePairs, disk.readonly, (wb) => {
        this.engine.setBlkWriteback(spec.devId, wb);
        choices?.setWriteback(spec.dev, wb ? 1 : 0);
      });
      // A guest that chose write-through keeps it across our restarts, even both daemons' (an
      // adoption then takes the mirror's copy, which is the same choice).
      const wb = choices?.writeback(spec.dev);
      if (wb !== undefined && wb !== model.writeback) {
        model.writeback = wb;
        this.engine.setBlkWriteback(spec.devId, wb === 1);
        this.log.info({ vf: spec.dev, writeback: wb === 1 }, `blk guest's cache mode restored: ${wb === 1 ? "write-back" : "write-through"}`);
      }
      return model;
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
    if (removed) {
      this.crashes.forget(vf.spec);
      this.opts.guestChoices?.forget(dev);
    }
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
    this.inbox?.close();
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
