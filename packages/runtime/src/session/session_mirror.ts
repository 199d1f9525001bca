// A vhost-user session the HA mirror can copy: exported as a record (with its fds) after every
// change, and adopted from such a record by the peer daemon after the one running it died or
// handed it over. The message handlers are VhostSession's (session.ts); this adds the copy.
import { native } from "@vhostd/native";
import { BLK_CONFIG_OFFSETS, MAX_MEM_SLOTS, type MirrorSession } from "@vhostd/proto";
import { MAX_RING_SIZE, type Vring } from "./vring.js";
import { VhostSession, Violation, hex, toEngine, validateRegions, type Region } from "./session.js";

export class MirroredSession extends VhostSession {
  /** Adopted rings that ran in the previous runner, to start (resumeAdopted). */
  private toResume: Vring[] = [];

  /**
   * The session as the HA mirror carries it. Its fds are appended to `fds` (the kernel
   * duplicates them when they are sent; the session keeps its own) and named by index.
   */
  exportMirror(fds: number[]): MirrorSession {
    const at = (fd: number) => (fd < 0 ? -1 : fds.push(fd) - 1);
    return {
      features: hex(this.features),
      protocolFeatures: hex(this.protocolFeatures),
      status: this.status,
      owner: this.owner,
      regions: this.regions.map((r) => ({ guestAddr: hex(r.guestAddr), size: hex(r.size), userAddr: hex(r.userAddr), mmapOffset: hex(r.mmapOffset), fd: at(r.fd) })),
      vrings: this.vrings.map((v) => ({
        index: v.index,
        num: v.num,
        addr: v.addr ? { flags: v.addr.flags, desc: hex(v.addr.desc), used: hex(v.addr.used), avail: hex(v.addr.avail), log: hex(v.addr.log) } : null,
        base: v.base,
        kick: at(v.kickFd),
        call: at(v.callFd),
        err: at(v.errFd),
        kicked: v.kicked,
        enabled: v.enabled,
        started: v.started,
      })),
      ...(this.inflight ? { inflight: { fd: at(this.inflight.fd), size: hex(this.inflight.size), offset: hex(this.inflight.offset), numQueues: this.inflight.numQueues, queueSize: this.inflight.queueSize } } : {}),
      ...(this.dirtyLog ? { log: { fd: at(this.dirtyLog.fd), size: hex(this.dirtyLog.size), offset: hex(this.dirtyLog.offset) } } : {}),
      ...(this.model.writeback !== undefined ? { writeback: this.model.writeback } : {}),
    };
  }

  /**
   * Adoption after the peer daemon that ran this session died or handed it over: the state is
   * rebuilt in place, the fds (`fds[i]` as the record names them) become the session's, and
   * every ring that ran is resumed — the engine re-reads its indices from guest memory, so
   * nothing the dead process completed is done twice. The record is untrusted: it passes the
   * same checks as a front-end's own messages. Throws (Violation) if it does not.
   */
  adoptMirror(m: MirrorSession, fds: readonly number[], startRings = true): void {
    const fd = (i: number) => (i < 0 ? -1 : fds[i]!);
    const features = BigInt(m.features);
    const protocolFeatures = BigInt(m.protocolFeatures);
    if ((features & ~this.model.offeredFeatures) !== 0n) throw new Violation(`mirrored features ${m.features} were never offered`);
    if ((protocolFeatures & ~this.model.offeredProtocolFeatures) !== 0n) throw new Violation(`mirrored protocol features ${m.protocolFeatures} were never offered`);
    if (m.vrings.length > this.vrings.length) throw new Violation(`mirrored ${m.vrings.length} rings; the device has ${this.vrings.length}`);
    const regions: Region[] = m.regions.map((r) => ({ guestAddr: BigInt(r.guestAddr), size: BigInt(r.size), userAddr: BigInt(r.userAddr), mmapOffset: BigInt(r.mmapOffset), fd: fd(r.fd) }));
    // Own every fd first, so whatever fails below, reset() releases them all.
    this.regions = regions;
    for (const mv of m.vrings) {
      const vr = this.vrings[mv.index]!;
      vr.kickFd = fd(mv.kick);
      vr.callFd = fd(mv.call);
      vr.errFd = fd(mv.err);
    }
    if (m.log) this.dirtyLog = { fd: fd(m.log.fd), size: BigInt(m.log.size), offset: BigInt(m.log.offset) };
    if (m.inflight) this.inflight = { fd: fd(m.inflight.fd), size: BigInt(m.inflight.size), offset: BigInt(m.inflight.offset), numQueues: m.inflight.numQueues, queueSize: m.inflight.queueSize };
    validateRegions(regions, MAX_MEM_SLOTS);
    this.features = features;
    this.protocolFeatures = protocolFeatures;
    this.status = m.status;
    this.owner = m.owner;
    this.engine.setFeatures(this.devId, features);
    if (regions.length > 0) this.engine.setMemTable(this.devId, regions.map(toEngine));
    if (this.dirtyLog) this.applyDirtyLog(this.dirtyLog.fd, this.dirtyLog.size, this.dirtyLog.offset);
    if (this.inflight) this.applyInflight(this.inflight, false);
    if (m.writeback !== undefined) {
      // The guest's write-through choice must hold on whoever runs the disk next, before any
      // ring resumes (a write it meant to be durable must not be cached).
      if (this.model.kind !== "blk") throw new Violation(`mirrored writeback on a ${this.model.kind} device`);
      this.model.writeConfig(BLK_CONFIG_OFFSETS.writeback, Buffer.of(m.writeback));
    }
    for (const mv of m.vrings) {
      const vr = this.vrings[mv.index]!;
      if (mv.num > MAX_RING_SIZE || (mv.num & (mv.num - 1)) !== 0) throw new Violation(`mirrored ring ${mv.index} size ${mv.num}`);
      vr.num = mv.num;
      vr.addr = mv.addr ? { index: mv.index, flags: mv.addr.flags, desc: BigInt(mv.addr.desc), used: BigInt(mv.addr.used), avail: BigInt(mv.addr.avail), log: BigInt(mv.addr.log) } : null;
      vr.base = mv.base;
      vr.kicked = mv.kicked;
      vr.enabled = mv.enabled;
      if (mv.started) this.toResume.push(vr);
    }
    if (startRings) {
      this.resumeAdopted("rx");
      this.resumeAdopted("tx");
    }
  }

  /**
   * Starts the rings an adoption left stopped. A takeover adopts every VF first and starts
   * rings only then, so no frame is forwarded to a port that is not there yet.
   */
  resumeAdopted(which: "rx" | "tx"): void {
    // Receive rings (even indices) first, everywhere: a frame sent before its destination's
    // receive ring runs would be dropped.
    const rings = this.toResume.filter((v) => (v.index % 2 === 0) === (which === "rx"));
    this.toResume = this.toResume.filter((v) => !rings.includes(v));
    for (const vr of rings) this.maybeStart(vr);
    // After any restart: kick every queue and signal every call fd once, so neither side waits
    // for a notification the dead process swallowed.
    for (const vr of rings) {
      if (!vr.started) continue;
      if (vr.kickFd >= 0) native.eventFdWrite(vr.kickFd);
      if (vr.callFd >= 0) native.eventFdWrite(vr.callFd);
    }
  }

  /** Stops every running ring (their progress is in guest memory) before a hand-over. */
  stopRings(): void {
    for (const vr of this.vrings) if (vr.started) this.stopRing(vr);
  }

  /** Forgets every fd without closing it (they now belong to a mirror copy), then resets. */
  disown(): void {
    for (const vr of this.vrings) {
      if (vr.started) this.engine.stopQueue(this.devId, vr.index);
      vr.started = false;
      vr.kickFd = vr.callFd = vr.errFd = -1;
      vr.reset();
    }
    if (this.regions.length > 0) this.engine.setMemTable(this.devId, []);
    this.regions = [];
    this.dropDirtyLog(false);
    this.dropInflight(false);
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.status = 0;
    this.owner = false;
  }
}
