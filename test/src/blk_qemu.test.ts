// virtio-blk with a real front-end: a Linux guest's virtio_blk driver on QEMU's
// vhost-user-blk-pci, attached to our blk VF. The guest writes random data and reads it back,
// checks size, block sizes, serial and cache mode, flushes, discards; the host then checks its
// backing file holds exactly what the guest wrote and that the discarded range was freed.
import test from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Daemon } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Guest, commandOutput, shellCmdArgs, type GuestRun } from "./harness/qemu.js";

const PF = "0000:af:00.3";
const VF = "0000:af:05.1";
const MiB = 1 << 20;

function byTest(run: GuestRun, name: string): Record<string, any> {
  const r = run.results.find((x) => x.test === name);
  if (!r) throw new Error(`no ${name} result; serial tail:\n${run.output.slice(-3000)}`);
  return r;
}

function fileSha(file: string, off: number, len: number): string {
  const fd = fs.openSync(file, "r");
  const b = Buffer.alloc(len);
  fs.readSync(fd, b, 0, len, off);
  fs.closeSync(fd);
  return crypto.createHash("sha256").update(b).digest("hex");
}

test.serial("QEMU guest on our blk VF (client mode): random data round trip, size, serial, flush, discard, write-through", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64")) return;
  const d = await Daemon.start();
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    const disk = path.join(d.dir, "disk.raw");
    const added = await d.ok(["vf", "-a", VF, "-v", d.sock("blk"), "--disk", disk, "--disk-size", "64M"]);
    t.like(added.device, { type: "blk", disk, disk_size: 64 * MiB, readonly: false, direct: false });
    t.is(fs.statSync(disk).size, 64 * MiB, "the disk was created sparse with --disk-size");
    const run = await Guest.boot({
      // Our VF connects (client mode): QEMU listens.
      blk: [{ socket: d.sock("blk"), server: true }],
      test: "blkinfo,blkrandom,blkverify,blkdiscard,blkcache",
      args: { rmib: 16, roffset: 0, mib: 8, offset: 24, rounds: 2, seed: 5, dmib: 16, doffset: 40, coffset: 60 },
      logFile: path.join(d.dir, "guest.log"),
      timeoutMs: 200_000,
    });
    const info = await d.ok(["vf", "-i", VF]);
    t.log({ bootMs: run.bootMs, totalMs: run.totalMs, results: run.results.filter((r) => r.test !== "blkverify-round"), queues: info.device.queues });
    t.is(run.exitCode, 0);
    t.like(byTest(run, "blkinfo"), { ok: true, dev: "vda", sectors: (64 * MiB) / 512, logicalBlockSize: 512, ro: 0, serial: `vhostd-${VF}`, cacheType: "write back" });
    t.true(byTest(run, "blkinfo").discardMaxBytes > 0, "the guest sees DISCARD");
    const rnd = byTest(run, "blkrandom");
    t.true(rnd.ok, JSON.stringify(rnd));
    t.is(fileSha(disk, 0, 16 * MiB), rnd.sha256, "the backing file holds exactly the guest's random bytes");
    t.like(byTest(run, "blkverify"), { ok: true, rounds: 2, failed: 0 });
    t.like(byTest(run, "blkdiscard"), { ok: true, zeros: true });
    t.is(fileSha(disk, 40 * MiB, 16 * MiB), crypto.createHash("sha256").update(Buffer.alloc(16 * MiB)).digest("hex"), "the discarded range reads as zeros on the host");
    const allocated = fs.statSync(disk).blocks * 512;
    t.true(allocated < 26 * MiB, `allocated ${allocated} bytes: 16 MiB random + 8 MiB verify + 64 KiB; the 16 MiB discarded were freed`);
    t.like(byTest(run, "blkcache"), { ok: true, before: "write back", writeThrough: "write through", after: "write back" });
    const q0 = info.device.queues[0];
    t.true(q0.packets > 100 && q0.bytes > 48 * MiB, `requests served: ${q0.packets}, ${q0.bytes} bytes`);
    t.is(q0.errors, 0, "every request the guest sent was well-formed");
    t.regex(info.device.features, /^0x/);
    t.regex(d.log(), /inflight area created/, "QEMU negotiated INFLIGHT_SHMFD and asked for the area");
  } finally {
    await d.stop();
  }
});

test.serial("QEMU guest on a read-only O_DIRECT blk VF in server mode with 2 queues reads the host's data", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64")) return;
  const d = await Daemon.start();
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    const disk = path.join(d.dir, "ro.raw");
    const data = crypto.randomBytes(8 * MiB);
    fs.writeFileSync(disk, Buffer.concat([data, Buffer.alloc(24 * MiB)]));
    await d.ok(["vf", "-a", VF, "-v", d.sock("blk"), "--server", "-q", "2", "--disk", disk, "--readonly", "--direct"]);
    const listed = (await d.ok(["vf", "-l", PF])).devices[0];
    t.like(listed, { vf: VF, type: "blk", disk, disk_size: 32 * MiB, readonly: true, direct: true, queue_pairs: 2 });
    const run = await Guest.boot({
      blk: [{ socket: d.sock("blk"), server: false, numQueues: 2 }],
      test: "blkinfo,shell-cmd",
      ...{ args: { ...shellCmdArgs("dd if=/dev/vda bs=1M count=8 iflag=direct status=none | sha256sum; dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct status=none && echo WRITE-WORKED || echo WRITE-REFUSED") } },
      logFile: path.join(d.dir, "guest.log"),
      timeoutMs: 150_000,
    });
    const info = await d.ok(["vf", "-i", VF]);
    t.log({ bootMs: run.bootMs, results: run.results, features: info.device.features });
    t.is(run.exitCode, 0);
    t.like(byTest(run, "blkinfo"), { ok: true, sectors: (32 * MiB) / 512, ro: 1 });
    const out = commandOutput(run.output) ?? "";
    t.true(out.includes(crypto.createHash("sha256").update(data).digest("hex")), out);
    t.regex(out, /WRITE-REFUSED/);
    // The guest has powered off (the session reset): what it negotiated is in our log.
    const negotiated = fs.readFileSync(d.logFile, "utf8").split("\n").filter((l) => l.includes('"features negotiated"')).at(-1) ?? "";
    t.regex(negotiated, /[",]RO,/, "RO negotiated");
    t.regex(negotiated, /[",]MQ,/, "MQ negotiated");
    t.is(info.device.queues.length, 2);
    t.is(info.device.queues.reduce((s: number, q: { errors: number }) => s + q.errors, 0), 0);
  } finally {
    await d.stop();
  }
});

test.serial("blk VFs come back after kill -9 of vfe-vhostd with their disks; a vanished disk fails its VF instead of being re-created", async (t) => {
  const d = await Daemon.start();
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    const disk = path.join(d.dir, "a.raw");
    const gone = path.join(d.dir, "gone.raw");
    await d.ok(["vf", "-a", VF, "-v", d.sock("a"), "--server", "--disk", disk, "--disk-size", "8M", "--direct"]);
    await d.ok(["vf", "-a", "0000:af:06.1", "-v", d.sock("b"), "--server", "--disk", "null", "--disk-size", "1T", "-q", "4"]);
    await d.ok(["vf", "-a", "0000:af:07.1", "-v", d.sock("c"), "--server", "--disk", gone, "--readonly"]).catch(() => undefined); // refused: missing + read-only
    fs.writeFileSync(gone, Buffer.alloc(MiB));
    await d.ok(["vf", "-a", "0000:af:07.1", "-v", d.sock("c"), "--server", "--disk", gone, "--readonly"]);
    const before = (await d.ok(["vf", "-l", PF])).devices;
    await d.killVhostd();
    fs.rmSync(gone);
    await d.restartVhostd();
    const after = (await d.ok(["vf", "-l", PF])).devices as Array<Record<string, unknown>>;
    const pick = (v: Record<string, unknown>) => ({ vf: v.vf, disk: v.disk, disk_size: v.disk_size, readonly: v.readonly, direct: v.direct, queue_pairs: v.queue_pairs, socket_file: v.socket_file });
    t.deepEqual(after.map(pick), before.map(pick));
    t.like(after[0], { vf: VF, disk, disk_size: 8 * MiB, direct: true, state: "waiting" });
    t.like(after[1], { disk: "null", disk_size: 2 ** 40, queue_pairs: 4, state: "waiting" });
    t.like(after[2], { disk: gone, readonly: true, state: "failed" });
    t.regex(String(after[2]!.last_error), /gone\.raw/);
    t.false(fs.existsSync(gone), "restore did not re-create the vanished disk");
  } finally {
    await d.stop();
  }
});
