// The back-end side of one vhost-user session: a table from message id to handler, as in
// QEMU's libvhost-user. The session owns every fd it receives and tells the engine what to
// run. Front-end input is hostile: a bad message gets a nack (REPLY_ACK) or ends this
// session — never the daemon, never another VF.
import type { Logger } from "pino";
import type { MemRegion, NativeEngine } from "@vhostd/native";
import {
  codec,
  decodePayload,
  encodeMessage,
  MAX_MEM_REGIONS,
  MAX_MEM_SLOTS,
  MESSAGES,
  MsgFlag,
  ProtocolError,
  ProtocolFeature,
  Req,
  requestName,
  VirtioFeatureBit,
  VRING_F_LOG,
  bit,
  featureNames,
  type MemRegionDesc,
} from "@vhostd/proto";
import { native } from "@vhostd/native";
import { closeAll, type VhostMessage } from "./connection.js";
import { MAX_RING_SIZE, Vring } from "./vring.js";
import type { DeviceModel } from "./device_model.js";
import { RejectionLog } from "./rejection_log.js";

/** Rejects one request; with REPLY_ACK the front-end gets a failure ack and the session goes on. */
export class Rejection extends Error {}
/** The front-end broke the protocol: the session ends. */
export class Violation extends Error {}

/** A memory region as the session holds it: the front-end's description and its fd (owned). */
export interface Region extends MemRegionDesc {
  fd: number;
}

type Handler = (msg: VhostMessage) => Buffer | void;

const U64_MAX = (1n << 64n) - 1n;

/** One queue's inflight region: 16-byte header + 16 bytes per descriptor, 64-byte aligned. */
function inflightQueueBytes(queueSize: number): bigint {
  return ((16n + 16n * BigInt(queueSize) + 63n) / 64n) * 64n;
}

function checkInflightGeometry(numQueues: number, queueSize: number, maxQueues: number): void {
  if (numQueues < 1 || numQueues > maxQueues) throw new Violation(`inflight num_queues ${numQueues} is not in 1..${maxQueues}`);
  if (queueSize < 1 || queueSize > MAX_RING_SIZE || (queueSize & (queueSize - 1)) !== 0) throw new Violation(`inflight queue_size ${queueSize} is not a power of two up to ${MAX_RING_SIZE}`);
}
const MAX_LOG_BYTES = 1n << 32n;

/**
 * What handling one message did: "changed" may have changed the session's state; "unchanged"
 * did not (a refused request, or one that only reads); "failed" ended the session.
 */
export type HandleOutcome = "changed" | "unchanged" | "failed";

/** Requests whose handlers only read the session (what their replies carry). */
const READ_ONLY: ReadonlySet<number> = new Set([Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM, Req.GET_MAX_MEM_SLOTS, Req.GET_STATUS, Req.GET_CONFIG]);

export interface SessionIo {
  /** fds go with the reply (SCM_RIGHTS duplicates them; the session keeps its own). */
  reply(request: number, payload: Buffer, fds?: number[]): void;
  /** End the connection (the session resets itself through reset()). */
  fail(reason: string): void;
}

export class VhostSession {
  features = 0n;
  protocolFeatures = 0n;
  status = 0;
  owner = false;
  readonly vrings: Vring[];
  protected regions: Region[] = [];
  /** blk INFLIGHT_SHMFD: the area we created or the front-end handed back (owned fd). */
  protected inflight: { fd: number; size: bigint; offset: bigint; numQueues: number; queueSize: number } | undefined;
  /** The dirty log (SET_LOG_BASE, live migration): owned fd, size and offset as sent. */
  protected dirtyLog: { fd: number; size: bigint; offset: bigint } | undefined;
  private readonly handlers = new Map<number, Handler>();
  /** Refusals are logged through a per-session rate limit (a front-end can send them in a loop). */
  private readonly rejections: RejectionLog;

  constructor(
    readonly devId: number,
    readonly model: DeviceModel,
    protected readonly engine: NativeEngine,
    private readonly log: Logger,
    private readonly io: SessionIo,
    vfName = `device ${devId}`,
  ) {
    this.rejections = new RejectionLog(log, vfName);
    this.vrings = Array.from({ length: model.maxQueues }, (_, i) => new Vring(i));
    const h = (req: Req, fn: Handler) => this.handlers.set(req, fn.bind(this));
    h(Req.GET_FEATURES, this.getFeatures);
    h(Req.SET_FEATURES, this.setFeatures);
    h(Req.GET_PROTOCOL_FEATURES, this.getProtocolFeatures);
    h(Req.SET_PROTOCOL_FEATURES, this.setProtocolFeatures);
    h(Req.SET_OWNER, this.setOwner);
    h(Req.RESET_OWNER, this.resetOwner);
    h(Req.RESET_DEVICE, this.resetOwner);
    h(Req.SET_MEM_TABLE, this.setMemTable);
    h(Req.GET_MAX_MEM_SLOTS, this.getMaxMemSlots);
    h(Req.ADD_MEM_REG, this.addMemReg);
    h(Req.REM_MEM_REG, this.remMemReg);
    h(Req.SET_VRING_NUM, this.setVringNum);
    h(Req.SET_VRING_ADDR, this.setVringAddr);
    h(Req.SET_VRING_BASE, this.setVringBase);
    h(Req.GET_VRING_BASE, this.getVringBase);
    h(Req.SET_VRING_KICK, (m) => this.setVringFd(m, "kickFd"));
    h(Req.SET_VRING_CALL, (m) => this.setVringFd(m, "callFd"));
    h(Req.SET_VRING_ERR, (m) => this.setVringFd(m, "errFd"));
    h(Req.GET_QUEUE_NUM, () => codec.u64.encode(BigInt(this.model.queueNum())));
    h(Req.SET_VRING_ENABLE, this.setVringEnable);
    h(Req.SET_STATUS, this.setStatus);
    h(Req.GET_STATUS, () => codec.status.encode(this.status));
    h(Req.NET_SET_MTU, this.netSetMtu);
    h(Req.SEND_RARP, this.sendRarp);
    h(Req.GET_CONFIG, this.getConfig);
    h(Req.SET_CONFIG, this.setConfig);
    h(Req.SET_LOG_BASE, this.setLogBase);
    h(Req.GET_INFLIGHT_FD, this.getInflightFd);
    h(Req.SET_INFLIGHT_FD, this.setInflightFd);
  }

  /**
   * Dispatches one message; returns normally even when the front-end is at fault. The message's
   * fds are its own until a handler takes one (MessageFds.take); every fd not taken is closed
   * here, whatever the outcome, so no handler's error path can leak one.
   */
  handle(msg: VhostMessage): HandleOutcome {
    const { header } = msg;
    const name = requestName(header.request);
    const spec = MESSAGES.get(header.request);
    const handler = this.handlers.get(header.request);
    const wantsAck = (header.flags & MsgFlag.NEED_REPLY) !== 0 && this.hasProtocol(ProtocolFeature.REPLY_ACK);
    try {
      if (!spec || !handler) throw new Rejection(`unsupported request ${name}`);
      const [minFds, maxFds] = spec.fds;
      if (msg.fds.length < minFds || msg.fds.length > maxFds) throw new Violation(`${name} carried ${msg.fds.length} fds, expected ${minFds}..${maxFds}`);
      if (spec.needs !== undefined && !this.hasProtocol(spec.needs)) throw new Rejection(`${name} without the ${ProtocolFeature[spec.needs]} protocol feature negotiated`);
      // Handlers decode their own payloads; one that takes none checks nothing, so its size
      // (0, or the 8 bytes some front-ends send) is checked here once.
      if (spec.payload === "none") decodePayload("none", msg.payload, name);
      this.log.trace({ request: name, size: header.size, fds: msg.fds.length }, "vhost-user message");
      const value = handler(msg);
      if (spec.reply === "value") this.io.reply(header.request, value ?? Buffer.alloc(0), header.request === Req.GET_INFLIGHT_FD ? this.inflightFds() : []);
      else if (wantsAck) this.io.reply(header.request, codec.u64.encode(0n));
      return READ_ONLY.has(header.request) ? "unchanged" : "changed";
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const fatal = err instanceof Violation || !(err instanceof Rejection || err instanceof ProtocolError);
      if (wantsAck && !fatal && spec?.reply !== "value") {
        this.rejections.rejected(name, reason);
        this.io.reply(header.request, codec.u64.encode(1n));
        return "unchanged";
      }
      this.log.error({ request: name, reason }, "vhost-user protocol violation, closing the session");
      this.io.fail(`${name}: ${reason}`);
      return "failed";
    } finally {
      msg.fds.closeUntaken();
    }
  }

  /** Connection gone: stop every ring, unmap memory, close every fd. The engine device stays. */
  reset(): void {
    for (const vr of this.vrings) {
      if (vr.started) this.engine.stopQueue(this.devId, vr.index);
      vr.reset();
    }
    this.dropMemory();
    this.dropDirtyLog(true);
    this.dropInflight(true);
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.status = 0;
    this.owner = false;
  }

  /** The fd a GET_INFLIGHT_FD reply carries (also when an adopter resends that reply). */
  inflightFds(): number[] {
    return this.inflight ? [this.inflight.fd] : [];
  }

  describeFeatures(): string {
    return featureNames(this.features, this.model.kind).join(",");
  }

  hasProtocol(f: ProtocolFeature): boolean {
    return (this.protocolFeatures & bit(f)) !== 0n;
  }

  get memoryRegions(): readonly MemRegionDesc[] {
    return this.regions;
  }

  /* ------------------------------------------------------------------ features & owner */

  private getFeatures(): Buffer {
    return codec.u64.encode(this.model.offeredFeatures);
  }

  private setFeatures(msg: VhostMessage): void {
    const f = codec.u64.decode(msg.payload);
    const unknown = f & ~this.model.offeredFeatures;
    if (unknown !== 0n) throw new Rejection(`features 0x${unknown.toString(16)} were never offered`);
    const changed = f !== this.features;
    this.features = f;
    this.engine.setFeatures(this.devId, f);
    if (changed) this.log.info({ features: this.describeFeatures() }, "features negotiated");
  }

  private getProtocolFeatures(): Buffer {
    return codec.u64.encode(this.model.offeredProtocolFeatures);
  }

  private setProtocolFeatures(msg: VhostMessage): void {
    const f = codec.u64.decode(msg.payload);
    const unknown = f & ~this.model.offeredProtocolFeatures;
    if (unknown !== 0n) throw new Rejection(`protocol features 0x${unknown.toString(16)} were never offered`);
    this.protocolFeatures = f;
  }

  private setOwner(): void {
    this.owner = true;
  }

  private resetOwner(): void {
    for (const vr of this.vrings) {
      if (vr.started) this.stopRing(vr);
    }
    this.features = 0n;
    this.engine.setFeatures(this.devId, 0n);
    this.log.info("device reset by the front-end");
  }

  /* ------------------------------------------------------------------------- memory */

  private setMemTable(msg: VhostMessage): void {
    const descs = codec.memTable.decode(msg.payload);
    if (msg.fds.length !== descs.length) throw new Violation(`SET_MEM_TABLE has ${descs.length} regions but ${msg.fds.length} fds`);
    const regions = descs.map((d, i) => ({ ...d, fd: msg.fds.peek(i) }));
    validateRegions(regions, MAX_MEM_REGIONS);
    this.replaceMemory(regions, () => regions.forEach((_, i) => msg.fds.take(i)));
  }

  private getMaxMemSlots(): Buffer {
    return codec.u64.encode(BigInt(MAX_MEM_SLOTS));
  }

  private addMemReg(msg: VhostMessage): void {
    const region: Region = { ...codec.memRegion.decode(msg.payload), fd: msg.fds.peek(0) };
    try {
      validateRegions([...this.regions, region], MAX_MEM_SLOTS);
      this.engine.addMemRegion(this.devId, toEngine(region));
    } catch (err) {
      throw err instanceof Violation ? err : new Rejection((err as Error).message);
    }
    this.regions.push({ ...region, fd: msg.fds.take(0) });
    this.log.info({ regions: this.regions.length, guestAddr: hex(region.guestAddr), size: hex(region.size) }, "memory region added");
  }

  private remMemReg(msg: VhostMessage): void {
    // REM_MEM_REG may carry the region's fd (closed by the dispatcher); regions are named by address.
    const r = codec.memRegion.decode(msg.payload);
    const i = this.regions.findIndex((x) => x.guestAddr === r.guestAddr && x.size === r.size && x.userAddr === r.userAddr);
    if (i < 0) throw new Rejection(`no region at guest address ${hex(r.guestAddr)} of size ${hex(r.size)}`);
    this.engine.removeMemRegion(this.devId, toEngine(this.regions[i]));
    closeAll([this.regions[i].fd]);
    this.regions.splice(i, 1);
    this.log.info({ regions: this.regions.length, guestAddr: hex(r.guestAddr) }, "memory region removed");
  }

  /**
   * New table: running rings are stopped, the table swapped, and the rings resumed in place.
   * `takeFds` runs once the engine holds the table: from then on the regions' fds are ours.
   */
  private replaceMemory(regions: Region[], takeFds: () => void): void {
    const running = this.vrings.filter((v) => v.started);
    for (const vr of running) this.stopRing(vr);
    try {
      this.engine.setMemTable(this.devId, regions.map(toEngine));
    } catch (err) {
      throw new Rejection(`memory table refused: ${(err as Error).message}`);
    }
    takeFds();
    closeAll(this.regions.map((r) => r.fd));
    this.regions = regions;
    this.log.info({ regions: regions.length, bytes: hex(regions.reduce((s, r) => s + r.size, 0n)) }, "memory table set");
    for (const vr of running) this.maybeStart(vr);
  }

  private dropMemory(): void {
    if (this.regions.length === 0) return;
    this.engine.setMemTable(this.devId, []);
    closeAll(this.regions.map((r) => r.fd));
    this.regions = [];
  }

  /* -------------------------------------------------------------------------- rings */

  private ring(index: number): Vring {
    const vr = this.vrings[index];
    if (!Number.isInteger(index) || !vr) throw new Violation(`queue index ${index} out of range (device has ${this.vrings.length})`);
    return vr;
  }

  private setVringNum(msg: VhostMessage): void {
    const { index, num } = codec.vringState.decode(msg.payload);
    const vr = this.ring(index);
    if (num < 1 || num > MAX_RING_SIZE || (num & (num - 1)) !== 0) throw new Rejection(`ring ${index} size ${num} is not a power of two up to ${MAX_RING_SIZE}`);
    vr.num = num;
  }

  private setVringAddr(msg: VhostMessage): void {
    const addr = codec.vringAddr.decode(msg.payload);
    const vr = this.ring(addr.index);
    vr.addr = addr;
    // Front-ends re-send addresses on a running ring to toggle dirty logging: apply in place.
    if (vr.started) {
      this.stopRing(vr);
      this.maybeStart(vr);
    }
  }

  private setVringBase(msg: VhostMessage): void {
    const { index, num } = codec.vringState.decode(msg.payload);
    const vr = this.ring(index);
    if (num > 0xffff) throw new Rejection(`ring ${index} base ${num} exceeds 16 bits`);
    vr.base = num;
  }

  /** The stop signal: the engine finishes the ring and reports where it stopped. */
  private getVringBase(msg: VhostMessage): Buffer {
    const { index } = codec.vringState.decode(msg.payload);
    const vr = this.ring(index);
    if (vr.started) this.stopRing(vr);
    vr.kicked = false;
    vr.replaceFd("kickFd", -1);
    return codec.vringState.encode({ index, num: vr.base });
  }

  private setVringFd(msg: VhostMessage, which: "kickFd" | "callFd" | "errFd"): void {
    const { index, noFd } = codec.vringFd.decode(msg.payload);
    if (noFd !== (msg.fds.length === 0)) throw new Violation(`ring ${index}: NOFD flag ${noFd} disagrees with ${msg.fds.length} fds`);
    const vr = this.ring(index);
    vr.replaceFd(which, noFd ? -1 : msg.fds.take(0));
    if (which === "callFd") {
      if (vr.started) this.engine.setQueueCall(this.devId, index, vr.callFd);
      return;
    }
    if (which === "kickFd") {
      vr.kicked = true;
      if (vr.started) this.stopRing(vr); // a new kick fd restarts the ring with it
      this.maybeStart(vr);
    }
  }

  private setVringEnable(msg: VhostMessage): void {
    const { index, num } = codec.vringState.decode(msg.payload);
    const vr = this.ring(index);
    if (num > 1) throw new Rejection(`ring ${index} enable value ${num} is not 0 or 1`);
    vr.enabled = num === 1;
    if (vr.started) this.engine.setQueueEnabled(this.devId, index, this.effectiveEnabled(vr));
    this.log.debug({ queue: index, enabled: vr.enabled }, "ring enable");
  }

  /** Without PROTOCOL_FEATURES a ring is enabled as soon as it starts (vhost-user spec). */
  private effectiveEnabled(vr: Vring): boolean {
    return (this.features & bit(VirtioFeatureBit.VHOST_USER_PROTOCOL_FEATURES)) === 0n || vr.enabled;
  }

  protected maybeStart(vr: Vring): void {
    if (vr.started || !vr.configured || this.regions.length === 0) return;
    const addr = vr.addr!;
    let at: { resumedAt: number; usedInMemory: number };
    try {
      at = this.engine.startQueue(this.devId, vr.index, {
        size: vr.num,
        descAddr: addr.desc,
        availAddr: addr.avail,
        usedAddr: addr.used,
        lastAvailIdx: vr.base,
        kickFd: vr.kickFd,
        callFd: vr.callFd,
        errFd: vr.errFd,
        ...((addr.flags & VRING_F_LOG) !== 0 ? { logAddr: addr.log } : {}),
      });
    } catch (err) {
      throw new Rejection(`ring ${vr.index} cannot start: ${(err as Error).message}`);
    }
    vr.started = true;
    this.engine.setQueueEnabled(this.devId, vr.index, this.effectiveEnabled(vr));
    const logging = (addr.flags & VRING_F_LOG) !== 0;
    const fields = { queue: vr.index, size: vr.num, base: vr.base, usedInMemory: at.usedInMemory, enabled: this.effectiveEnabled(vr), logging };
    // The engine resumes at the used index in guest memory when it differs from the base (we
    // complete in order): worth a warning, a front-end's base and its ring should agree.
    if (at.resumedAt !== vr.base) this.log.warn({ ...fields, resumedAt: at.resumedAt }, "ring started (at the used index in memory, not the base given)");
    else this.log.info(fields, "ring started");
    vr.base = at.resumedAt;
    // A resumed ring (a migration's destination, a reconnect) signals the driver once: an
    // interrupt that was due when the ring stopped elsewhere may never have reached the guest,
    // and with EVENT_IDX nothing new would be signalled until the guest looks by itself. (QEMU
    // may discard this one: it sends the guest's call fd only after the kick; the engine
    // signals again when a running ring's call fd changes.)
    // Only a call: processing here would run inside an HA adoption that holds the engine.
    if (at.resumedAt !== 0) this.engine.signalQueue(this.devId, vr.index);
  }

  protected stopRing(vr: Vring): void {
    vr.base = this.engine.stopQueue(this.devId, vr.index);
    vr.started = false;
    this.log.info({ queue: vr.index, base: vr.base }, "ring stopped");
  }

  /* ------------------------------------------------------------ dirty log (migration) */

  /**
   * SET_LOG_BASE (LOG_SHMFD): the front-end's dirty bitmap, one bit per 4 KiB guest page. The
   * engine marks what it writes while LOG_ALL is negotiated. Always replied (0 = done).
   */
  private setLogBase(msg: VhostMessage): Buffer {
    const fd = msg.fds.peek(0);
    let area: { size: bigint; offset: bigint };
    try {
      area = codec.log.decode(msg.payload);
      this.applyDirtyLog(fd, area.size, area.offset);
    } catch (err) {
      throw err instanceof ProtocolError || err instanceof Violation ? err : new Rejection((err as Error).message);
    }
    if (this.dirtyLog) closeAll([this.dirtyLog.fd]); // the engine already swapped to the new log
    this.dirtyLog = { fd: msg.fds.take(0), size: area.size, offset: area.offset };
    this.log.info({ bytes: hex(area.size), offset: hex(area.offset) }, "dirty log set (migration)");
    return codec.u64.encode(0n);
  }

  /** The same checks for a front-end's SET_LOG_BASE and a mirrored record (both untrusted). */
  protected applyDirtyLog(fd: number, size: bigint, offset: bigint): void {
    // One bit per 4 KiB page: 4 GiB of log covers 128 TiB of guest memory.
    if (size === 0n || size > MAX_LOG_BYTES) throw new Rejection(`log of ${size} bytes is not in 1..${MAX_LOG_BYTES}`);
    this.engine.setDirtyLog(this.devId, fd, size, offset);
  }

  /** Unmaps the engine's log and forgets the fd (closing it unless another process owns it now). */
  protected dropDirtyLog(close: boolean): void {
    if (!this.dirtyLog) return;
    const { fd } = this.dirtyLog;
    this.dirtyLog = undefined;
    this.engine.setDirtyLog(this.devId, -1);
    if (close) closeAll([fd]);
  }

  /* --------------------------------------------------------- inflight tracking (blk) */

  /**
   * GET_INFLIGHT_FD: we create the area (a memfd the front-end keeps across our restarts and
   * hands back with SET_INFLIGHT_FD) for num_queues rings of queue_size and send its fd.
   */
  private getInflightFd(msg: VhostMessage): Buffer {
    if (this.model.kind !== "blk" || !this.hasProtocol(ProtocolFeature.INFLIGHT_SHMFD)) throw new Violation("GET_INFLIGHT_FD without INFLIGHT_SHMFD on a blk device");
    const req = codec.inflight.decode(msg.payload, "GET_INFLIGHT_FD");
    checkInflightGeometry(req.numQueues, req.queueSize, this.model.maxQueues); // before sizing the memfd
    const size = BigInt(req.numQueues) * inflightQueueBytes(req.queueSize);
    const fd = native.memfdCreate("vhostd-inflight", Number(size));
    const area = { fd, size, offset: 0n, numQueues: req.numQueues, queueSize: req.queueSize };
    try {
      this.applyInflight(area, true);
    } catch (err) {
      closeAll([fd]);
      throw new Violation(`GET_INFLIGHT_FD: ${(err as Error).message}`);
    }
    this.dropInflight(true, false);
    this.inflight = area;
    this.log.info({ queues: req.numQueues, queueSize: req.queueSize, bytes: Number(size) }, "inflight area created");
    return codec.inflight.encode({ mmapSize: size, mmapOffset: 0n, numQueues: req.numQueues, queueSize: req.queueSize });
  }

  /** SET_INFLIGHT_FD: the front-end hands an area back (after our restart): checked before use. */
  private setInflightFd(msg: VhostMessage): void {
    const fd = msg.fds.peek(0);
    try {
      if (this.model.kind !== "blk" || !this.hasProtocol(ProtocolFeature.INFLIGHT_SHMFD)) throw new Violation("SET_INFLIGHT_FD without INFLIGHT_SHMFD on a blk device");
      const a = codec.inflight.decode(msg.payload, "SET_INFLIGHT_FD");
      const area = { fd, size: a.mmapSize, offset: a.mmapOffset, numQueues: a.numQueues, queueSize: a.queueSize };
      const pending = this.applyInflight(area, false);
      this.dropInflight(true, false);
      this.inflight = { ...area, fd: msg.fds.take(0) };
      const total = pending.reduce((s, n) => s + n, 0);
      this.log.info({ queues: a.numQueues, queueSize: a.queueSize, inflight: pending }, total > 0 ? `inflight area handed back: ${total} request(s) the previous back-end never completed are taken again in avail order` : "inflight area handed back: nothing was in flight");
    } catch (err) {
      throw err instanceof Violation || err instanceof ProtocolError ? err : new Violation(`SET_INFLIGHT_FD: ${(err as Error).message}`);
    }
  }

  /** The same checks for GET/SET_INFLIGHT_FD and a mirrored record (all untrusted). */
  protected applyInflight(a: { fd: number; size: bigint; offset: bigint; numQueues: number; queueSize: number }, fresh: boolean): number[] {
    if (this.model.kind !== "blk") throw new Violation(`inflight area on a ${this.model.kind} device`);
    checkInflightGeometry(a.numQueues, a.queueSize, this.model.maxQueues);
    return this.engine.setBlkInflight(this.devId, { fd: a.fd, size: a.size, offset: a.offset, numQueues: a.numQueues, queueSize: a.queueSize, fresh });
  }

  /** Forgets the area (closing its fd unless another process owns it now); `unmap` the engine's too. */
  protected dropInflight(close: boolean, unmap = true): void {
    if (!this.inflight) return;
    const { fd } = this.inflight;
    this.inflight = undefined;
    if (unmap) this.engine.setBlkInflight(this.devId, { fd: -1 });
    if (close) closeAll([fd]);
  }

  /* ----------------------------------------------------------------- status & device */

  private setStatus(msg: VhostMessage): void {
    const status = codec.status.decode(msg.payload);
    if (status !== this.status) this.log.info({ status }, "device status");
    this.status = status;
  }

  private netSetMtu(msg: VhostMessage): void {
    const mtu = Number(codec.u64.decode(msg.payload));
    this.model.setMtu(mtu);
  }

  private sendRarp(msg: VhostMessage): void {
    const mac = codec.rarp.decode(msg.payload);
    this.log.info({ mac }, "front-end asked for a RARP announcement");
    this.model.announce(mac);
  }

  private getConfig(msg: VhostMessage): Buffer {
    const req = codec.config.decode(msg.payload);
    const space = this.model.config();
    if (req.offset + req.size > space.length) throw new Rejection(`config read ${req.offset}+${req.size} beyond ${space.length} bytes`);
    return codec.config.encode({ ...req, data: space.subarray(req.offset, req.offset + req.size) });
  }

  private setConfig(msg: VhostMessage): void {
    const req = codec.config.decode(msg.payload);
    this.model.writeConfig(req.offset, req.data);
  }
}

/** Region sanity before anything is mapped: sizes, 64-bit overflow, overlaps, count. */
export function validateRegions(regions: readonly MemRegionDesc[], max: number): void {
  if (regions.length > max) throw new Rejection(`${regions.length} memory regions exceed the limit of ${max}`);
  for (const [i, r] of regions.entries()) {
    if (r.size === 0n) throw new Rejection(`region ${i} has size 0`);
    for (const [what, start] of [["guest", r.guestAddr], ["user", r.userAddr], ["mmap offset", r.mmapOffset]] as const) {
      if (start + r.size - 1n > U64_MAX) throw new Rejection(`region ${i} ${what} range ${hex(start)}+${hex(r.size)} overflows 64 bits`);
    }
  }
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const a = regions[i];
      const b = regions[j];
      if (overlaps(a.guestAddr, a.size, b.guestAddr, b.size)) throw new Rejection(`regions ${i} and ${j} overlap in guest memory`);
      if (overlaps(a.userAddr, a.size, b.userAddr, b.size)) throw new Rejection(`regions ${i} and ${j} overlap in front-end address space`);
    }
  }
}

function overlaps(a: bigint, alen: bigint, b: bigint, blen: bigint): boolean {
  return a < b + blen && b < a + alen;
}

export function toEngine(r: Region): MemRegion {
  return { fd: r.fd, guestAddr: r.guestAddr, size: r.size, userAddr: r.userAddr, mmapOffset: r.mmapOffset };
}

export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}

/** A reply for a request the session sends itself (not in answer to a message). */
export function encodeReply(request: number, payload: Buffer): Buffer {
  return encodeMessage(request, payload, MsgFlag.VERSION | MsgFlag.REPLY);
}
