// virtio-blk in the engine with a fake front-end (memfd guest + driver rings written from TS):
// reads, writes, flush, GET_ID, discard and write-zeroes against a real backing file, and
// hostile requests — each fails with IOERR/UNSUPP (or, when its status byte cannot be written,
// breaks only its own queue) while another blk device keeps serving.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import test from "ava";
import { native, type EngineEvent, type NativeEngine } from "../src/native.js";
import { testSupport } from "../src/testing.js";
import { DESC_NEXT, DESC_WRITE, DrvRing, F, GUEST_BASE, Guest, counter, waitFor } from "./engine_guest.js";

const T_IN = 0;
const T_OUT = 1;
const T_FLUSH = 4;
const T_GET_ID = 8;
const T_DISCARD = 11;
const T_WRITE_ZEROES = 13;
const S_OK = 0;
const S_IOERR = 1;
const S_UNSUPP = 2;
const MiB = 1 << 20;
const BLK_F_DISCARD = 1n << 13n;
const BLK_F_WRITE_ZEROES = 1n << 14n;

interface Seg {
  addr: bigint;
  len: number;
  write?: boolean;
}

/** One virtio-blk device as a guest driver sees it: request queue 0 (and more with queues > 1). */
class VBlk {
  readonly g = new Guest(32 << 20);
  readonly rings: DrvRing[] = [];
  readonly info;
  constructor(
    readonly eng: NativeEngine,
    readonly devId: number,
    opts: { fd: number; nullBytes?: number; readonly?: boolean; queues?: number; serial?: string; direct?: boolean; noDiscard?: boolean },
  ) {
    const queues = opts.queues ?? 1;
    this.info = eng.addBlkDevice(devId, { fd: opts.fd, nullBytes: opts.nullBytes, numQueues: queues, readonly: opts.readonly, serial: opts.serial, direct: opts.direct });
    eng.setFeatures(devId, F.VERSION_1 | F.INDIRECT | (opts.noDiscard ? 0n : BLK_F_DISCARD | BLK_F_WRITE_ZEROES));
    eng.setMemTable(devId, [this.g.region()]);
    for (let q = 0; q < queues; q++) {
      const r = new DrvRing(this.g, 256);
      this.rings.push(r);
      eng.startQueue(devId, q, r.cfg());
    }
  }
  hdr(type: number, sector: bigint): Seg {
    const off = this.g.alloc(16);
    this.g.buf.writeUInt32LE(type, off);
    this.g.buf.writeUInt32LE(0, off + 4);
    this.g.buf.writeBigUInt64LE(sector, off + 8);
    return { addr: this.g.addr(off), len: 16 };
  }
  buf(data: Buffer | number, write = false): Seg & { off: number } {
    const len = typeof data === "number" ? data : data.length;
    const off = this.g.alloc(len, 512);
    if (typeof data !== "number") data.copy(this.g.buf, off);
    else this.g.buf.fill(0xee, off, off + len);
    return { addr: this.g.addr(off), len, write, off };
  }
  status(): Seg & { off: number } {
    const off = this.g.alloc(1);
    this.g.buf[off] = 0xaa;
    return { addr: this.g.addr(off), len: 1, write: true, off };
  }
  /** Posts a chain and waits until the device returns it; returns its status byte and used length. */
  async request(segs: Seg[], statusOff: number, q = 0): Promise<{ status: number; len: number }> {
    const r = this.rings[q]!;
    const head = r.chain(segs);
    r.publish(head);
    r.doKick();
    let got: { id: number; len: number } | undefined;
    await waitFor(() => {
      const u = r.takeUsed();
      if (u.length) got = u[0];
      return got !== undefined;
    }, 5000);
    if (!got) throw new Error("request never completed");
    if (got.id !== head) throw new Error(`used id ${got.id}, expected ${head}`);
    return { status: this.g.buf[statusOff]!, len: got.len };
  }
  async io(type: number, sector: bigint, data?: Buffer | number, write = false) {
    const st = this.status();
    const segs: Seg[] = [this.hdr(type, sector)];
    let b: (Seg & { off: number }) | undefined;
    if (data !== undefined) segs.push((b = this.buf(data, write)));
    segs.push(st);
    const r = await this.request(segs, st.off);
    return { ...r, data: b ? Buffer.from(this.g.buf.subarray(b.off, b.off + b.len)) : undefined };
  }
  close(): void {
    for (const r of this.rings) r.closeFds();
    this.g.close();
  }
}

function backing(t: { teardown: (f: () => void) => void }, size = 8 * MiB): { file: string; fd: number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-blk-"));
  const file = path.join(dir, "disk.raw");
  const fd = fs.openSync(file, "w+", 0o600);
  fs.ftruncateSync(fd, size);
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { file, fd };
}

function setup(t: { teardown: (f: () => void) => void }, opts: { readonly?: boolean; queues?: number } = {}) {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 8 }, (ev) => events.push(ev));
  const a = backing(t);
  const b = backing(t);
  const blk = new VBlk(eng, 1, { fd: a.fd, serial: "vhostd-test-serial-1", readonly: opts.readonly, queues: opts.queues });
  const other = new VBlk(eng, 2, { fd: b.fd });
  fs.closeSync(a.fd);
  fs.closeSync(b.fd);
  t.teardown(() => {
    eng.close();
    blk.close();
    other.close();
  });
  return { eng, events, blk, other, file: a.file };
}

const pattern = (len: number, seed: number) => {
  const b = Buffer.alloc(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
};

test("write, read back, flush, GET_ID; capacity and counters", async (t) => {
  const { eng, blk, file } = setup(t);
  t.is(blk.info.capacity, BigInt((8 * MiB) / 512));
  const data = pattern(64 * 1024, 7);
  const w = await blk.io(T_OUT, 100n, data);
  t.is(w.status, S_OK);
  t.is(w.len, 1);
  const onDisk = Buffer.alloc(data.length);
  const fd = fs.openSync(file, "r");
  fs.readSync(fd, onDisk, 0, data.length, 100 * 512);
  fs.closeSync(fd);
  t.deepEqual(onDisk, data, "the backing file holds what the guest wrote");
  const r = await blk.io(T_IN, 100n, data.length, true);
  t.is(r.status, S_OK);
  t.is(r.len, data.length + 1);
  t.deepEqual(r.data, data);
  t.is((await blk.io(T_FLUSH, 0n)).status, S_OK);
  const id = await blk.io(T_GET_ID, 0n, 20, true);
  t.is(id.status, S_OK);
  t.is(id.data!.toString(), "vhostd-test-serial-1");
  t.is(counter(eng, 1, 0, "packets"), 4n);
  t.is(counter(eng, 1, 0, "bytes"), BigInt(2 * data.length));
  t.is(counter(eng, 1, 0, "errors"), 0n);
});

test("a request split over several descriptors and an indirect table", async (t) => {
  const { blk } = setup(t);
  const data = pattern(3 * 4096, 3);
  const st = blk.status();
  const segs: Seg[] = [blk.hdr(T_OUT, 8n), blk.buf(data.subarray(0, 4096)), blk.buf(data.subarray(4096, 8192)), blk.buf(data.subarray(8192))];
  t.is((await blk.request([...segs, st], st.off)).status, S_OK);
  // read through an indirect table: header, 3 x 4 KiB, status
  const r = blk.rings[0]!;
  const rst = blk.status();
  const parts = [blk.hdr(T_IN, 8n), blk.buf(4096, true), blk.buf(4096, true), blk.buf(4096, true), rst];
  const tbl = blk.g.alloc(16 * parts.length, 16);
  parts.forEach((p, i) => r.writeDesc(i, p.addr, p.len, (p.write ? DESC_WRITE : 0) | (i < parts.length - 1 ? DESC_NEXT : 0), i + 1, tbl));
  const head = r.chain([{ addr: blk.g.addr(tbl), len: 16 * parts.length }]);
  r.writeDesc(head, blk.g.addr(tbl), 16 * parts.length, 4 /* INDIRECT */, 0);
  r.publish(head);
  r.doKick();
  t.true(await waitFor(() => r.usedIdx() === r.lastUsed + 1));
  r.takeUsed();
  t.is(blk.g.buf[rst.off], S_OK);
  const back = Buffer.concat([1, 2, 3].map((i) => blk.g.buf.subarray((parts[i] as Seg & { off: number }).off, (parts[i] as Seg & { off: number }).off + 4096)));
  t.deepEqual(back, data);
});

test("discard and write-zeroes read back as zeros and free the backing's blocks", async (t) => {
  const { blk, file } = setup(t);
  const data = pattern(MiB, 11);
  t.is((await blk.io(T_OUT, 0n, data)).status, S_OK);
  t.is((await blk.io(T_FLUSH, 0n)).status, S_OK);
  const before = fs.statSync(file).blocks;
  const seg = (sector: bigint, num: number, flags = 0) => {
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(sector, 0);
    b.writeUInt32LE(num, 8);
    b.writeUInt32LE(flags, 12);
    return b;
  };
  t.is((await blk.io(T_DISCARD, 0n, seg(0n, 1024))).status, S_OK);
  t.is((await blk.io(T_WRITE_ZEROES, 0n, seg(1024n, 512))).status, S_OK);
  t.is((await blk.io(T_WRITE_ZEROES, 0n, seg(1536n, 512, 1))).status, S_OK);
  const after = fs.statSync(file).blocks;
  t.true(after < before, `allocated 512-byte blocks went from ${before} to ${after}`);
  const r = await blk.io(T_IN, 0n, MiB, true);
  t.true(r.data!.every((x) => x === 0), "the whole discarded / zeroed range reads as zeros");
});

test("requests complete in avail order even when several are in flight", async (t) => {
  const { blk } = setup(t);
  const r = blk.rings[0]!;
  const heads: number[] = [];
  const stats: number[] = [];
  for (let i = 0; i < 16; i++) {
    const st = blk.status();
    stats.push(st.off);
    heads.push(r.chain([blk.hdr(i % 2 ? T_IN : T_OUT, BigInt(i * 256)), blk.buf(i % 2 ? 128 * 1024 : pattern(4096, i), i % 2 === 1), st]));
  }
  r.publish(...heads);
  r.doKick();
  t.true(await waitFor(() => r.usedIdx() === 16, 5000));
  t.deepEqual(r.takeUsed().map((u) => u.id), heads);
  t.true(stats.every((o) => blk.g.buf[o] === S_OK));
});

test("read-only device: writes, discards and write-zeroes fail with IOERR, reads work", async (t) => {
  const { blk } = setup(t, { readonly: true });
  t.is((await blk.io(T_OUT, 0n, pattern(512, 1))).status, S_IOERR);
  const seg = Buffer.alloc(16);
  seg.writeUInt32LE(8, 8);
  t.is((await blk.io(T_DISCARD, 0n, seg)).status, S_IOERR);
  t.is((await blk.io(T_WRITE_ZEROES, 0n, seg)).status, S_IOERR);
  t.is((await blk.io(T_IN, 0n, 512, true)).status, S_OK);
});

test("null backing completes every request without I/O", async (t) => {
  const eng = new native.Engine({ maxDevices: 4 }, () => undefined);
  const blk = new VBlk(eng, 0, { fd: -1, nullBytes: 64 * MiB });
  t.teardown(() => {
    eng.close();
    blk.close();
  });
  t.is(blk.info.capacity, BigInt((64 * MiB) / 512));
  t.is((await blk.io(T_OUT, 0n, pattern(4096, 2))).status, S_OK);
  t.is((await blk.io(T_IN, 1000n, 4096, true)).status, S_OK);
  t.is((await blk.io(T_IN, BigInt((64 * MiB) / 512), 512, true)).status, S_IOERR, "beyond the capacity");
});

type Setup = ReturnType<typeof setup>;
const hostile: Array<[string, number, (s: Setup) => { segs: Seg[]; statusOff: number }, RegExp]> = [
  ["sector beyond the capacity", S_IOERR, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(T_IN, BigInt((8 * MiB) / 512 - 1)), s.blk.buf(1024, true), st], statusOff: st.off };
  }, /sectors beyond the capacity/],
  ["sector + length wrapping 64 bits", S_IOERR, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(T_OUT, (1n << 64n) - 1n), s.blk.buf(512), st], statusOff: st.off };
  }, /sectors beyond the capacity/],
  ["data segment larger than SIZE_MAX", S_IOERR, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(T_IN, 0n), s.blk.buf(2 * MiB, true), st], statusOff: st.off };
  }, /larger than SIZE_MAX/],
  ["header device-writable", S_IOERR, (s) => {
    const st = s.blk.status();
    const h = s.blk.hdr(T_IN, 0n);
    return { segs: [{ ...h, write: true }, s.blk.buf(512, true), st], statusOff: st.off };
  }, /header is not the first/],
  ["header shorter than 16 bytes", S_IOERR, (s) => {
    const st = s.blk.status();
    const h = s.blk.hdr(T_IN, 0n);
    return { segs: [{ ...h, len: 8 }, s.blk.buf(512, true), st], statusOff: st.off };
  }, /header is not the first/],
  ["readable data after writable data", S_IOERR, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(T_OUT, 0n), s.blk.buf(512, true), s.blk.buf(512), st], statusOff: st.off };
  }, /device-readable descriptor after a device-writable/],
  ["data length not a multiple of 512", S_IOERR, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(T_IN, 0n), s.blk.buf(700, true), st], statusOff: st.off };
  }, /multiple of 512/],
  ["data buffer outside guest memory", S_IOERR, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(T_IN, 0n), { addr: GUEST_BASE + 0x40000000n, len: 4096, write: true }, st], statusOff: st.off };
  }, /outside guest memory/],
  ["unknown request type", S_UNSUPP, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(99, 0n), st], statusOff: st.off };
  }, /unknown request type/],
  ["discard with flags set", S_UNSUPP, (s) => {
    const st = s.blk.status();
    const seg = Buffer.alloc(16);
    seg.writeUInt32LE(8, 8);
    seg.writeUInt32LE(1, 12);
    return { segs: [s.blk.hdr(T_DISCARD, 0n), s.blk.buf(seg), st], statusOff: st.off };
  }, /unknown discard\/write-zeroes flags/],
  ["discard of two ranges (max_discard_seg is 1)", S_IOERR, (s) => {
    const st = s.blk.status();
    return { segs: [s.blk.hdr(T_DISCARD, 0n), s.blk.buf(Buffer.alloc(32)), st], statusOff: st.off };
  }, /1\.\.max_seg/],
  ["write-zeroes beyond the capacity", S_IOERR, (s) => {
    const st = s.blk.status();
    const seg = Buffer.alloc(16);
    seg.writeBigUInt64LE(BigInt((8 * MiB) / 512 - 4), 0);
    seg.writeUInt32LE(8, 8);
    return { segs: [s.blk.hdr(T_WRITE_ZEROES, 0n), s.blk.buf(seg), st], statusOff: st.off };
  }, /sectors beyond the capacity/],
];

async function otherStillWorks(t: { is: (a: unknown, b: unknown, m?: string) => void }, s: Setup) {
  const d = pattern(4096, 99);
  t.is((await s.other.io(T_OUT, 0n, d)).status, S_OK, "the other device still writes");
  t.is((await s.other.io(T_IN, 0n, 4096, true)).data?.equals(d), true, "and reads back");
}

for (const [name, want, make, why] of hostile) {
  test(`hostile: ${name} -> ${want === S_IOERR ? "IOERR" : "UNSUPP"}, the queue and the daemon go on`, async (t) => {
    const s = setup(t);
    const { segs, statusOff } = make(s);
    const r = await s.blk.request(segs, statusOff);
    t.is(r.status, want);
    t.is(counter(s.eng, 1, 0, "errors"), 1n);
    t.true(await waitFor(() => s.events.some((e) => e.devId === 1 && e.kind === "chain-error")), "reported");
    t.regex(s.events.find((e) => e.kind === "chain-error")!.reason, why);
    // the same queue keeps working
    const d = pattern(4096, 5);
    t.is((await s.blk.io(T_OUT, 16n, d)).status, S_OK);
    t.true((await s.blk.io(T_IN, 16n, 4096, true)).data?.equals(d));
    await otherStillWorks(t, s);
    t.is(testSupport.eventFdRead(s.blk.rings[0]!.err), 0, "queue not broken");
  });
}

for (const [name, seg] of [
  ["status byte outside guest memory", { addr: GUEST_BASE + 0x40000000n, len: 1, write: true }],
  ["no device-writable status byte", null],
] as const) {
  test(`hostile: ${name} -> only this queue breaks`, async (t) => {
    const s = setup(t);
    const r = s.blk.rings[0]!;
    const segs: Seg[] = [s.blk.hdr(T_IN, 0n), s.blk.buf(512, name.startsWith("status"))];
    if (seg) segs.push(seg);
    const head = r.chain(segs);
    r.publish(head);
    r.doKick();
    t.true(await waitFor(() => s.events.some((e) => e.devId === 1 && e.kind === "queue-broken")));
    t.regex(s.events.find((e) => e.kind === "queue-broken")!.reason, seg ? /status byte .* outside guest memory/ : /no device-writable status byte/);
    t.is(testSupport.eventFdRead(r.err), 1, "err fd signalled");
    t.is(r.usedIdx(), 0, "nothing completed on the broken queue");
    await otherStillWorks(t, s);
  });
}

test("hostile: a chain longer than SEG_MAX + header + status -> only this queue breaks, after 129 descriptors", async (t) => {
  const s = setup(t);
  const r = s.blk.rings[0]!;
  const data = Array.from({ length: 130 }, () => s.blk.buf(512, true));
  const head = r.chain([s.blk.hdr(T_IN, 0n), ...data, s.blk.status()]);
  r.publish(head);
  r.doKick();
  t.true(await waitFor(() => s.events.some((e) => e.devId === 1 && e.kind === "queue-broken")));
  t.regex(s.events.find((e) => e.kind === "queue-broken")!.reason, /chain longer than 128 descriptors/);
  t.is(r.usedIdx(), 0, "nothing completed on the broken queue");
  await otherStillWorks(t, s);
});

test("DISCARD and WRITE_ZEROES without their features -> UNSUPP", async (t) => {
  const eng = new native.Engine({ maxDevices: 4 }, () => undefined);
  const blk = new VBlk(eng, 0, { fd: -1, nullBytes: 64 * MiB, noDiscard: true });
  t.teardown(() => {
    eng.close();
    blk.close();
  });
  const seg = Buffer.alloc(16);
  seg.writeUInt32LE(8, 8);
  t.is((await blk.io(T_DISCARD, 0n, seg)).status, S_UNSUPP);
  t.is((await blk.io(T_WRITE_ZEROES, 0n, seg)).status, S_UNSUPP);
  t.is((await blk.io(T_IN, 0n, 512, true)).status, S_OK);
});

test("GET_VRING_BASE with requests in flight: the stop waits for them, base == used idx", async (t) => {
  const { eng, blk } = setup(t);
  const r = blk.rings[0]!;
  const heads: number[] = [];
  for (let i = 0; i < 32; i++) heads.push(r.chain([blk.hdr(T_OUT, BigInt(i * 128)), blk.buf(pattern(64 * 1024, i)), blk.status()]));
  r.publish(...heads);
  r.doKick();
  await waitFor(() => r.usedIdx() > 0, 2000);
  const base = eng.stopQueue(1, 0);
  t.is(base, r.usedIdx(), "every request taken was completed before the stop returned");
  eng.startQueue(1, 0, r.cfg(base));
  t.true(await waitFor(() => r.usedIdx() === 32, 5000), "the rest after a restart");
});

test("multi-queue: each queue serves its own requests", async (t) => {
  const { blk } = setup(t, { queues: 4 });
  for (let q = 0; q < 4; q++) {
    const d = pattern(4096, q + 20);
    const st = blk.status();
    t.is((await blk.request([blk.hdr(T_OUT, BigInt(q * 8)), blk.buf(d), st], st.off, q)).status, S_OK);
    const rst = blk.status();
    const b = blk.buf(4096, true);
    t.is((await blk.request([blk.hdr(T_IN, BigInt(q * 8)), b, rst], rst.off, q)).status, S_OK);
    t.deepEqual(Buffer.from(blk.g.buf.subarray(b.off, b.off + 4096)), d);
  }
});

// INFLIGHT_SHMFD: one queue region = 16-byte header (features u64, version u16, desc_num u16,
// last_batch_head u16, used_idx u16) + 16 bytes per descriptor (inflight u8, 5 pad, next u16,
// counter u64), 64-byte aligned.
const INFLIGHT_QUEUE_BYTES = Math.ceil((16 + 16 * 256) / 64) * 64;

function inflightArea(t: { teardown: (f: () => void) => void }): { fd: number; read: () => Buffer; write: (off: number, b: Buffer) => void } {
  const fd = native.memfdCreate("inflight-test", INFLIGHT_QUEUE_BYTES);
  t.teardown(() => native.closeFd(fd));
  return {
    fd,
    read: () => {
      const b = Buffer.alloc(INFLIGHT_QUEUE_BYTES);
      fs.readSync(fd, b, 0, b.length, 0);
      return b;
    },
    write: (off, b) => void fs.writeSync(fd, b, 0, b.length, off),
  };
}

test("inflight area: each request is marked when taken and cleared once its completion is published; used_idx follows", async (t) => {
  const { eng, blk } = setup(t);
  const a = inflightArea(t);
  t.deepEqual(eng.setBlkInflight(1, { fd: a.fd, size: BigInt(INFLIGHT_QUEUE_BYTES), offset: 0n, numQueues: 1, queueSize: 256, fresh: true }), [0]);
  let b = a.read();
  t.is(b.readUInt16LE(8), 1, "version");
  t.is(b.readUInt16LE(10), 256, "desc_num");
  for (let i = 0; i < 3; i++) t.is((await blk.io(T_OUT, BigInt(8 * i), pattern(4096, i))).status, S_OK);
  b = a.read();
  t.is(b.readUInt16LE(14), 3, "used_idx = used->idx");
  const descs = Array.from({ length: 256 }, (_, i) => ({ inflight: b[16 + 16 * i]!, counter: b.readBigUInt64LE(16 + 16 * i + 8) }));
  t.true(descs.every((d) => d.inflight === 0), "nothing left in flight");
  const used = descs.filter((d) => d.counter > 0n).map((d) => d.counter).sort();
  t.deepEqual(used, [1n, 2n, 3n], "each request was marked once, in order");
});

test("inflight area handed back: checked before it is trusted; marks left by a dead back-end are counted and cleared at the ring's start", async (t) => {
  const { eng, blk } = setup(t);
  const a = inflightArea(t);
  const area = { fd: a.fd, size: BigInt(INFLIGHT_QUEUE_BYTES), offset: 0n, numQueues: 1, queueSize: 256 };
  eng.setBlkInflight(1, { ...area, fresh: true });
  t.is((await blk.io(T_OUT, 0n, pattern(4096, 9))).status, S_OK);
  // A back-end killed with two requests taken and not completed: their heads stay marked.
  const mark = (head: number, flag: number, counter: bigint) => {
    const e = Buffer.alloc(16);
    e[0] = flag;
    e.writeBigUInt64LE(counter, 8);
    a.write(16 + 16 * head, e);
  };
  mark(10, 1, 7n);
  mark(11, 1, 8n);
  t.deepEqual(eng.setBlkInflight(1, { ...area, fresh: false }), [2]);
  // Hostile areas are refused, naming the problem; the device keeps the area it had.
  mark(12, 7, 9n);
  t.throws(() => eng.setBlkInflight(1, { ...area, fresh: false }), { message: /flag 7 is not 0 or 1/ });
  mark(12, 0, 0n);
  t.throws(() => eng.setBlkInflight(1, { ...area, size: area.size - 64n, fresh: false }), { message: /expected/ });
  t.throws(() => eng.setBlkInflight(1, { ...area, queueSize: 128, fresh: false }), { message: /expected/ });
  const v = Buffer.alloc(2);
  v.writeUInt16LE(9);
  a.write(8, v);
  t.throws(() => eng.setBlkInflight(1, { ...area, fresh: false }), { message: /version 9/ });
  v.writeUInt16LE(1);
  a.write(8, v);
  // The ring restarts at used->idx: the marked requests will be taken again, so the marks go.
  const r = blk.rings[0]!;
  eng.stopQueue(1, 0);
  eng.startQueue(1, 0, r.cfg());
  const b = a.read();
  t.is(b[16 + 16 * 10], 0);
  t.is(b[16 + 16 * 11], 0);
  t.is(b.readUInt16LE(14), 1, "used_idx resynced to used->idx");
  t.is((await blk.io(T_OUT, 8n, pattern(4096, 10))).status, S_OK, "the device goes on");
});
