// Writes the hand-made seed inputs of the native targets (well-formed rings, requests, areas
// and tables in each harness's input format, see the comment at the top of each *_fuzz.cc)
// into a directory per target: node seeds.mjs OUTDIR. The committed corpus (corpus/<target>)
// started from these and was grown and minimized (-merge=1) by the campaign.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

const F_NEXT = 1, F_WRITE = 2, F_INDIRECT = 4;
const BITS = { indirect: 1, eventIdx: 2, v1: 4, mrg: 8, log: 16, guestCsum: 32, gso: 64 };

/** A growable little-endian image. */
class Img {
  constructor() { this.b = Buffer.alloc(0); }
  ensure(n) { if (this.b.length < n) this.b = Buffer.concat([this.b, Buffer.alloc(n - this.b.length)]); }
  u8(o, v) { this.ensure(o + 1); this.b.writeUInt8(v, o); }
  u16(o, v) { this.ensure(o + 2); this.b.writeUInt16LE(v, o); }
  u32(o, v) { this.ensure(o + 4); this.b.writeUInt32LE(v >>> 0, o); }
  u64(o, v) { this.ensure(o + 8); this.b.writeBigUInt64LE(BigInt(v), o); }
  bytes(o, buf) { this.ensure(o + buf.length); buf.copy(this.b, o); }
  desc(table, i, addr, len, flags, next = 0) { const o = table + 16 * i; this.u64(o, addr); this.u32(o + 8, len); this.u16(o + 12, flags); this.u16(o + 14, next); }
}

/** Same packing as fuzz_net.cc ringLayout. */
function ringLayout(base, size) {
  const avail = base + 16 * size;
  const used = (avail + 6 + 2 * size + 3) & ~3;
  return { desc: base, avail, used, end: (used + 6 + 8 * size + 15) & ~15 };
}

function ringConfig(log2, bits, lastAvail = 0) {
  const b = Buffer.alloc(16);
  b[0] = log2; b[1] = bits; b.writeUInt16LE(lastAvail, 2);
  return b;
}

/** Puts heads on the avail ring and sets avail->idx. */
function publish(img, ring, size, heads, start = 0) {
  heads.forEach((h, k) => img.u16(ring.avail + 4 + 2 * ((start + k) % size), h));
  img.u16(ring.avail + 2, (start + heads.length) & 0xffff);
}

function frame(hdrLen, len, hdr = {}) {
  const b = Buffer.alloc(hdrLen + len, 0);
  b[0] = hdr.flags ?? 0;
  b[1] = hdr.gso ?? 0;
  b.writeUInt16LE(hdr.csumStart ?? 0, 6);
  b.writeUInt16LE(hdr.csumOffset ?? 0, 8);
  for (let i = 0; i < len; i++) b[hdrLen + i] = (i * 7 + 3) & 0xff;
  if (len >= 6) b.fill(0xff, hdrLen, hdrLen + 6);  // broadcast destination
  return b;
}

const seeds = {};
const add = (target, name, buf) => ((seeds[target] ??= [])[name] = buf, (seeds[target].names ??= []).push(name));

// ---- net_tx: TX queue 1 (size 8) and RX queue 0 (size 8) right after it.
{
  const size = 8, tx = ringLayout(0, size), rx = ringLayout(tx.end, size);
  const rxBuffers = (img, n, len, flags = F_WRITE) => {
    for (let i = 0; i < n; i++) img.desc(rx.desc, i, 0x8000 + i * 0x800, len, flags);
    publish(img, rx, size, [...Array(n).keys()]);
  };
  const cases = {
    "one-desc-frames": (img) => {
      img.desc(tx.desc, 0, 0x1000, 12 + 60, 0); img.bytes(0x1000, frame(12, 60));
      img.desc(tx.desc, 1, 0x1100, 12 + 200, 0); img.bytes(0x1100, frame(12, 200));
      publish(img, tx, size, [0, 1]); rxBuffers(img, 4, 2048);
      return BITS.v1;
    },
    "chained-header-and-data": (img) => {
      img.desc(tx.desc, 0, 0x1000, 12, F_NEXT, 1); img.desc(tx.desc, 1, 0x1100, 100, F_NEXT, 2); img.desc(tx.desc, 2, 0xffc0, 128, 0);
      img.bytes(0x1000, frame(12, 0)); img.bytes(0x1100, frame(0, 100));
      publish(img, tx, size, [0]); rxBuffers(img, 2, 1024);
      return BITS.v1;
    },
    "indirect-chain": (img) => {
      img.desc(tx.desc, 3, 0x600, 32, F_INDIRECT);
      img.desc(0x600, 0, 0x1000, 12, F_NEXT, 1); img.desc(0x600, 1, 0x1100, 80, 0);
      img.bytes(0x1000, frame(12, 0)); img.bytes(0x1100, frame(0, 80));
      publish(img, tx, size, [3, 3]); rxBuffers(img, 3, 1500);
      return BITS.v1 | BITS.indirect;
    },
    "needs-csum-to-mrg-rx": (img) => {
      const f = frame(12, 80, { flags: 1, csumStart: 34, csumOffset: 16 });
      img.desc(tx.desc, 0, 0x1000, f.length, 0); img.bytes(0x1000, f);
      publish(img, tx, size, [0]);
      for (let i = 0; i < 4; i++) img.desc(rx.desc, i, 0x8000 + i * 0x100, 32, F_WRITE);
      publish(img, rx, size, [0, 1, 2, 3]);
      return BITS.v1 | BITS.mrg | BITS.log;
    },
    "bad-chains": (img) => {
      img.desc(tx.desc, 0, 0x1000, 0, 0);                 // zero length
      img.desc(tx.desc, 1, 0x1000, 100, F_WRITE);         // writable in TX
      img.desc(tx.desc, 2, 0x40000, 100, 0);              // outside
      img.desc(tx.desc, 4, 0x1000, 20, F_NEXT, 4);        // loop
      publish(img, tx, size, [0, 1, 2, 4, 9]);
      return BITS.v1 | BITS.eventIdx;
    },
  };
  for (const [name, build] of Object.entries(cases)) {
    const img = new Img();
    const bits = build(img);
    add("net_tx", name, Buffer.concat([ringConfig(3, bits), Buffer.from([3, 0]), img.b]));
  }
}

// ---- net_rx: RX queue 0 (size 8), frames described in the input.
{
  const size = 8, rx = ringLayout(0, size);
  const pkt = (len, hdr = {}) => {
    const b = Buffer.alloc(14);
    b[0] = hdr.flags ?? 0; b[1] = hdr.gso ?? 0; b.writeUInt16LE(hdr.gsoSize ?? 0, 4);
    b.writeUInt16LE(hdr.csumStart ?? 0, 6); b.writeUInt16LE(hdr.csumOffset ?? 0, 8);
    b.writeUInt16LE(len, 12);
    return b;
  };
  const cases = {
    "single-buffers": [BITS.v1, [pkt(60), pkt(1500)], (img) => {
      for (let i = 0; i < 4; i++) img.desc(rx.desc, i, 0x1000 + i * 0x800, 2048, F_WRITE);
      publish(img, rx, size, [0, 1, 2, 3]);
    }],
    "mrg-small-buffers": [BITS.v1 | BITS.mrg, [pkt(300), pkt(60)], (img) => {
      for (let i = 0; i < 8; i++) img.desc(rx.desc, i, 0x1000 + i * 0x100, 128, F_WRITE);
      publish(img, rx, size, [0, 1, 2, 3, 4, 5, 6, 7]);
    }],
    "indirect-across-regions": [BITS.v1 | BITS.indirect | BITS.log, [pkt(200)], (img) => {
      img.desc(rx.desc, 0, 0x600, 48, F_INDIRECT);
      img.desc(0x600, 0, 0xff00, 200, F_WRITE | F_NEXT, 1); img.desc(0x600, 1, 0x2000, 64, F_WRITE | F_NEXT, 2); img.desc(0x600, 2, 0x3000, 64, F_WRITE);
      publish(img, rx, size, [0]);
    }],
    "gso-and-csum": [BITS.gso | BITS.guestCsum, [pkt(1000, { flags: 1, gso: 1, gsoSize: 500, csumStart: 34, csumOffset: 16 }), pkt(100, { flags: 1, csumStart: 20, csumOffset: 6 }), pkt(80, { gso: 0x85 })], (img) => {
      for (let i = 0; i < 4; i++) img.desc(rx.desc, i, 0x1000 + i * 0x800, 2048, F_WRITE);
      publish(img, rx, size, [0, 1, 2, 3]);
    }],
    "csum-in-software": [BITS.v1, [pkt(100, { flags: 1, csumStart: 20, csumOffset: 6 }), pkt(50, { flags: 1, csumStart: 60, csumOffset: 0 })], (img) => {
      for (let i = 0; i < 4; i++) img.desc(rx.desc, i, 0x1000 + i * 0x800, 2048, F_WRITE);
      publish(img, rx, size, [0, 1, 2, 3]);
    }],
  };
  for (const [name, [bits, pkts, build]] of Object.entries(cases)) {
    const img = new Img();
    build(img);
    const mask = Buffer.alloc(4);
    mask.writeUInt32LE(1);
    add("net_rx", name, Buffer.concat([ringConfig(3, bits), Buffer.from([pkts.length - 1]), ...pkts, mask, img.b]));
  }
}

// ---- blk: request queue 0 (size 8); requests of every type.
{
  const size = 8, q = ringLayout(0, size);
  const T = { in: 0, out: 1, flush: 4, getId: 8, discard: 11, writeZeroes: 13 };
  /** One request: header at hdrAt, data descs, status at statusAt; descs from index i. */
  const request = (img, table, i, type, sector, data, statusAt, hdrAt) => {
    img.u32(hdrAt, type); img.u32(hdrAt + 4, 0); img.u64(hdrAt + 8, sector);
    img.desc(table, i, hdrAt, 16, F_NEXT, i + 1);
    let k = i + 1;
    for (const d of data) { img.desc(table, k, d.addr, d.len, F_NEXT | (d.write ? F_WRITE : 0), k + 1); k++; }
    img.desc(table, k, statusAt, 1, F_WRITE);
    return k + 1;
  };
  const cases = {
    "read-write-flush-null": [0, 0, (img) => {
      let n = request(img, q.desc, 0, T.in, 0, [{ addr: 0x1000, len: 512, write: true }], 0x1f00, 0x800);
      n = request(img, q.desc, n, T.out, 8, [{ addr: 0x1200, len: 1024 }], 0x1f01, 0x810);
      request(img, q.desc, n, T.flush, 0, [], 0x1f02, 0x820);
      publish(img, q, size, [0, 3, 6]);
    }],
    "read-write-memfd": [BITS.log, 1, (img) => {
      let n = request(img, q.desc, 0, T.out, 1, [{ addr: 0x1000, len: 512 }, { addr: 0xfe00, len: 1024 }], 0x1f00, 0x800);
      n = request(img, q.desc, n, T.in, 1, [{ addr: 0x3000, len: 1536, write: true }], 0x1f01, 0x810);
      request(img, q.desc, n, T.flush, 0, [], 0x1f02, 0x820);
      publish(img, q, size, [0, 4, 6]);
    }],
    "get-id-discard-zeroes": [0, 1 | 4, (img) => {
      let n = request(img, q.desc, 0, T.getId, 0, [{ addr: 0x1000, len: 20, write: true }], 0x1f00, 0x800);
      img.u64(0x1100, 16); img.u32(0x1108, 8); img.u32(0x110c, 0);
      n = request(img, q.desc, n, T.discard, 0, [{ addr: 0x1100, len: 16 }], 0x1f01, 0x810);
      img.u64(0x1120, 32); img.u32(0x1128, 8); img.u32(0x112c, 1);
      n = request(img, q.desc, n, T.writeZeroes, 0, [{ addr: 0x1120, len: 16 }], 0x1f02, 0x820);
      request(img, q.desc, n, 99, 0, [], 0x1f03, 0x830);
      publish(img, q, size, [0, 3, 6, 9 % size]);
    }],
    "indirect-read": [BITS.indirect, 0, (img) => {
      img.desc(q.desc, 0, 0x600, 48, F_INDIRECT);
      request(img, 0x600, 0, T.in, 4, [{ addr: 0x1000, len: 512, write: true }], 0x1f00, 0x800);
      publish(img, q, size, [0]);
    }],
    "readonly-and-bad": [0, 2, (img) => {
      let n = request(img, q.desc, 0, T.out, 0, [{ addr: 0x1000, len: 512 }], 0x1f00, 0x800);
      n = request(img, q.desc, n, T.in, 0xffffffff, [{ addr: 0x1000, len: 512, write: true }], 0x1f01, 0x810);
      img.desc(q.desc, n, 0x900, 16, 0);  // no status byte: breaks the queue
      publish(img, q, size, [0, 3, n]);
    }],
  };
  for (const [name, [bits, devBits, build]] of Object.entries(cases)) {
    const img = new Img();
    build(img);
    add("blk", name, Buffer.concat([ringConfig(3, bits), Buffer.from([devBits]), img.b]));
  }
}

// ---- inflight: the area a front-end hands back, then the worker's marks.
{
  const area = (nq, qsize, fill) => {
    const per = (16 + 16 * qsize + 63) & ~63;
    const b = Buffer.alloc(per * nq);
    for (let q = 0; q < nq; q++) fill(b, q * per);
    return b;
  };
  const op = (kind, q, v, extra) => {
    const b = Buffer.alloc(extra === undefined ? 4 : 6);
    b[0] = kind; b[1] = q; b.writeUInt16LE(v, 2);
    if (extra !== undefined) b.writeUInt16LE(extra, 4);
    return b;
  };
  const used = (b, o, qsize, marks) => {
    b.writeUInt16LE(1, o + 8); b.writeUInt16LE(qsize, o + 10);
    for (const m of marks) { b[o + 16 + 16 * m] = 1; b.writeBigUInt64LE(BigInt(m + 1), o + 16 + 16 * m + 8); }
  };
  add("inflight", "one-queue-two-pending", Buffer.concat([Buffer.from([1, 3, 0, 0]), area(1, 8, (b, o) => used(b, o, 8, [2, 3])),
    op(3, 0, 5), op(0, 0, 2), op(0, 0, 3), op(1, 0, 2), op(2, 0, 6), op(1, 0, 3), op(2, 0, 7)]));
  add("inflight", "fresh-zero-area", Buffer.concat([Buffer.from([2, 4, 0, 1]), area(2, 16, () => {}),
    op(0, 1, 15), op(1, 1, 15), op(0, 0, 16), op(2, 1, 1)]));
  add("inflight", "bad-version", Buffer.concat([Buffer.from([1, 3, 0, 0]), area(1, 8, (b, o) => b.writeUInt16LE(2, o + 8))]));
  add("inflight", "bad-flag", Buffer.concat([Buffer.from([1, 3, 0, 0]), area(1, 8, (b, o) => { used(b, o, 8, []); b[o + 16 + 16 * 5] = 7; })]));
  add("inflight", "frontend-writes-body", Buffer.concat([Buffer.from([1, 3, 0, 0]), area(1, 8, (b, o) => used(b, o, 8, [1])),
    op(4, 0, 16 + 16 * 4, 1), op(0, 0, 4), op(3, 0, 2)]));
  add("inflight", "wrong-size", Buffer.concat([Buffer.from([1, 3, 0xff, 0]), area(1, 8, (b, o) => used(b, o, 8, []))]));
}

// ---- dirty_log: marks against the model.
{
  const op = (kind, gpa, len) => { const b = Buffer.alloc(17); b[0] = kind; b.writeBigUInt64LE(BigInt(gpa), 1); b.writeBigUInt64LE(BigInt(len), 9); return b; };
  const hdr = (bytes, off) => { const b = Buffer.alloc(3); b.writeUInt16LE(bytes - 1, 0); b[2] = off; return b; };
  add("dirty_log", "marks-in-and-past", Buffer.concat([hdr(4, 0), op(0, 0, 1), op(0, 0x1fff, 2), op(0, 0x1e000, 0x10000), op(0, 0xfffffffffffff000n, 0x2000)]));
  add("dirty_log", "mark-host", Buffer.concat([hdr(16, 8), op(1, 0xfff0, 0x40), op(1, 0x12345, 0x100000), op(2, 3, 10)]));
  add("dirty_log", "zero-and-huge", Buffer.concat([hdr(1, 255), op(0, 0x5000, 0), op(0, 0, 0xffffffffffffffffn), op(1, 0, 0)]));
}

// ---- mem_table: add, translate, rings, remove.
{
  const addOp = (gpa, uva, size, off) => { const b = Buffer.alloc(25); b[0] = 0; b.writeBigUInt64LE(BigInt(gpa), 1); b.writeBigUInt64LE(BigInt(uva), 9); b.writeUInt32LE(size, 17); b.writeUInt32LE(off, 21); return b; };
  const rmIdx = (i) => Buffer.from([1, i]);
  const rm = (gpa, size, uva) => { const b = Buffer.alloc(25); b[0] = 2; b.writeBigUInt64LE(BigInt(gpa), 1); b.writeBigUInt64LE(BigInt(size), 9); b.writeBigUInt64LE(BigInt(uva), 17); return b; };
  const tr = (a, len, max) => { const b = Buffer.alloc(18); b[0] = 3; b.writeBigUInt64LE(BigInt(a), 1); b.writeBigUInt64LE(BigInt(len), 9); b[17] = max; return b; };
  const rings = (log2, d, a, u) => { const b = Buffer.alloc(26); b[0] = 4; b[1] = log2; b.writeBigUInt64LE(BigInt(d), 2); b.writeBigUInt64LE(BigInt(a), 10); b.writeBigUInt64LE(BigInt(u), 18); return b; };
  add("mem_table", "two-regions-split", Buffer.concat([addOp(0, 0x7f0000000000, 0x10000, 0), addOp(0x10000, 0x7f1000000000, 0x8000, 0x10000),
    tr(0xff00, 0x200, 4), tr(0xff00, 0x200, 1), tr(0x7f0000000100, 16, 1), rings(4, 0x7f0000000000, 0x7f0000001000, 0x7f0000002000),
    rmIdx(1), tr(0xff00, 0x200, 4), rm(0, 0x10000, 0x7f0000000000)]));
  add("mem_table", "refusals", Buffer.concat([addOp(0, 0x1000, 0, 0), addOp(0xfffffffffffff000n, 0, 0x2000, 0), addOp(0, 0, 0x1000, 0x100000),
    addOp(0x1000, 0x100000, 0x3000, 0x1000), addOp(0x2000, 0x200000, 0x1000, 0), addOp(0x9000, 0x101000, 0x1000, 0), rm(1, 2, 3)]));
  add("mem_table", "rings-then-swap", Buffer.concat([addOp(0x100000, 0x5000000, 0x20000, 0), rings(8, 0x5000000, 0x5010000, 0x5011000),
    addOp(0, 0x6000000, 0x1000, 0x20000), rmIdx(0), rings(15, 0x5000000, 0x5000000, 0x5000000)]));
}

const out = process.argv[2];
if (!out) { console.error("usage: node seeds.mjs OUTDIR"); process.exit(2); }
for (const [target, set] of Object.entries(seeds)) {
  const dir = path.join(out, target);
  mkdirSync(dir, { recursive: true });
  for (const name of set.names) writeFileSync(path.join(dir, name), set[name]);
}
console.log(`seeds written to ${out}: ${Object.entries(seeds).map(([t, s]) => `${t} ${s.names.length}`).join(", ")}`);
