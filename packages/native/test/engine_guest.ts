// Test harness for the engine: a memfd "guest" laid out from TS (through testSupport.mapShared) with a
// driver-side split ring per queue, so tests can craft normal and hostile rings.
import { native, type MemRegion, type NativeEngine, type PortSecurity, type QueueConfig } from "../src/native.js";
import { testSupport } from "../src/testing.js";

export const GUEST_BASE = 0x100000000n;
export const F = {
  CSUM: 1n << 0n,
  GUEST_CSUM: 1n << 1n,
  GUEST_TSO4: 1n << 7n,
  GUEST_TSO6: 1n << 8n,
  MRG_RXBUF: 1n << 15n,
  INDIRECT: 1n << 28n,
  EVENT_IDX: 1n << 29n,
  PROTOCOL_FEATURES: 1n << 30n,
  VERSION_1: 1n << 32n,
};
export const DESC_NEXT = 1;
export const DESC_WRITE = 2;
export const DESC_INDIRECT = 4;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(2);
  }
  return cond();
}

export class Guest {
  readonly fd: number;
  readonly buf: Buffer;
  private brk = 0x1000;
  constructor(readonly size = 8 << 20) {
    this.fd = testSupport.memfd("engine-test-guest", size);
    this.buf = Buffer.from(testSupport.mapShared(this.fd, size));
  }
  alloc(len: number, align = 64): number {
    this.brk = Math.ceil(this.brk / align) * align;
    const off = this.brk;
    this.brk += len;
    if (this.brk > this.size) throw new Error("guest memory exhausted");
    return off;
  }
  addr(off: number): bigint {
    return GUEST_BASE + BigInt(off);
  }
  region(): MemRegion {
    return { fd: this.fd, guestAddr: GUEST_BASE, size: BigInt(this.size), userAddr: GUEST_BASE, mmapOffset: 0n };
  }
  close(): void {
    testSupport.closeFd(this.fd);
  }
}

export interface Seg {
  addr: bigint;
  len: number;
  write?: boolean;
}

/** Driver side of one split ring. */
export class DrvRing {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  readonly kick: number;
  readonly call: number;
  readonly err: number;
  availIdx = 0;
  lastUsed = 0;
  private nextDesc = 0;
  constructor(readonly g: Guest, readonly size = 256, withKick = true) {
    this.desc = g.alloc(16 * size, 4096);
    this.avail = g.alloc(6 + 2 * size, 64);
    this.used = g.alloc(6 + 8 * size, 4096);
    this.kick = withKick ? testSupport.eventFd() : -1;
    this.call = testSupport.eventFd();
    this.err = testSupport.eventFd();
  }
  cfg(lastAvailIdx = 0): QueueConfig {
    return {
      size: this.size,
      descAddr: this.g.addr(this.desc),
      availAddr: this.g.addr(this.avail),
      usedAddr: this.g.addr(this.used),
      lastAvailIdx,
      kickFd: this.kick,
      callFd: this.call,
      errFd: this.err,
    };
  }
  writeDesc(i: number, addr: bigint, len: number, flags: number, next: number, table = this.desc): void {
    const o = table + 16 * i;
    this.g.buf.writeBigUInt64LE(addr, o);
    this.g.buf.writeUInt32LE(len, o + 8);
    this.g.buf.writeUInt16LE(flags, o + 12);
    this.g.buf.writeUInt16LE(next, o + 14);
  }
  /** Writes a chain into free descriptors (round robin) and returns its head. */
  chain(segs: Seg[]): number {
    const idx = segs.map(() => this.nextDesc++ % this.size);
    segs.forEach((s, k) => {
      const last = k === segs.length - 1;
      this.writeDesc(idx[k], s.addr, s.len, (s.write ? DESC_WRITE : 0) | (last ? 0 : DESC_NEXT), last ? 0 : idx[k + 1]);
    });
    return idx[0];
  }
  /** Publishes heads in the avail ring (idx bumped once, release order is fine on x86). */
  publish(...heads: number[]): void {
    for (const h of heads) {
      this.g.buf.writeUInt16LE(h, this.avail + 4 + 2 * (this.availIdx % this.size));
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.g.buf.writeUInt16LE(this.availIdx, this.avail + 2);
  }
  setAvailIdxRaw(v: number): void {
    this.g.buf.writeUInt16LE(v & 0xffff, this.avail + 2);
  }
  doKick(): void {
    if (this.kick >= 0) testSupport.eventFdWrite(this.kick);
  }
  usedIdx(): number {
    return this.g.buf.readUInt16LE(this.used + 2);
  }
  usedFlags(): number {
    return this.g.buf.readUInt16LE(this.used);
  }
  availEvent(): number {
    return this.g.buf.readUInt16LE(this.used + 4 + 8 * this.size);
  }
  setUsedEvent(v: number): void {
    this.g.buf.writeUInt16LE(v & 0xffff, this.avail + 4 + 2 * this.size);
  }
  setAvailFlags(v: number): void {
    this.g.buf.writeUInt16LE(v, this.avail);
  }
  /** New used elements since the last call. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const end = this.usedIdx();
    while (this.lastUsed !== end) {
      const o = this.used + 4 + 8 * (this.lastUsed % this.size);
      out.push({ id: this.g.buf.readUInt32LE(o), len: this.g.buf.readUInt32LE(o + 4) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }
  closeFds(): void {
    for (const fd of [this.kick, this.call, this.err]) if (fd >= 0) testSupport.closeFd(fd);
  }
}

export function mac(s: string): Buffer {
  return Buffer.from(s.split(":").map((x) => parseInt(x, 16)));
}

export function frame(dst: string, src: string, size = 64, fill = 0xab, ethertype = 0x0800): Buffer {
  const f = Buffer.alloc(size, fill);
  mac(dst).copy(f, 0);
  mac(src).copy(f, 6);
  f.writeUInt16BE(ethertype, 12);
  return f;
}

export interface RxFrame {
  hdr: Buffer;
  frame: Buffer;
  numBuffers: number;
}

/** One virtio-net device as a guest driver sees it: pair 0 (queue 0 RX, queue 1 TX). */
export class VNet {
  readonly g = new Guest();
  readonly rx: DrvRing;
  readonly tx: DrvRing;
  readonly hdrLen: number;
  private rxBufs = new Map<number, { off: number; len: number }>();
  constructor(
    readonly eng: NativeEngine,
    readonly devId: number,
    readonly macAddr: string,
    readonly features: bigint = F.VERSION_1,
    opts: { switchId?: number; ringSize?: number; kick?: boolean; start?: boolean; portSecurity?: PortSecurity } = {},
  ) {
    this.hdrLen = features & (F.VERSION_1 | F.MRG_RXBUF) ? 12 : 10;
    this.rx = new DrvRing(this.g, opts.ringSize ?? 256, opts.kick ?? true);
    this.tx = new DrvRing(this.g, opts.ringSize ?? 256, opts.kick ?? true);
    eng.addNetDevice(devId, { switchId: opts.switchId ?? 1, mac: macAddr, mtu: 1500, maxQueuePairs: 1, ...(opts.portSecurity ? { portSecurity: opts.portSecurity } : {}) });
    eng.setFeatures(devId, features);
    eng.setMemTable(devId, [this.g.region()]);
    if (opts.start ?? true) this.start();
  }
  start(): void {
    this.eng.startQueue(this.devId, 0, this.rx.cfg());
    this.eng.startQueue(this.devId, 1, this.tx.cfg());
  }
  /** Sends one frame (header + frame in one read-only descriptor unless split). */
  send(f: Buffer, hdr?: Buffer, split = false): number {
    const h = hdr ?? Buffer.alloc(this.hdrLen);
    const off = this.g.alloc(h.length + f.length);
    h.copy(this.g.buf, off);
    f.copy(this.g.buf, off + h.length);
    const segs: Seg[] = split
      ? [{ addr: this.g.addr(off), len: h.length }, { addr: this.g.addr(off + h.length), len: f.length }]
      : [{ addr: this.g.addr(off), len: h.length + f.length }];
    const head = this.tx.chain(segs);
    this.tx.publish(head);
    this.tx.doKick();
    return head;
  }
  /** Posts n receive buffers of len bytes each. */
  postRx(n: number, len = 2048): void {
    const heads: number[] = [];
    for (let i = 0; i < n; i++) {
      const off = this.g.alloc(len);
      const head = this.rx.chain([{ addr: this.g.addr(off), len, write: true }]);
      this.rxBufs.set(head, { off, len });
      heads.push(head);
    }
    this.rx.publish(...heads);
  }
  /** Receives what the device returned (joins MRG_RXBUF buffers by num_buffers). */
  recv(): RxFrame[] {
    const used = this.rx.takeUsed();
    const out: RxFrame[] = [];
    for (let i = 0; i < used.length; ) {
      const b = this.rxBufs.get(used[i].id)!;
      const first = this.g.buf.subarray(b.off, b.off + used[i].len);
      const nb = this.hdrLen === 12 ? first.readUInt16LE(10) : 1;
      const count = this.features & F.MRG_RXBUF ? nb : 1;
      const parts = [first];
      for (let k = 1; k < count; k++) {
        const u = used[i + k];
        const bb = this.rxBufs.get(u.id)!;
        parts.push(this.g.buf.subarray(bb.off, bb.off + u.len));
      }
      const all = Buffer.concat(parts);
      out.push({ hdr: Buffer.from(all.subarray(0, this.hdrLen)), frame: Buffer.from(all.subarray(this.hdrLen)), numBuffers: nb });
      i += count;
    }
    return out;
  }
  close(): void {
    this.rx.closeFds();
    this.tx.closeFds();
    this.g.close();
  }
}

export function counter(eng: NativeEngine, devId: number, queue: number, name: string): bigint {
  const field = native.COUNTER_NAMES.indexOf(name);
  return eng.counters[(devId * eng.maxQueues + queue) * native.COUNTERS_PER_QUEUE + field];
}
