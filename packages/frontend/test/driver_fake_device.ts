// A very small device side of the split rings, in JS, over DriverDevice.readMem/writeMem.
// Slow (a few syscalls-free copies per frame) but plenty for a few hundred test frames.
import type { NativeDriverDevice } from "../src/native.js";

export class FakeDeviceQueue {
  lastAvail = 0;
  usedIdx = 0;
  constructor(
    readonly dev: NativeDriverDevice,
    readonly queue: number,
    readonly size: number,
  ) {}

  get ring() {
    return this.dev.ring(this.queue);
  }
  u16(addr: bigint): number {
    return this.dev.readMem(addr, 2).readUInt16LE(0);
  }
  setU16(addr: bigint, v: number): void {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v & 0xffff, 0);
    this.dev.writeMem(addr, b);
  }
  availIdx(): number {
    return this.u16(this.ring.avail + 2n);
  }
  /** avail entries not yet taken by this fake device */
  pending(): number {
    return (this.availIdx() - this.lastAvail) & 0xffff;
  }
  /** Takes the next avail head: its id and the one descriptor's addr/len/flags. */
  take(): { id: number; addr: bigint; len: number; flags: number } {
    const r = this.ring;
    const id = this.u16(r.avail + 4n + BigInt(2 * (this.lastAvail % this.size)));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    const d = this.dev.readMem(r.desc + BigInt(16 * id), 16);
    return { id, addr: d.readBigUInt64LE(0), len: d.readUInt32LE(8), flags: d.readUInt16LE(12) };
  }
  /** Writes one used element; publish() makes it visible. */
  use(id: number, len: number, publish = true): void {
    const r = this.ring;
    const e = Buffer.alloc(8);
    e.writeUInt32LE(id, 0);
    e.writeUInt32LE(len, 4);
    this.dev.writeMem(r.used + 4n + BigInt(8 * (this.usedIdx % this.size)), e);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    if (publish) this.publish();
  }
  publish(): void {
    this.setU16(this.ring.used + 2n, this.usedIdx);
  }
}

export async function waitFor(cond: () => boolean, timeoutMs = 3000, what = "condition"): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
