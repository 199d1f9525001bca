// The control for the migration drill: QEMU alone, no vhost-user device and none of our code.
// The same guest, memory and disk loop as the drill (shared memfd, locked: the guest tooling's
// recipe) moves between two QEMUs six times with QEMU's own virtio-blk on a plain file, and
// must neither crash nor read back a wrong block. On our test hosts an unlocked shared-memory
// guest fails exactly this within 1-5 moves (docs/recovery.md, "Drilling live migration"): if
// this test goes red, a red drill says nothing about vhostd.
import test from "ava";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { sleep } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Guest, guestCrash, type GuestOptions } from "./harness/qemu.js";
import { Qmp } from "./harness/qmp.js";

const HOPS = 6;
const STOP_MIB = 48;

test.serial("QEMU alone moves a shared-memory guest 6 times while it writes its disk: no crash, every block right (the drill's control)", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64")) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), "vhostd-migctl-"));
  const disk = path.join(dir, "disk.raw");
  const fd = openSync(disk, "w");
  writeSync(fd, Buffer.alloc(1), 0, 1, 64 * 1024 * 1024 - 1);
  closeSync(fd);
  const opts = (name: string, incoming?: string): GuestOptions => ({
    test: "blkloop",
    args: { lmib: 2, lslots: 8, lsecs: 3600, lstop: STOP_MIB },
    memMb: 256,
    logFile: path.join(dir, `guest-${name}.log`),
    timeoutMs: 600_000,
    qmpSocket: path.join(dir, `qmp-${name}.sock`),
    qemuArgs: ["-drive", `file=${disk},if=virtio,format=raw,cache=writeback`, ...(incoming ? ["-incoming", incoming] : [])],
  });
  const guests: Guest[] = [];
  const qmps: Qmp[] = [];
  try {
    let guest = await Guest.start(opts("0"));
    guests.push(guest);
    let qmp = await Qmp.connect(guest.opts.qmpSocket!);
    qmps.push(qmp);
    await guest.waitForOutput(/VHOSTD-LOOP-START/, 300_000);
    const downtimes: number[] = [];
    for (let hop = 1; hop <= HOPS; hop++) {
      await sleep(300); // the loop dirties memory and disk between moves
      const uri = `unix:${path.join(dir, `mig-${hop}.sock`)}`;
      const next = await Guest.start(opts(String(hop), uri));
      guests.push(next);
      const qNext = await Qmp.connect(next.opts.qmpSocket!);
      qmps.push(qNext);
      downtimes.push((await qmp.migrate(uri, 300_000)).downtimeMs);
      await qmp.execute("quit").catch(() => undefined);
      guest.kill();
      await sleep(1500); // a wrong page shows within milliseconds of the resume
      t.is(guestCrash(next.output), null, `hop ${hop}: the guest kernel is intact after the move`);
      guest = next;
      qmp = qNext;
    }
    const w = openSync(disk, "r+");
    writeSync(w, Buffer.from("VHOSTD-STOP"), 0, 11, STOP_MIB * 1024 * 1024);
    closeSync(w);
    await guest.waitForOutput(/VHOSTD-RESULT \{"test":"blkloop",.*\}\n/, 300_000);
    const loop = guests.flatMap((g) => g.results).find((r) => r.test === "blkloop");
    t.log({ downtimesMs: downtimes, loop });
    t.like(loop, { ok: true, failed: 0, ioErrors: 0, finalMismatches: 0 });
    t.true((loop?.rounds ?? 0) > HOPS, "the disk loop ran across the moves");
  } finally {
    for (const q of qmps) q.close();
    for (const g of guests) g.kill();
    await Promise.all(guests.map((g) => g.wait().catch(() => undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
});
