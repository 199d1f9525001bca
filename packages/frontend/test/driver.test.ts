// The front-end driver's native part: layout, argument checking, frame format, and the
// driver thread against a fake device written in JS (driver_fake_device.ts).
import test from "ava";
import { native } from "@vhostd/native";
import { frontendAddon, type DriverOptions, type NativeDriverDevice } from "../src/native.js";
import { FakeDeviceQueue, waitFor } from "./driver_fake_device.js";

const VERSION_1 = 1n << 32n;
const MRG_RXBUF = 1n << 15n;
const EVENT_IDX = 1n << 29n;
const MAC_A = "52:54:00:00:00:0a";
const MAC_B = "52:54:00:00:00:0b";

function withDevice<T>(opts: DriverOptions, fn: (d: NativeDriverDevice) => T) {
  const d = new frontendAddon.DriverDevice(opts);
  const done = () => d.close();
  try {
    const r = fn(d);
    if (r instanceof Promise) return r.finally(done) as T;
    done();
    return r;
  } catch (e) {
    done();
    throw e;
  }
}

test("ring layout: every ring inside memory, aligned, disjoint, with its own eventfds", (t) => {
  withDevice({ queuePairs: 2, queueSize: 256 }, (d) => {
    t.is(d.memSize, 64 * 1024 * 1024);
    t.true(d.memFd >= 0);
    t.is(d.memAddr % 4096n, 0n);
    const fds = new Set<number>();
    let prevEnd = d.memAddr;
    for (let q = 0; q < 4; q++) {
      const r = d.ring(q);
      t.is(r.desc % 4096n, 0n);
      t.is(r.used % 4096n, 0n);
      t.is(r.avail, r.desc + 16n * 256n);
      t.true(r.used >= r.avail + 6n + 2n * 256n);
      t.true(r.desc >= prevEnd);
      prevEnd = r.used + 6n + 8n * 256n;
      t.true(prevEnd <= d.memAddr + BigInt(d.memSize));
      fds.add(r.kickFd);
      fds.add(r.callFd);
    }
    t.is(fds.size, 8);
    // fresh rings are zero except the interrupt-suppression flag the driver sets
    const r0 = d.ring(0);
    t.is(d.readMem(r0.avail + 2n, 2).readUInt16LE(0), 0);
    t.is(d.readMem(r0.used, 4).readUInt32LE(0), 0);
  });
});

test("constructor and methods validate their arguments", (t) => {
  t.throws(() => new frontendAddon.DriverDevice({ queueSize: 3 }), { instanceOf: RangeError });
  t.throws(() => new frontendAddon.DriverDevice({ queueSize: 65536 }), { instanceOf: RangeError });
  t.throws(() => new frontendAddon.DriverDevice({ queuePairs: 0 }), { instanceOf: RangeError });
  t.throws(() => new frontendAddon.DriverDevice({ memSize: 4096 }), { instanceOf: RangeError, message: /at least/ });
  t.throws(() => new frontendAddon.DriverDevice({ memSize: 1000000 }), { instanceOf: RangeError });
  t.throws(() => new frontendAddon.DriverDevice({ features: 1 as unknown as bigint }), { instanceOf: TypeError });
  t.throws(() => new frontendAddon.DriverDevice("x" as never), { instanceOf: TypeError });
  withDevice({ queueSize: 64, memSize: 4 << 20 }, (d) => {
    t.throws(() => d.ring(2), { instanceOf: RangeError });
    t.throws(() => d.ring(-1), { instanceOf: RangeError });
    t.throws(() => d.ring("0" as never), { instanceOf: TypeError });
    t.throws(() => d.stats(1), { instanceOf: RangeError });
    t.throws(() => d.startTx(0, { dstMac: "nope", srcMac: MAC_A, frameSize: 64 }), { instanceOf: TypeError });
    t.throws(() => d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 59 }), { instanceOf: RangeError });
    t.throws(() => d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 9001 }), { instanceOf: RangeError });
    t.throws(() => d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 64, ratePps: -1 }), { instanceOf: RangeError });
    t.throws(() => d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 64, count: 1.5 }), { instanceOf: RangeError });
    t.throws(() => d.resetRings(0 as never), { instanceOf: TypeError });
  });
});

test("writeMem/readMem are bounds-checked against driver memory", (t) => {
  withDevice({ queueSize: 64, memSize: 4 << 20 }, (d) => {
    const end = d.memAddr + BigInt(d.memSize);
    d.writeMem(end - 4n, Buffer.from([1, 2, 3, 4]));
    t.deepEqual([...d.readMem(end - 4n, 4)], [1, 2, 3, 4]);
    t.is(d.readMem(end, 0).length, 0);
    t.throws(() => d.writeMem(end - 3n, Buffer.alloc(4)), { instanceOf: RangeError });
    t.throws(() => d.readMem(end - 3n, 4), { instanceOf: RangeError });
    t.throws(() => d.readMem(d.memAddr - 1n, 1), { instanceOf: RangeError });
    t.throws(() => d.writeMem(0n, Buffer.alloc(1)), { instanceOf: RangeError });
    t.throws(() => d.writeMem(2n ** 64n - 1n, Buffer.alloc(2)), { instanceOf: RangeError });
    t.throws(() => d.readMem(d.memAddr, d.memSize + 1), { instanceOf: RangeError });
    t.throws(() => d.writeMem(d.memAddr, "x" as never), { instanceOf: TypeError });
    t.throws(() => d.readMem(Number(d.memAddr) as never, 1), { instanceOf: TypeError });
  });
});

test("close() is idempotent and later calls throw", (t) => {
  const d = new frontendAddon.DriverDevice({ queueSize: 64, memSize: 4 << 20 });
  d.close();
  d.close();
  t.throws(() => d.stats(0), { message: /closed/ });
  t.throws(() => d.memAddr, { message: /closed/ });
});

test("frame format: built frames verify; any damage is caught; no magic is foreign", (t) => {
  for (const size of [60, 61, 64, 67, 1500, 9000]) {
    const f = frontendAddon._buildFrame({ dstMac: MAC_B, srcMac: MAC_A, frameSize: size, streamId: 7, seq: 123456789012n, txNs: 5_000_000_123n });
    t.is(f.length, size);
    t.is(f.toString("hex", 0, 6), "52540000000b");
    t.is(f.readUInt16BE(12), 0x88b5);
    t.is(f.toString("latin1", 14, 18), "VHDT");
    t.deepEqual(frontendAddon._checkFrame(f), { verdict: "ok", streamId: 7, seq: 123456789012n, txNs: 5_000_000_123n, problem: "" });
    for (const off of [14, 20, 25, 31, 33, 36, 43, 44, size - 1]) {
      const g = Buffer.from(f);
      g[off] ^= 0x01;
      const v = frontendAddon._checkFrame(g);
      t.is(v.verdict, off < 18 ? "foreign" : "corrupt", `flip at ${off} of ${size}`);
    }
    t.is(frontendAddon._checkFrame(f.subarray(0, size - 1)).problem, "length");
    const h = Buffer.from(f);
    h.writeUInt16BE(0x0800, 12);
    t.is(frontendAddon._checkFrame(h).problem, "ethertype");
  }
  // a frame of another seq has another pattern even with a fixed-up checksum field
  const a = frontendAddon._buildFrame({ dstMac: MAC_B, srcMac: MAC_A, frameSize: 100, seq: 1 });
  const b = frontendAddon._buildFrame({ dstMac: MAC_B, srcMac: MAC_A, frameSize: 100, seq: 2 });
  t.notDeepEqual(a.subarray(36), b.subarray(36));
  t.is(frontendAddon._checkFrame(Buffer.alloc(64)).verdict, "foreign");
  t.is(frontendAddon._checkFrame(Buffer.alloc(0)).verdict, "foreign");
  t.throws(() => frontendAddon._buildFrame({ dstMac: MAC_B, srcMac: MAC_A, frameSize: 20, seq: 0 }), { instanceOf: RangeError });
});

test("TX: numbered frames in one descriptor each, header zero, used entries reclaimed, kicks", async (t) => {
  await withDevice({ queueSize: 16, memSize: 4 << 20, features: VERSION_1 | MRG_RXBUF }, async (d) => {
    const txq = new FakeDeviceQueue(d, 1, 16);
    const kickFd = d.ring(1).kickFd;
    d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 128, count: 40, streamId: 3 });
    const seqs: bigint[] = [];
    let kicks = 0;
    while (seqs.length < 40) {
      await waitFor(() => txq.pending() > 0, 3000, "tx frames");
      kicks += native.eventFdRead(kickFd);
      while (txq.pending() > 0) {
        const desc = txq.take();
        t.is(desc.len, 12 + 128);
        t.is(desc.flags, 0);
        const bytes = d.readMem(desc.addr, desc.len);
        t.true(bytes.subarray(0, 12).equals(Buffer.alloc(12)));
        const v = frontendAddon._checkFrame(bytes.subarray(12));
        t.is(v.verdict, "ok");
        t.is(v.streamId, 3);
        seqs.push(v.seq);
        txq.use(desc.id, 0);
      }
    }
    t.deepEqual(seqs, Array.from({ length: 40 }, (_, i) => BigInt(i)));
    t.true(kicks > 0);
    await waitFor(() => d.stats(0).txPackets === 40);
    const s = d.stats(0);
    t.is(s.txBytes, 40 * 128);
    t.is(s.ringErrors, 0);
    // a second run of the same stream continues the sequence
    d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 64, count: 1, streamId: 3 });
    await waitFor(() => txq.pending() > 0);
    const desc = txq.take();
    t.is(frontendAddon._checkFrame(d.readMem(desc.addr + 12n, 64)).seq, 40n);
  });
});

test("TX: a full ring waits (txRingFull) and resumes without skipping a seq", async (t) => {
  await withDevice({ queueSize: 8, memSize: 4 << 20, features: VERSION_1 }, async (d) => {
    const txq = new FakeDeviceQueue(d, 1, 8);
    d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 60 });
    await waitFor(() => d.stats(0).txRingFull > 0);
    t.is(d.stats(0).txPackets, 8);
    for (let i = 0; i < 8; i++) txq.use(txq.take().id, 0);
    await waitFor(() => d.stats(0).txPackets === 16);
    d.stopTx(0);
    const seqs = [];
    for (let i = 0; i < 8; i++) seqs.push(frontendAddon._checkFrame(d.readMem(txq.take().addr + 12n, 60)).seq);
    t.deepEqual(seqs, [8n, 9n, 10n, 11n, 12n, 13n, 14n, 15n]);
  });
});

test("TX: no kick while the device sets VRING_USED_F_NO_NOTIFY, or with EVENT_IDX behind", async (t) => {
  for (const features of [VERSION_1, VERSION_1 | EVENT_IDX]) {
    await withDevice({ queueSize: 64, memSize: 4 << 20, features }, async (d) => {
      const txq = new FakeDeviceQueue(d, 1, 64);
      const r = d.ring(1);
      if (features & EVENT_IDX) txq.setU16(r.used + 4n + 8n * 64n, 1000); // avail_event far ahead
      else txq.setU16(r.used, 1); // used->flags = NO_NOTIFY
      d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 60, count: 10 });
      await waitFor(() => d.stats(0).txPackets === 10);
      t.is(native.eventFdRead(r.kickFd), 0);
      if (features & EVENT_IDX) txq.setU16(r.used + 4n + 8n * 64n, 10); // wants a kick once idx passes 10
      else txq.setU16(r.used, 0);
      d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 60, count: 5 });
      await waitFor(() => d.stats(0).txPackets === 15);
      t.true(native.eventFdRead(r.kickFd) > 0);
    });
  }
});

type Dev = NativeDriverDevice;

/** Delivers frames into the driver's RX queue 0; each element is one frame split in parts. */
function deliver(d: Dev, rxq: FakeDeviceQueue, frames: Buffer[], opts: { mrg: boolean; split?: number }) {
  for (const f of frames) {
    const parts: Buffer[] = [];
    const split = opts.split ?? 0;
    if (opts.mrg && split > 0) {
      for (let o = 0; o < f.length; o += split) parts.push(f.subarray(o, Math.min(f.length, o + split)));
    } else parts.push(f);
    parts.forEach((p, i) => {
      const desc = rxq.take();
      if (!(desc.flags & 2)) throw new Error("rx descriptor not writable");
      let bytes = p;
      if (i === 0) {
        const h = Buffer.alloc(12);
        if (opts.mrg) h.writeUInt16LE(parts.length, 10);
        bytes = Buffer.concat([h, p]);
      }
      if (bytes.length > desc.len) throw new Error("rx buffer too small");
      d.writeMem(desc.addr, bytes);
      rxq.use(desc.id, bytes.length, false);
    });
  }
  rxq.publish();
}

const frame = (seq: number, stream = 1, size = 100) =>
  frontendAddon._buildFrame({ dstMac: MAC_A, srcMac: MAC_B, frameSize: size, streamId: stream, seq });

test("RX: counts lost, reordered, duplicated, corrupted and foreign frames", async (t) => {
  await withDevice({ queueSize: 64, memSize: 4 << 20, features: VERSION_1 }, async (d) => {
    const rxq = new FakeDeviceQueue(d, 0, 64);
    d.startRx(0);
    await waitFor(() => rxq.pending() === 64, 3000, "rx buffers posted");
    const bad = frame(5);
    bad[60] ^= 0xff;
    const foreign = Buffer.alloc(80, 0x11);
    // stream 1: 0 1 2 4 (3 lost) 3 (late: reordered) 4 (duplicate) 7 (5, 6 lost) + corrupt + foreign
    // stream 2: 0 1
    const frames = [frame(0), frame(1), frame(2), frame(4), frame(3), frame(4), frame(7), bad, foreign, frame(0, 2), frame(1, 2)];
    deliver(d, rxq, frames, { mrg: false });
    await waitFor(() => d.stats(0).rxPackets === frames.length);
    const s = d.stats(0);
    t.like(s, { rxLost: 2, rxReordered: 1, rxDuplicated: 1, rxCorrupted: 1, rxForeign: 1, ringErrors: 0 });
    t.is(s.rxBytes, frames.reduce((a, f) => a + f.length, 0));
    // buffers are posted again
    await waitFor(() => rxq.pending() === 64, 3000, "rx buffers re-posted");
    // startRx starts a fresh session
    d.startRx(0);
    t.like(d.stats(0), { rxPackets: 0, rxLost: 0, rxReordered: 0, rxMaxGapUs: 0 });
  });
});

test("RX: rxRingEmptied counts the passes that found every posted buffer used (the device had none left)", async (t) => {
  await withDevice({ queueSize: 64, memSize: 4 << 20, features: VERSION_1 }, async (d) => {
    const rxq = new FakeDeviceQueue(d, 0, 64);
    d.startRx(0);
    await waitFor(() => rxq.pending() === 64, 3000, "rx buffers posted");
    deliver(d, rxq, Array.from({ length: 10 }, (_, i) => frame(i)), { mrg: false });
    await waitFor(() => d.stats(0).rxPackets === 10);
    t.is(d.stats(0).rxRingEmptied, 0, "10 of 64 used: the device still held 54");
    await waitFor(() => rxq.pending() === 64, 3000, "rx buffers re-posted");
    deliver(d, rxq, Array.from({ length: 64 }, (_, i) => frame(10 + i)), { mrg: false });
    await waitFor(() => d.stats(0).rxPackets === 74);
    t.true(d.stats(0).rxRingEmptied >= 1, "all 64 used at once: the device had none left");
    t.is(d.stats(0).rxLost, 0);
  });
});

test("RX latency: the sender's timestamp in each frame gives percentiles since startRx; unstamped frames give none", async (t) => {
  await withDevice({ queueSize: 64, memSize: 4 << 20, features: VERSION_1 }, async (d) => {
    const rxq = new FakeDeviceQueue(d, 0, 64);
    d.startRx(0);
    await waitFor(() => rxq.pending() === 64, 3000, "rx buffers posted");
    deliver(d, rxq, [frame(0), frame(1)], { mrg: false }); // txNs 0: no sample
    await waitFor(() => d.stats(0).rxPackets === 2);
    t.is(d.latency(0).count, 0);
    await waitFor(() => rxq.pending() === 64);
    // process.hrtime is CLOCK_MONOTONIC, the driver's clock: stamps 2 ms and 20 ms in the past
    const now = process.hrtime.bigint();
    const stamped = (seq: number, agoNs: bigint) => frontendAddon._buildFrame({ dstMac: MAC_A, srcMac: MAC_B, frameSize: 100, streamId: 1, seq, txNs: now - agoNs });
    const frames = [stamped(2, 2_000_000n), stamped(3, 2_000_000n), stamped(4, 2_000_000n), stamped(5, 20_000_000n)];
    deliver(d, rxq, frames, { mrg: false });
    await waitFor(() => d.stats(0).rxPackets === 6);
    const l = d.latency(0);
    t.is(l.count, 4);
    t.true(l.p50Us >= 2000 && l.p50Us < 20_000, `p50 ${l.p50Us}`); // 2 ms + the time to deliver them
    t.true(l.maxUs >= 20_000 && l.p99Us === l.maxUs, `beyond the histogram: max ${l.maxUs}, p99 ${l.p99Us}`);
    t.is(d.stats(0).rxCorrupted, 0);
    d.startRx(0);
    t.is(d.latency(0).count, 0);
  });
});

test("RX: MRG_RXBUF frames spanning several buffers are reassembled and verified", async (t) => {
  await withDevice({ queueSize: 64, memSize: 4 << 20, features: VERSION_1 | MRG_RXBUF | EVENT_IDX }, async (d) => {
    const rxq = new FakeDeviceQueue(d, 0, 64);
    d.startRx(0);
    await waitFor(() => rxq.pending() === 64);
    const frames = [frame(0, 9, 9000), frame(1, 9, 3000), frame(2, 9, 64)];
    deliver(d, rxq, frames, { mrg: true, split: 1000 });
    await waitFor(() => d.stats(0).rxPackets === 3);
    t.like(d.stats(0), { rxLost: 0, rxCorrupted: 0, rxForeign: 0, ringErrors: 0, rxBytes: 12064 });
    // split across a publish boundary: the driver waits for the rest
    await waitFor(() => rxq.pending() === 64);
    const f = frame(3, 9, 2500);
    const parts = [f.subarray(0, 1000), f.subarray(1000, 2000), f.subarray(2000)];
    let desc = rxq.take();
    const h = Buffer.alloc(12);
    h.writeUInt16LE(3, 10);
    d.writeMem(desc.addr, Buffer.concat([h, parts[0]]));
    rxq.use(desc.id, 1012);
    await new Promise((r) => setTimeout(r, 20));
    t.is(d.stats(0).rxPackets, 3);
    for (const p of parts.slice(1)) {
      desc = rxq.take();
      d.writeMem(desc.addr, p);
      rxq.use(desc.id, p.length);
    }
    await waitFor(() => d.stats(0).rxPackets === 4);
    t.like(d.stats(0), { rxLost: 0, rxCorrupted: 0, ringErrors: 0 });
  });
});

test("RX: a device that misbehaves is counted, never crashes the driver", async (t) => {
  await withDevice({ queueSize: 16, memSize: 4 << 20, features: VERSION_1 | MRG_RXBUF }, async (d) => {
    const rxq = new FakeDeviceQueue(d, 0, 16);
    d.startRx(0);
    await waitFor(() => rxq.pending() === 16);
    rxq.use(99, 10); // id out of range
    await waitFor(() => d.stats(0).ringErrors === 1);
    const desc = rxq.take();
    rxq.use(desc.id, 5); // shorter than the header
    await waitFor(() => d.stats(0).ringErrors === 2);
    const desc2 = rxq.take();
    d.writeMem(desc2.addr, Buffer.concat([Buffer.alloc(12), frame(0)]));
    rxq.use(desc2.id, 1 << 20); // longer than the buffer; num_buffers 0
    await waitFor(() => d.stats(0).ringErrors === 4);
    t.is(d.stats(0).rxCorrupted, 1); // truncated to the buffer: length mismatch
    // used idx far beyond anything made available: the ring is given up, not trusted
    rxq.usedIdx = 40000;
    rxq.publish();
    await waitFor(() => d.stats(0).ringErrors === 5);
    // resetRings heals it
    d.resetRings(VERSION_1);
    const fresh = new FakeDeviceQueue(d, 0, 16);
    await waitFor(() => fresh.pending() === 16);
    deliver(d, fresh, [frame(1)], { mrg: false });
    await waitFor(() => d.stats(0).rxPackets === 2);
    t.like(d.stats(0), { rxLost: 1, rxCorrupted: 1, ringErrors: 5 }); // seq 0 arrived only corrupted
  });
});

test("TX: ratePps paces frames", async (t) => {
  await withDevice({ queueSize: 1024, memSize: 32 << 20, features: VERSION_1 }, async (d) => {
    d.startTx(0, { dstMac: MAC_B, srcMac: MAC_A, frameSize: 60, ratePps: 2000 });
    await new Promise((r) => setTimeout(r, 250));
    d.stopTx(0);
    const n = d.stats(0).txPackets;
    t.true(n >= 350 && n <= 650, `sent ${n} in 250 ms at 2000 pps`);
  });
});
