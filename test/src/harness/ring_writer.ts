// Crafts descriptor chains on a split ring a driver has set up but does not run itself, and
// publishes them as a hostile front-end would: descriptors, avail entry, avail index, kick.
import { native } from "@vhostd/native";
import type { DriverRing } from "@vhostd/frontend";
import { DriverMemory } from "./hostile_world.js";

export { VRING_DESC_F_INDIRECT as F_INDIRECT, VRING_DESC_F_NEXT as F_NEXT, VRING_DESC_F_WRITE as F_WRITE } from "@vhostd/proto";

export interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

export function descBytes(...ds: Desc[]): Buffer {
  const b = Buffer.alloc(16 * ds.length);
  ds.forEach((d, i) => {
    b.writeBigUInt64LE(d.addr & ((1n << 64n) - 1n), 16 * i);
    b.writeUInt32LE(d.len >>> 0, 16 * i + 8);
    b.writeUInt16LE(d.flags, 16 * i + 12);
    b.writeUInt16LE(d.next & 0xffff, 16 * i + 14);
  });
  return b;
}

export class RingWriter {
  private availIdx = 0;
  readonly mem: DriverMemory;

  constructor(
    dev: { memFd: number; memAddr: bigint; memSize: number },
    readonly ring: DriverRing,
    readonly size: number,
  ) {
    this.mem = new DriverMemory(dev);
  }

  writeDesc(i: number, ...ds: Desc[]): void {
    this.mem.write(this.ring.desc + BigInt(16 * i), descBytes(...ds));
  }

  /** Puts `head` on the avail ring, moves the index by `bump` (1 normally) and kicks. */
  publish(head: number, bump = 1): void {
    const slot = Buffer.alloc(2);
    slot.writeUInt16LE(head & 0xffff);
    this.mem.write(this.ring.avail + 4n + BigInt(2 * (this.availIdx % this.size)), slot);
    this.availIdx = (this.availIdx + bump) & 0xffff;
    const idx = Buffer.alloc(2);
    idx.writeUInt16LE(this.availIdx);
    this.mem.write(this.ring.avail + 2n, idx);
    native.eventFdWrite(this.ring.kickFd);
  }

  get published(): number {
    return this.availIdx;
  }

  usedIdx(): number {
    return this.mem.read(this.ring.used + 2n, 2).readUInt16LE(0);
  }

  /** The used element at position `pos` (mod ring size). */
  used(pos: number): { id: number; len: number } {
    const b = this.mem.read(this.ring.used + 4n + BigInt(8 * (pos % this.size)), 8);
    return { id: b.readUInt32LE(0), len: b.readUInt32LE(4) };
  }
}
