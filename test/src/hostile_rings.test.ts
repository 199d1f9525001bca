// Hostile front-end, datapath level: malformed descriptor chains written straight into guest
// memory on one VF's TX ring. Each is rejected (returned used with length 0, counted, logged
// with the VF and the reason), the engine keeps running, and a numbered stream between two
// other VFs loses, duplicates and corrupts nothing.
import test from "ava";
import { native } from "@vhostd/native";
import { FrontendDriver } from "@vhostd/frontend";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";

const PF = "0000:af:00.2";
const VF_H = "0000:af:04.5";
const VF_A = "0000:af:05.5";
const VF_B = "0000:af:06.5";

const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const HDR = 12;

interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

function descBytes(d: Desc): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(d.addr, 0);
  b.writeUInt32LE(d.len, 8);
  b.writeUInt16LE(d.flags, 12);
  b.writeUInt16LE(d.next, 14);
  return b;
}

/** Crafts chains on one TX ring the driver never runs itself, and publishes them. */
class RingWriter {
  private availIdx = 0;
  readonly ring;
  /** Scratch area for frames and indirect tables, far from the driver's own buffers. */
  readonly scratch: bigint;

  constructor(
    private readonly fe: FrontendDriver,
    readonly queue: number,
  ) {
    this.ring = fe.device.ring(queue);
    this.scratch = fe.device.memAddr + BigInt(fe.device.memSize) - 1024n * 1024n;
  }

  write(at: bigint, b: Buffer): void {
    this.fe.device.writeMem(at, b);
  }

  writeDesc(i: number, d: Desc): void {
    this.fe.device.writeMem(this.ring.desc + BigInt(16 * i), descBytes(d));
  }

  frame(at: bigint, len: number): void {
    const b = Buffer.alloc(len);
    b.fill(0xff, HDR, HDR + 6); // broadcast destination
    this.fe.device.writeMem(at, b);
  }

  /** Puts head `head` on the avail ring, bumps the index by `bump` and kicks. */
  publish(head: number, bump = 1): void {
    const size = this.fe.queueSize;
    const slot = Buffer.alloc(2);
    slot.writeUInt16LE(head);
    this.fe.device.writeMem(this.ring.avail + 4n + BigInt(2 * (this.availIdx % size)), slot);
    this.availIdx = (this.availIdx + bump) & 0xffff;
    const idx = Buffer.alloc(2);
    idx.writeUInt16LE(this.availIdx);
    this.fe.device.writeMem(this.ring.avail + 2n, idx);
    native.eventFdWrite(this.ring.kickFd);
  }

  usedIdx(): number {
    return this.fe.device.readMem(this.ring.used + 2n, 2).readUInt16LE(0);
  }

  usedLen(slot: number): number {
    const size = this.fe.queueSize;
    return this.fe.device.readMem(this.ring.used + 4n + BigInt(8 * (slot % size)) + 4n, 4).readUInt32LE(0);
  }
}

interface ChainCase {
  name: string;
  reason: RegExp;
  /** Writes descriptors starting at index 0 and returns the head. */
  build(w: RingWriter): number;
}

const chainCases: ChainCase[] = [
  {
    name: "descriptor loop",
    reason: /loop|too long|chain/i,
    build: (w) => {
      w.frame(w.scratch, 64);
      w.writeDesc(0, { addr: w.scratch, len: 32, flags: F_NEXT, next: 1 });
      w.writeDesc(1, { addr: w.scratch + 32n, len: 32, flags: F_NEXT, next: 0 });
      return 0;
    },
  },
  {
    name: "zero-length descriptor",
    reason: /zero|length 0|len 0/i,
    build: (w) => {
      w.writeDesc(2, { addr: w.scratch, len: 0, flags: 0, next: 0 });
      return 2;
    },
  },
  {
    name: "huge descriptor",
    reason: /outside|memory|too (long|large)|exceed/i,
    build: (w) => {
      w.writeDesc(3, { addr: w.scratch, len: 0x7fff_ffff, flags: 0, next: 0 });
      return 3;
    },
  },
  {
    name: "address outside guest memory",
    reason: /outside|memory/i,
    build: (w) => {
      w.writeDesc(4, { addr: 0xdead_0000_0000n, len: 128, flags: 0, next: 0 });
      return 4;
    },
  },
  {
    name: "indirect table inside an indirect table",
    reason: /indirect/i,
    build: (w) => {
      const table = w.scratch + 4096n;
      const inner = w.scratch + 8192n;
      w.write(inner, descBytes({ addr: w.scratch, len: 64, flags: 0, next: 0 }));
      w.write(table, descBytes({ addr: inner, len: 16, flags: F_INDIRECT, next: 0 }));
      w.writeDesc(5, { addr: table, len: 16, flags: F_INDIRECT, next: 0 });
      return 5;
    },
  },
  {
    name: "device-writable descriptor on a TX ring",
    reason: /writ/i,
    build: (w) => {
      w.frame(w.scratch, 64);
      w.writeDesc(6, { addr: w.scratch, len: 64, flags: F_WRITE, next: 0 });
      return 6;
    },
  },
];

test.serial("malformed descriptor chains are dropped per chain and logged; other VFs are untouched", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_H, "-v", d.sock("h"), "--server"]);
    const aP = FrontendDriver.listen(d.sock("a"), { connectTimeoutMs: 10_000 });
    const bP = FrontendDriver.listen(d.sock("b"), { connectTimeoutMs: 10_000 });
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
    const [a, b] = await Promise.all([aP, bP]);
    const h = await FrontendDriver.connect(d.sock("h"), { connectTimeoutMs: 10_000 });
    drivers.push(a, b, h);
    await Promise.all([a.handshake(), b.handshake(), h.handshake()]);

    // Clean traffic between A and B for the whole test.
    b.device.startRx(0);
    a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: 512, ratePps: 20_000, streamId: 7 });
    await waitFor(() => b.device.stats(0).rxPackets > 1000, 10_000, "clean traffic");

    const w = new RingWriter(h, 1);
    for (const [i, c] of chainCases.entries()) {
      const before = d.logLines().length;
      const head = c.build(w);
      w.publish(head);
      await waitFor(() => w.usedIdx() === i + 1, 5000, `${c.name}: the chain to be returned`);
      t.is(w.usedLen(i), 0, `${c.name}: returned with length 0`);
      await waitFor(() => d.logLines().slice(before).some((l) => l.vf === VF_H && l.level >= 40), 3000, `${c.name}: a log line`).catch(() => {});
      const lines = d.logLines().slice(before).filter((l) => l.vf === VF_H && l.level >= 40);
      t.true(lines.some((l) => c.reason.test(`${l.msg}`)), `${c.name}: logged with the VF and why (got ${JSON.stringify(lines.map((l) => l.msg))})`);
      await sleep(1100); // events are rate-limited per queue
    }
    const info = await d.ok(["vf", "-i", VF_H]);
    const hq = info.device.queues[1];
    t.is(hq.errors, chainCases.length, "every malformed chain was counted");

    // A head index beyond the ring breaks only that queue.
    const before = d.logLines().length;
    w.publish(60_000);
    await waitFor(() => d.logLines().slice(before).some((l) => l.vf === VF_H && /broken|head|index/i.test(l.msg)), 5000, "queue-broken log line");
    t.pass("a head index beyond the ring is reported");

    a.device.stopTx(0);
    await sleep(300);
    const s = b.device.stats(0);
    // No back-pressure in virtio-net: a starved receiver loses frames, but only ones the engine
    // counted as dropped on its RX queue.
    const drops = (await d.ok(["vf", "-i", VF_B])).device.queues[0].drops;
    t.log({ stats: s, drops });
    t.is(s.rxPackets + drops, a.device.stats(0).txPackets, "every clean frame arrived or is a counted drop");
    t.is(s.rxLost, drops, "every lost frame is one the engine counted as dropped");
    t.is(s.rxDuplicated + s.rxCorrupted + s.rxReordered, 0, "the clean stream was untouched");
    t.is((await d.cli(["version"])).code, 0, "the daemon still answers RPC");
  } finally {
    for (const x of drivers) x.close();
    await d.stop();
  }
});
