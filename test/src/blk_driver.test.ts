// The project's blk driver (native BlkDriver behind connectBlk, the load generator of `pnpm
// bench --cases blkhost`) against two vhost-user-blk back-ends: qemu-storage-daemon (a peer
// nobody here wrote) and our blk VF. A mixed load completes without a failed request, and
// known blocks written through the driver are in the backing file when the host reads it (and
// blocks the host wrote come back through the driver): the requests really reach the file.
import test, { type ExecutionContext } from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { blkCapacity, connectBlk } from "@vhostd/frontend";
import { Daemon, sleep } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Qsd } from "./harness/qsd.js";

const PF = "0000:af:00.3";
const VF = "0000:af:05.1";
const MiB = 1 << 20;
const DISK_BYTES = 32 * MiB;
const BLOCK = 4096;

/** A block nobody else would write: its sector number and a tag, repeated. */
function pattern(sector: number, tag: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  const unit = Buffer.from(`${tag}:${sector.toString(16).padStart(12, "0")};`);
  for (let off = 0; off < BLOCK; off += unit.length) unit.copy(b, off);
  return b;
}

function readFileBlock(file: string, sector: number): Buffer {
  const fd = fs.openSync(file, "r");
  try {
    const b = Buffer.alloc(BLOCK);
    fs.readSync(fd, b, 0, BLOCK, sector * 512);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}

function writeFileBlock(file: string, sector: number, data: Buffer): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, data, 0, BLOCK, sector * 512);
  } finally {
    fs.closeSync(fd);
  }
}

function makeDisk(dir: string): string {
  const disk = path.join(dir, "disk.raw");
  fs.writeFileSync(disk, crypto.randomBytes(DISK_BYTES));
  return disk;
}

/**
 * Everything both back-ends must pass; sock is where the back-end listens, disk its file.
 * Returns how many requests failed (all of them past the end of the disk, on purpose).
 */
async function exercise(t: ExecutionContext, sock: string, disk: string, who: string): Promise<number> {
  const fe = await connectBlk(sock, { connectTimeoutMs: 10_000 });
  try {
    await fe.handshake();
    const d = fe.device;
    t.is(await blkCapacity(fe), BigInt(DISK_BYTES / 512), `${who}: capacity from GET_CONFIG`);
    const sectors = DISK_BYTES / 512;

    // Parameters are checked before anything runs.
    t.throws(() => d.startLoad({ queueDepth: 0, writePercent: 0, sectors }), { instanceOf: RangeError });
    t.throws(() => d.startLoad({ queueDepth: d.maxQueueDepth + 1, writePercent: 0, sectors }), { instanceOf: RangeError });
    t.throws(() => d.startLoad({ queueDepth: 1, writePercent: 101, sectors }), { instanceOf: RangeError });
    t.throws(() => d.startLoad({ queueDepth: 1, writePercent: 0, sectors: 7 }), { instanceOf: RangeError });
    t.throws(() => d.request("write", 0, Buffer.alloc(512)), { instanceOf: RangeError });
    t.throws(() => d.request("trim" as never, 0), { instanceOf: TypeError });

    // A short mixed load at QD 16.
    d.startLoad({ queueDepth: 16, writePercent: 50, sectors, seed: 7 });
    t.throws(() => d.request("read", 0), { message: /load is running/ }, "no one-shot request while a load runs");
    await sleep(1000);
    d.stopLoad();
    for (let i = 0; i < 500 && d.stats().inFlight > 0; i++) await sleep(10);
    const s = d.stats();
    t.log(`${who}: ${s.completed} requests in 1 s at QD 16 (${s.reads} reads, ${s.writes} writes), p50 ${s.p50Us} µs, p99 ${s.p99Us} µs`);
    t.true(s.completed > 0 && s.reads > 0 && s.writes > 0, `${who}: reads and writes completed`);
    t.is(s.errors, 0, `${who}: every request completed with status OK`);
    t.is(s.ringErrors, 0, `${who}: no ring misbehaviour`);
    t.is(s.inFlight, 0, `${who}: everything in flight completed after stopLoad`);
    t.false(s.broken);

    // Known blocks through the driver, checked in the file (first, middle, last block).
    const spots = [0, 8 * 1001, sectors - 8];
    for (const sec of spots) t.is(d.request("write", sec, pattern(sec, who)).status, 0, `${who}: write at sector ${sec}`);
    for (const sec of spots) {
      const r = d.request("read", sec);
      t.is(r.status, 0);
      t.true(r.data.equals(pattern(sec, who)), `${who}: sector ${sec} reads back through the driver`);
      t.true(readFileBlock(disk, sec).equals(pattern(sec, who)), `${who}: sector ${sec} is in the backing file`);
    }
    // And the other way: what the host puts in the file, the driver reads.
    const hostSec = 8 * 2002;
    writeFileBlock(disk, hostSec, pattern(hostSec, "host"));
    t.true(d.request("read", hostSec).data.equals(pattern(hostSec, "host")), `${who}: the driver reads what the host wrote`);
    t.is(d.stats().errors, 0);

    // Requests past the end fail at the device: counted as errors, the driver carries on.
    t.not(d.request("read", sectors).status, 0, `${who}: a read past the end fails`);
    d.clearStats();
    d.startLoad({ queueDepth: 4, writePercent: 0, sectors: 2 * sectors, seed: 9 });
    await sleep(300);
    d.stopLoad();
    for (let i = 0; i < 500 && d.stats().inFlight > 0; i++) await sleep(10);
    const e = d.stats();
    t.true(e.errors > 0 && e.errors < e.completed, `${who}: ${e.errors} of ${e.completed} requests (half past the end) failed and were counted`);
    t.false(e.broken);
    t.is(d.request("read", 0).status, 0, `${who}: the queue still works`);
    return e.errors + 1;
  } finally {
    fe.close();
  }
}

test.serial("blk driver against qemu-storage-daemon: mixed load without errors, writes land in the file, failures are counted", async (t) => {
  if (!needPeer(t, "qemu-storage-daemon")) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-blkdrv-"));
  const disk = makeDisk(dir);
  const sock = path.join(dir, "qsd.sock");
  const qsd = await Qsd.start({ disk, socket: sock, logFile: path.join(dir, "qsd.log") });
  try {
    await exercise(t, sock, disk, "qsd");
  } finally {
    await qsd.stop();
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test.serial("blk driver against our blk VF (server mode): mixed load without errors, writes land in the file, failures are counted", async (t) => {
  const d = await Daemon.start();
  try {
    const disk = makeDisk(d.dir);
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF, "-v", d.sock("blk"), "--server", "--disk", disk]);
    const failed = await exercise(t, d.sock("blk"), disk, "ours");
    const info = await d.ok(["vf", "-i", VF]);
    t.is(info.device.queues[0].errors, failed, "our VF counted exactly the requests past the end as errors");
  } finally {
    await d.stop();
  }
});
