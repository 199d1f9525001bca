// Hostile descriptor chains on the attacker net VF's TX ring, written into guest memory by a
// front-end that completed a normal handshake. A malformed chain is returned to the driver
// (used) and counted in the queue's `errors`; a structurally broken ring (a head index past
// the ring, an avail index that jumps) stops that queue only, with a log line.
import { FrontendDriver } from "@vhostd/frontend";
import { waitFor } from "../harness/daemon.js";
import { VF_NET, type HostileWorld } from "../harness/hostile_world.js";
import { F_INDIRECT, F_NEXT, F_WRITE, RingWriter, descBytes, type Desc } from "../harness/ring_writer.js";
import { expect, expectQueueBroken, type HostileCase } from "./case.js";

const TXQ = 1;
const HDR = 12; // virtio-net header with MRG_RXBUF / VERSION_1
const MEM = 128 << 20;
const U64 = 1n << 64n;

/** The attacker's connection, kept across cases until one of them breaks its ring. */
class NetAttacker {
  private constructor(
    readonly fe: FrontendDriver,
    readonly ring: RingWriter,
  ) {}

  static async open(w: HostileWorld): Promise<NetAttacker> {
    const fe = await FrontendDriver.connect(w.netSocket, { connectTimeoutMs: 10_000, memSize: MEM });
    await fe.handshake();
    return new NetAttacker(fe, new RingWriter(fe.device, fe.device.ring(TXQ), fe.queueSize));
  }

  get mem() {
    return this.ring.mem;
  }

  /** Scratch buffers far from the rings: `at(k)` is the k-th 64 KiB block of the last 32 MiB. */
  at(k: number): bigint {
    return this.mem.scratch(32 << 20) + BigInt(k) * 65536n;
  }

  frame(at: bigint, len: number): void {
    const b = Buffer.alloc(len);
    b.fill(0xff, HDR, HDR + 6); // broadcast: were it taken, every port would see it
    this.mem.write(at, b);
  }
}

let attacker: NetAttacker | null = null;

async function session(w: HostileWorld): Promise<NetAttacker> {
  if (!attacker || !attacker.fe.connected) attacker = await NetAttacker.open(w);
  return attacker;
}

/** Drops the attacker's connection (after a case broke its ring, or at the end). */
export function closeNetAttacker(): void {
  attacker?.fe.close();
  attacker = null;
}

interface ChainSpec {
  name: string;
  /** Writes what takes long to write (not timed). */
  prepare?(a: NetAttacker): void;
  /** Writes the chain (descriptors from index `base`) and returns its head. */
  build(a: NetAttacker, base: number): number;
}

const d = (addr: bigint, len: number, flags = 0, next = 0): Desc => ({ addr, len, flags, next });

const chains: ChainSpec[] = [
  { name: "two descriptors looping", build: (a, i) => (a.frame(a.at(0), 64), a.ring.writeDesc(i, d(a.at(0), 32, F_NEXT, i + 1), d(a.at(0) + 32n, 32, F_NEXT, i)), i) },
  { name: "a descriptor that is its own next", build: (a, i) => (a.frame(a.at(0), 64), a.ring.writeDesc(i, d(a.at(0), 64, F_NEXT, i)), i) },
  { name: "three descriptors looping", build: (a, i) => (a.frame(a.at(0), 96), a.ring.writeDesc(i, d(a.at(0), 32, F_NEXT, i + 1), d(a.at(0) + 32n, 32, F_NEXT, i + 2), d(a.at(0) + 64n, 32, F_NEXT, i)), i) },
  { name: "next index equal to the ring size", build: (a, i) => (a.frame(a.at(0), 64), a.ring.writeDesc(i, d(a.at(0), 64, F_NEXT, a.ring.size)), i) },
  { name: "next index 0xffff", build: (a, i) => (a.frame(a.at(0), 64), a.ring.writeDesc(i, d(a.at(0), 64, F_NEXT, 0xffff)), i) },
  { name: "a lone zero-length descriptor", build: (a, i) => (a.ring.writeDesc(i, d(a.at(0), 0)), i) },
  { name: "a zero-length descriptor mid-chain", build: (a, i) => (a.frame(a.at(0), 64), a.ring.writeDesc(i, d(a.at(0), 32, F_NEXT, i + 1), d(a.at(0), 0, F_NEXT, i + 2), d(a.at(0) + 32n, 32)), i) },
  { name: "length 0x7fffffff", build: (a, i) => (a.ring.writeDesc(i, d(a.at(0), 0x7fff_ffff)), i) },
  { name: "length 0xffffffff", build: (a, i) => (a.ring.writeDesc(i, d(a.at(0), 0xffff_ffff)), i) },
  { name: "address just past guest memory", build: (a, i) => (a.ring.writeDesc(i, d(a.mem.base + BigInt(a.mem.size), 64)), i) },
  { name: "address far outside guest memory", build: (a, i) => (a.ring.writeDesc(i, d(0xdead_0000_0000n, 128)), i) },
  { name: "address that wraps past 2^64", build: (a, i) => (a.ring.writeDesc(i, d(U64 - 16n, 64)), i) },
  { name: "buffer straddling the end of guest memory", build: (a, i) => (a.ring.writeDesc(i, d(a.mem.base + BigInt(a.mem.size) - 16n, 64)), i) },
  { name: "guest address 0 (below every region)", build: (a, i) => (a.ring.writeDesc(i, d(0n, 64)), i) },
  {
    name: "indirect table inside an indirect table",
    build: (a, i) => {
      a.frame(a.at(1), 64);
      a.mem.write(a.at(3), descBytes(d(a.at(1), 64)));
      a.mem.write(a.at(2), descBytes(d(a.at(3), 16, F_INDIRECT)));
      a.ring.writeDesc(i, d(a.at(2), 16, F_INDIRECT));
      return i;
    },
  },
  { name: "indirect table of length 0", build: (a, i) => (a.ring.writeDesc(i, d(a.at(2), 0, F_INDIRECT)), i) },
  { name: "indirect table length not a multiple of 16", build: (a, i) => (a.ring.writeDesc(i, d(a.at(2), 24, F_INDIRECT)), i) },
  { name: "indirect table outside guest memory", build: (a, i) => (a.ring.writeDesc(i, d(0xdead_0000_0000n, 64, F_INDIRECT)), i) },
  { name: "indirect table straddling the end of guest memory", build: (a, i) => (a.ring.writeDesc(i, d(a.mem.base + BigInt(a.mem.size) - 32n, 64, F_INDIRECT)), i) },
  { name: "indirect table of 2^28 entries (length 0xfffffff0)", build: (a, i) => (a.ring.writeDesc(i, d(a.at(2), 0xffff_fff0, F_INDIRECT)), i) },
  {
    name: "indirect flag together with NEXT",
    build: (a, i) => {
      a.frame(a.at(1), 64);
      a.mem.write(a.at(2), descBytes(d(a.at(1), 64)));
      a.ring.writeDesc(i, d(a.at(2), 16, F_INDIRECT | F_NEXT, i + 1), d(a.at(1), 64));
      return i;
    },
  },
  {
    name: "indirect entry whose next is past its table",
    build: (a, i) => {
      a.frame(a.at(1), 64);
      a.mem.write(a.at(2), descBytes(d(a.at(1), 32, F_NEXT, 5), d(a.at(1) + 32n, 32)));
      a.ring.writeDesc(i, d(a.at(2), 32, F_INDIRECT));
      return i;
    },
  },
  {
    name: "indirect entries looping",
    build: (a, i) => {
      a.frame(a.at(1), 64);
      a.mem.write(a.at(2), descBytes(d(a.at(1), 32, F_NEXT, 1), d(a.at(1) + 32n, 32, F_NEXT, 0)));
      a.ring.writeDesc(i, d(a.at(2), 32, F_INDIRECT));
      return i;
    },
  },
  {
    // 16 MiB of table: 1M entries, each pointing at the next (wrapping at 65536).
    // A walk bounded by the table's length instead of what a chain may be spins for ages.
    name: "indirect table of 1M entries looping through all of them",
    prepare: (a) => {
      const n = (16 << 20) / 16;
      const t = a.mem.scratch(32 << 20) - BigInt(16 << 20);
      const b = Buffer.alloc(16 * n);
      a.frame(a.at(1), 64);
      for (let k = 0; k < n; k++) {
        b.writeBigUInt64LE(a.at(1), 16 * k);
        b.writeUInt32LE(1, 16 * k + 8);
        b.writeUInt16LE(F_NEXT, 16 * k + 12);
        b.writeUInt16LE((k + 1) % 0x10000, 16 * k + 14);
      }
      a.mem.write(t, b);
    },
    build: (a, i) => {
      a.ring.writeDesc(i, d(a.mem.scratch(32 << 20) - BigInt(16 << 20), 16 << 20, F_INDIRECT));
      return i;
    },
  },
  { name: "device-writable descriptor on a TX ring", build: (a, i) => (a.frame(a.at(0), 64), a.ring.writeDesc(i, d(a.at(0), 64, F_WRITE)), i) },
  { name: "device-writable descriptor after a readable one on TX", build: (a, i) => (a.frame(a.at(0), 64), a.ring.writeDesc(i, d(a.at(0), 32, F_NEXT, i + 1), d(a.at(0) + 32n, 32, F_WRITE)), i) },
  { name: "frame shorter than the virtio-net header", build: (a, i) => (a.ring.writeDesc(i, d(a.at(0), 4)), i) },
  {
    name: "frame of 70000 bytes (over the largest frame)",
    build: (a, i) => {
      a.frame(a.at(4), 70_000);
      a.ring.writeDesc(i, d(a.at(4), 35_000, F_NEXT, i + 1), d(a.at(4) + 35_000n, 35_000));
      return i;
    },
  },
];

/** Chains go at descriptor 8*k so no two cases share descriptors. */
function chainCase(c: ChainSpec, k: number): HostileCase {
  return {
    area: "net",
    name: `net TX: ${c.name}`,
    run: async (w) => {
      const a = await session(w);
      const before = (await w.queue(VF_NET, TXQ)).errors ?? 0;
      const used = a.ring.usedIdx();
      c.prepare?.(a);
      const head = c.build(a, (8 * k) % a.ring.size);
      const t0 = Date.now();
      a.ring.publish(head);
      await waitFor(() => a.ring.usedIdx() === ((used + 1) & 0xffff), 5000, "the chain to be returned used").catch(() => {
        closeNetAttacker(); // whatever happened to the ring, the next case starts on a fresh one
        throw new Error(`the chain was not returned within 5 s (used index ${a.ring.usedIdx()}, was ${used})`);
      });
      const ms = Date.now() - t0;
      expect(ms < 2000, `returning one chain took ${ms} ms`);
      const after = (await w.queue(VF_NET, TXQ)).errors ?? 0;
      expect(after === before + 1, `queue errors went ${before} -> ${after}, expected +1`);
    },
  };
}

interface BreakSpec {
  name: string;
  publish(a: NetAttacker): void;
}

const breaks: BreakSpec[] = [
  { name: "a head index past the ring", publish: (a) => a.ring.publish(60_000) },
  { name: "a head index equal to the ring size", publish: (a) => a.ring.publish(a.ring.size) },
  { name: "the avail index jumping by ring size + 1", publish: (a) => (a.frame(a.at(0), 64), a.ring.writeDesc(0, d(a.at(0), 64)), a.ring.publish(0, a.ring.size + 1)) },
  { name: "the avail index jumping by 40000", publish: (a) => (a.frame(a.at(0), 64), a.ring.writeDesc(0, d(a.at(0), 64)), a.ring.publish(0, 40_000)) },
];

function breakCase(c: BreakSpec): HostileCase {
  return {
    area: "net",
    name: `net TX ring: ${c.name}`,
    run: async (w) => {
      const a = await session(w);
      try {
        await expectQueueBroken(w, VF_NET, TXQ, a.ring, () => c.publish(a));
      } finally {
        closeNetAttacker(); // the next case needs a working ring
      }
    },
  };
}

export function netRingCases(): HostileCase[] {
  return [...chains.map(chainCase), ...breaks.map(breakCase)];
}
