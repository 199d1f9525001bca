// Hostile virtio-blk requests on the attacker blk VF's request queue, written into guest
// memory by a front-end that completed a normal handshake (the project's blk driver, with
// its load generator idle). A malformed request is completed with IOERR or UNSUPP in its
// status byte; a request whose status byte cannot be written, or a structurally broken ring,
// stops that queue only, with a log line. Nothing reaches the disk file.
import { BLK_WANT_FEATURES, connectBlk, type BlkFrontend } from "@vhostd/frontend";
import { VirtioFeatureBit as F, bit } from "@vhostd/proto";
import { waitFor } from "../harness/daemon.js";
import { BLK_DISK_BYTES, VF_BLK, type HostileWorld } from "../harness/hostile_world.js";
import { F_INDIRECT, F_NEXT, F_WRITE, RingWriter, descBytes, type Desc } from "../harness/ring_writer.js";
import { expect, expectQueueBroken, type HostileCase } from "./case.js";

const MEM = 64 << 20;
const SECTORS = BigInt(BLK_DISK_BYTES / 512);
const T_IN = 0;
const T_OUT = 1;
const T_FLUSH = 4;
const T_DISCARD = 11;
const T_WRITE_ZEROES = 13;
const S_OK = 0;

class BlkAttacker {
  private constructor(
    readonly fe: BlkFrontend,
    readonly ring: RingWriter,
  ) {}

  static async open(w: HostileWorld): Promise<BlkAttacker> {
    // INDIRECT_DESC on top of what the driver asks for, so indirect tables are judged on their contents.
    const fe = await connectBlk(w.blkSocket, { connectTimeoutMs: 10_000, memSize: MEM, queueSize: 256, wantFeatures: BLK_WANT_FEATURES | bit(F.RING_INDIRECT_DESC) });
    await fe.handshake();
    return new BlkAttacker(fe, new RingWriter(fe.device, fe.device.ring(0), fe.queueSize));
  }

  get mem() {
    return this.ring.mem;
  }

  /** The k-th 64 KiB block of the last 32 MiB of guest memory. */
  at(k: number): bigint {
    return this.mem.scratch(32 << 20) + BigInt(k) * 65536n;
  }

  header(at: bigint, type: number, sector: bigint): void {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(type, 0);
    h.writeBigUInt64LE(sector & ((1n << 64n) - 1n), 8);
    this.mem.write(at, h);
  }

  /** Where requests put their status byte; 0xff until the device writes it. */
  get status(): bigint {
    return this.at(0) + 4096n;
  }
}

let attacker: BlkAttacker | null = null;

async function session(w: HostileWorld): Promise<BlkAttacker> {
  if (!attacker || !attacker.fe.connected) attacker = await BlkAttacker.open(w);
  return attacker;
}

export function closeBlkAttacker(): void {
  attacker?.fe.close();
  attacker = null;
}

const d = (addr: bigint, len: number, flags = 0, next = 0): Desc => ({ addr, len, flags, next });
const R = 0;
const W = F_WRITE;

/** A request of descriptors `ds` (linked in order) starting at descriptor `base`; returns the head. */
function chain(a: BlkAttacker, base: number, ds: Array<[bigint, number, number]>): number {
  a.ring.writeDesc(base, ...ds.map(([addr, len, flags], k) => d(addr, len, flags | (k < ds.length - 1 ? F_NEXT : 0), base + k + 1)));
  return base;
}

interface RequestSpec {
  name: string;
  /** Status the device must write: "error" = IOERR or UNSUPP, or one exact value. */
  expect: "error" | number;
  build(a: BlkAttacker, base: number): number;
}

const hdr = (a: BlkAttacker, type: number, sector = 0n) => (a.header(a.at(0), type, sector), a.at(0));
const data = (a: BlkAttacker) => a.at(1);

const requests: RequestSpec[] = [
  { name: "a header of 8 bytes", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN), 8, R], [a.status, 1, W]]) },
  { name: "the header in a device-writable descriptor", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN), 16, W], [data(a), 512, W], [a.status, 1, W]]) },
  { name: "a read into a device-readable buffer", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN), 16, R], [data(a), 512, R], [a.status, 1, W]]) },
  { name: "a write from a device-writable buffer", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_OUT), 16, R], [data(a), 512, W], [a.status, 1, W]]) },
  { name: "a read of 513 bytes", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN), 16, R], [data(a), 513, W], [a.status, 1, W]]) },
  { name: "a read at the capacity", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN, SECTORS), 16, R], [data(a), 512, W], [a.status, 1, W]]) },
  { name: "a read at sector 2^64-1", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN, (1n << 64n) - 1n), 16, R], [data(a), 512, W], [a.status, 1, W]]) },
  { name: "a read at sector 2^55 (bytes overflow 64 bits)", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN, 1n << 55n), 16, R], [data(a), 512, W], [a.status, 1, W]]) },
  { name: "a read crossing the capacity", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN, SECTORS - 1n), 16, R], [data(a), 1024, W], [a.status, 1, W]]) },
  { name: "a write beyond the capacity", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_OUT, SECTORS + 8n), 16, R], [data(a), 512, R], [a.status, 1, W]]) },
  { name: "request type 0x1234", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, 0x1234), 16, R], [a.status, 1, W]]) },
  { name: "request type 2 (legacy SCSI)", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, 2), 16, R], [a.status, 1, W]]) },
  { name: "request type 0xffffffff", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, 0xffff_ffff), 16, R], [a.status, 1, W]]) },
  {
    name: "DISCARD that was not negotiated",
    expect: "error",
    build: (a, i) => {
      const seg = Buffer.alloc(16);
      seg.writeBigUInt64LE(0n, 0);
      seg.writeUInt32LE(8, 8);
      a.mem.write(data(a), seg);
      return chain(a, i, [[hdr(a, T_DISCARD), 16, R], [data(a), 16, R], [a.status, 1, W]]);
    },
  },
  {
    name: "WRITE_ZEROES that was not negotiated",
    expect: "error",
    build: (a, i) => {
      const seg = Buffer.alloc(16);
      seg.writeUInt32LE(8, 8);
      a.mem.write(data(a), seg);
      return chain(a, i, [[hdr(a, T_WRITE_ZEROES), 16, R], [data(a), 16, R], [a.status, 1, W]]);
    },
  },
  { name: "a data descriptor of 2 MiB (over SIZE_MAX)", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN), 16, R], [a.at(64), 2 << 20, W], [a.status, 1, W]]) },
  { name: "a zero-length data descriptor", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN), 16, R], [data(a), 0, W], [a.status, 1, W]]) },
  { name: "a readable descriptor after a writable one", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_OUT), 16, R], [data(a), 512, W], [data(a) + 512n, 512, R], [a.status, 1, W]]) },
  { name: "a read into memory outside the guest", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_IN), 16, R], [0xdead_0000_0000n, 512, W], [a.status, 1, W]]) },
  { name: "a write from a buffer straddling the end of memory", expect: "error", build: (a, i) => chain(a, i, [[hdr(a, T_OUT), 16, R], [a.mem.base + BigInt(a.mem.size) - 256n, 512, R], [a.status, 1, W]]) },
  { name: "FLUSH (the control: a valid request)", expect: S_OK, build: (a, i) => chain(a, i, [[hdr(a, T_FLUSH), 16, R], [a.status, 1, W]]) },
];

function requestCase(c: RequestSpec, k: number): HostileCase {
  return {
    area: "blk",
    name: `blk request: ${c.name}`,
    run: async (w) => {
      const a = await session(w);
      a.mem.write(a.status, Buffer.from([0xff]));
      const used = a.ring.usedIdx();
      a.ring.publish(c.build(a, (8 * k) % a.ring.size));
      await waitFor(() => a.ring.usedIdx() === ((used + 1) & 0xffff), 5000, "completion").catch(() => {
        closeBlkAttacker(); // whatever happened to the ring, the next case starts on a fresh one
        throw new Error(`no completion within 5 s (used index ${a.ring.usedIdx()}, was ${used})`);
      });
      const status = a.mem.read(a.status, 1)[0]!;
      if (c.expect === "error") expect(status === 1 || status === 2, `status ${status}, expected IOERR (1) or UNSUPP (2)`);
      else expect(status === c.expect, `status ${status}, expected ${c.expect}`);
    },
  };
}

interface BreakSpec {
  name: string;
  /** Writes what takes long to write (not timed); publish() then only links and kicks. */
  prepare?(a: BlkAttacker): void;
  publish(a: BlkAttacker): void;
}

const breaks: BreakSpec[] = [
  { name: "a request with no status descriptor", publish: (a) => a.ring.publish(chain(a, 0, [[hdr(a, T_IN), 16, R]])) },
  { name: "a read-only status descriptor", publish: (a) => a.ring.publish(chain(a, 0, [[hdr(a, T_FLUSH), 16, R], [a.status, 1, R]])) },
  { name: "a status byte outside guest memory", publish: (a) => a.ring.publish(chain(a, 0, [[hdr(a, T_FLUSH), 16, R], [0xdead_0000_0000n, 1, W]])) },
  { name: "descriptors looping", publish: (a) => (a.ring.writeDesc(0, d(hdr(a, T_IN), 16, F_NEXT, 1), d(data(a), 512, F_WRITE | F_NEXT, 0)), a.ring.publish(0)) },
  { name: "a next index past the ring", publish: (a) => (a.ring.writeDesc(0, d(hdr(a, T_IN), 16, F_NEXT, 0xfff0)), a.ring.publish(0)) },
  {
    name: "an indirect table inside an indirect table",
    publish: (a) => {
      a.mem.write(a.at(9), descBytes(d(hdr(a, T_FLUSH), 16, F_NEXT, 1), d(a.status, 1, F_WRITE)));
      a.mem.write(a.at(8), descBytes(d(a.at(9), 32, F_INDIRECT)));
      a.ring.writeDesc(0, d(a.at(8), 16, F_INDIRECT));
      a.ring.publish(0);
    },
  },
  { name: "an indirect table outside guest memory", publish: (a) => (a.ring.writeDesc(0, d(0xdead_0000_0000n, 64, F_INDIRECT)), a.ring.publish(0)) },
  {
    // 16 MiB of table (1M entries) where every entry leads to the next and the last to the
    // first: the walk must stop at what a chain may be, not at the table's end.
    name: "an indirect table of 1M entries looping through all of them",
    prepare: (a) => {
      const n = (16 << 20) / 16;
      const t = a.mem.scratch(32 << 20) - BigInt(16 << 20);
      const b = Buffer.alloc(16 * n);
      for (let k = 0; k < n; k++) {
        b.writeBigUInt64LE(data(a), 16 * k);
        b.writeUInt32LE(512, 16 * k + 8);
        b.writeUInt16LE(F_NEXT | F_WRITE, 16 * k + 12);
        b.writeUInt16LE((k + 1) % 0x10000, 16 * k + 14);
      }
      b.writeBigUInt64LE(hdr(a, T_IN), 0);
      b.writeUInt32LE(16, 8);
      b.writeUInt16LE(F_NEXT, 12);
      a.mem.write(t, b);
    },
    publish: (a) => {
      a.ring.writeDesc(0, d(a.mem.scratch(32 << 20) - BigInt(16 << 20), 16 << 20, F_INDIRECT));
      a.ring.publish(0);
    },
  },
  {
    // header + 130 data + status: longer than a request can be (header + SEG_MAX 126 + status)
    name: "130 data segments (over SEG_MAX)",
    publish: (a) => {
      const t = a.at(8);
      const ds: Desc[] = [d(hdr(a, T_IN), 16, F_NEXT, 1)];
      for (let k = 0; k < 130; k++) ds.push(d(data(a) + BigInt(512 * k), 512, F_WRITE | F_NEXT, k + 2));
      ds.push(d(a.status, 1, F_WRITE));
      a.mem.write(t, descBytes(...ds));
      a.ring.writeDesc(0, d(t, 16 * ds.length, F_INDIRECT));
      a.ring.publish(0);
    },
  },
  { name: "a head index past the ring", publish: (a) => a.ring.publish(50_000) },
  { name: "the avail index jumping by 1000", publish: (a) => (chain(a, 0, [[hdr(a, T_FLUSH), 16, R], [a.status, 1, W]]), a.ring.publish(0, 1000)) },
];

function breakCase(c: BreakSpec): HostileCase {
  return {
    area: "blk",
    name: `blk ring: ${c.name}`,
    run: async (w) => {
      const a = await session(w);
      try {
        c.prepare?.(a);
        await expectQueueBroken(w, VF_BLK, 0, a.ring, () => c.publish(a));
      } finally {
        closeBlkAttacker(); // the next case needs a working ring
      }
    },
  };
}

export function blkRequestCases(): HostileCase[] {
  return [...requests.map(requestCase), ...breaks.map(breakCase)];
}
