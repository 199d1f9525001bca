// The blk load generator (native BlkDriver) against a device played in JS over its memfd:
// the request chains it posts, status and latency accounting, argument checking, and a
// misbehaving device (a used id not in flight, an impossible used index) counted, not fatal.
import test from "ava";
import { frontendAddon, type NativeBlkDriver } from "../src/native.js";
import { testSupport } from "@vhostd/native/testing";
import { waitFor } from "./driver_fake_device.js";

const F_NEXT = 1;
const F_WRITE = 2;

/** The device side of the one request queue, on a shared mapping of the driver's memory. */
class FakeBlkDevice {
  readonly mem: Buffer;
  private lastAvail = 0;
  private usedIdx = 0;
  private readonly base: bigint;

  constructor(
    readonly d: NativeBlkDriver,
    readonly size: number,
  ) {
    this.mem = Buffer.from(testSupport.mapShared(d.memFd, d.memSize));
    this.base = d.memAddr;
  }
  off(addr: bigint): number {
    return Number(addr - this.base);
  }
  get ring() {
    return this.d.ring(0);
  }
  pending(): number {
    return (this.mem.readUInt16LE(this.off(this.ring.avail) + 2) - this.lastAvail) & 0xffff;
  }
  /** The next request: its head and the three descriptors, decoded. */
  take() {
    const r = this.ring;
    const head = this.mem.readUInt16LE(this.off(r.avail) + 4 + 2 * (this.lastAvail % this.size));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    const desc = (i: number) => {
      const o = this.off(r.desc) + 16 * i;
      return { addr: this.mem.readBigUInt64LE(o), len: this.mem.readUInt32LE(o + 8), flags: this.mem.readUInt16LE(o + 12), next: this.mem.readUInt16LE(o + 14) };
    };
    const h = desc(head);
    const data = desc(h.next);
    const status = desc(data.next);
    const hdr = this.off(h.addr);
    return { head, h, data, status, type: this.mem.readUInt32LE(hdr), sector: Number(this.mem.readBigUInt64LE(hdr + 8)) };
  }
  /** Completes one request (or lies about an id) and publishes it. */
  complete(id: number, len: number): void {
    const u = this.off(this.ring.used);
    this.mem.writeUInt32LE(id, u + 4 + 8 * (this.usedIdx % this.size));
    this.mem.writeUInt32LE(len, u + 8 + 8 * (this.usedIdx % this.size));
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.mem.writeUInt16LE(this.usedIdx, u + 2);
  }
  setUsedIdx(v: number): void {
    this.mem.writeUInt16LE(v & 0xffff, this.off(this.ring.used) + 2);
  }
}

function withBlk<T>(fn: (d: NativeBlkDriver) => Promise<T>): Promise<T> {
  const d = new frontendAddon.BlkDriver({ queueSize: 16 });
  return fn(d).finally(() => d.close());
}

test("BlkDriver options and load parameters are checked", (t) => {
  t.throws(() => new frontendAddon.BlkDriver({ queueSize: 24 }), { instanceOf: RangeError, message: /power of two/ });
  t.throws(() => new frontendAddon.BlkDriver({ queueSize: 2 }), { instanceOf: RangeError });
  t.throws(() => new frontendAddon.BlkDriver({ queueSize: 16, memSize: 4096 }), { instanceOf: RangeError, message: /at least/ });
  const d = new frontendAddon.BlkDriver({ queueSize: 128 });
  try {
    t.is(d.maxQueueDepth, 42);
    t.throws(() => d.ring(1), { instanceOf: RangeError });
    const ok = { queueDepth: 1, writePercent: 0, sectors: 8 };
    t.throws(() => d.startLoad({ ...ok, queueDepth: 43 }), { instanceOf: RangeError });
    t.throws(() => d.startLoad({ ...ok, queueDepth: 1.5 }), { instanceOf: RangeError });
    t.throws(() => d.startLoad({ ...ok, writePercent: -1 }), { instanceOf: RangeError });
    t.throws(() => d.startLoad({ ...ok, sectors: 4 }), { instanceOf: RangeError });
    t.throws(() => d.startLoad({ ...ok, sectors: "8" as never }), { instanceOf: TypeError });
    t.throws(() => d.startLoad(undefined as never), { instanceOf: TypeError });
    t.throws(() => d.request("write", 0), { instanceOf: TypeError });
    t.throws(() => d.request("read", -8), { instanceOf: RangeError });
  } finally {
    d.close();
  }
  t.throws(() => d.stats(), { message: /closed/ });
});

test("BlkDriver keeps queueDepth chains in flight and counts status, latency and device misbehaviour", (t) =>
  withBlk(async (d) => {
    d.resetRings(0n);
    const dev = new FakeBlkDevice(d, 16);
    d.startLoad({ queueDepth: 3, writePercent: 100, sectors: 64, seed: 3 });
    await waitFor(() => dev.pending() === 3, 3000, "3 requests posted");
    const reqs = [dev.take(), dev.take(), dev.take()];
    for (const r of reqs) {
      t.is(r.type, 1, "writes");
      t.true(r.sector % 8 === 0 && r.sector < 64, `sector ${r.sector}: 4 KiB aligned, inside the disk`);
      t.like(r.h, { len: 16, flags: F_NEXT });
      t.like(r.data, { len: 4096, flags: F_NEXT }, "a write's data is device-readable");
      t.like(r.status, { len: 1, flags: F_WRITE });
      t.is(dev.mem[dev.off(r.status.addr)], 0xff, "status preset to a value the device must overwrite");
    }
    t.is(new Set(reqs.map((r) => r.head)).size, 3);
    // OK, IOERR, and one the device never writes a status for (counted as failed too).
    dev.mem[dev.off(reqs[0]!.status.addr)] = 0;
    dev.mem[dev.off(reqs[1]!.status.addr)] = 1;
    for (const r of reqs) dev.complete(r.head, 1);
    await waitFor(() => d.stats().completed === 3, 3000, "3 completions");
    let s = d.stats();
    t.like(s, { completed: 3, writes: 3, reads: 0, errors: 2, ringErrors: 0, broken: false, latencyCount: 3 });
    // It refilled to queueDepth; a used id that is not in flight is counted, nothing freed.
    await waitFor(() => dev.pending() === 3, 3000, "refilled");
    dev.complete(15, 0);
    await waitFor(() => d.stats().ringErrors === 1, 3000, "the bad id counted");
    t.is(d.stats().inFlight, 3);
    // An impossible used index: the ring is broken, the load stops, the process lives.
    dev.setUsedIdx(1000);
    await waitFor(() => d.stats().broken, 3000, "broken");
    s = d.stats();
    t.like(s, { running: false, broken: true, ringErrors: 2 });
    t.throws(() => d.startLoad({ queueDepth: 1, writePercent: 0, sectors: 64 }), { message: /broken/ });
    // A new negotiation makes it usable again.
    d.resetRings(0n);
    t.like(d.stats(), { broken: false, inFlight: 0 });
  }));

test("BlkDriver.request without an answer in time throws and marks the ring broken; a read's data is device-writable", (t) =>
  withBlk(async (d) => {
    d.resetRings(0n);
    const dev = new FakeBlkDevice(d, 16);
    // request() polls on this thread, so this JS device cannot answer it: only the timeout
    // path here (test/src/blk_driver.test.ts reads and writes through real back-ends).
    t.throws(() => d.request("read", 8, undefined, 50), { message: /did not complete within 50 ms/ });
    t.true(d.stats().broken);
    d.resetRings(0n);
    d.startLoad({ queueDepth: 1, writePercent: 0, sectors: 8 });
    await waitFor(() => dev.pending() === 1, 3000, "a read posted");
    const r = dev.take();
    t.is(r.type, 0);
    t.like(r.data, { len: 4096, flags: F_NEXT | F_WRITE }, "a read's data is device-writable");
    dev.mem[dev.off(r.status.addr)] = 0;
    dev.complete(r.head, 4097);
    await waitFor(() => d.stats().completed === 1, 3000, "the read completed");
    d.stopLoad();
    t.like(d.stats(), { reads: 1, errors: 0 });
  }));
