// A blk VF in HA mode: a QEMU guest runs a continuous write-then-verify loop on our VF while
// vfe-vhostd --ha is killed -9 again and again (the keeper runs the session: the guest must
// not notice), then while the keeper is killed -9 (vfe-vhostd adopts the session in place and
// resumes the rings at used->idx — requests complete in avail order, so nothing is lost or
// completed twice — and hands it back to the restarted keeper), then while both die at once
// (QEMU, listening, sees a disconnect and our client-mode VF reconnects after both restart
// from their journals). The guest must see no I/O error, every round must verify, every slot
// must hold its last pattern at the end, and the session must not reconnect before both die.
import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";
import { rng } from "./harness/ha_traffic.js";
import { needPeer } from "./harness/peers.js";
import { Guest } from "./harness/qemu.js";

const PF = "0000:af:00.3";
const VF = "0000:af:05.1";
const VHOSTD_KILLS = Number(process.env.VHOSTD_BLK_VHOSTD_KILLS ?? 12);
const KEEPER_KILLS = Number(process.env.VHOSTD_BLK_KEEPER_KILLS ?? 4);
const BOTH_KILLS = Number(process.env.VHOSTD_BLK_BOTH_KILLS ?? 2);
const SEED = Number(process.env.VHOSTD_HA_SEED ?? 20261122);
// The loop runs until the host writes VHOSTD-STOP at this MiB of the disk (beyond its slots),
// so it spans every kill however long restarts take on a loaded machine.
const STOP_MIB = 48;

test.serial("blk under --ha: a guest's write-verify loop sees no error while vfe-vhostd is killed -9 ≥ 10 times, the keeper -9 several times, and both", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64")) return;
  const d = await Daemon.start({ ha: true });
  let guest: Guest | undefined;
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF, "-v", d.sock("blk"), "--disk", path.join(d.dir, "disk.raw"), "--disk-size", "64M"]);
    guest = await Guest.start({
      blk: [{ socket: d.sock("blk"), server: true }],
      test: "blkloop",
      // lwt: the guest runs write-through, a choice every takeover must keep (mirrored record).
      args: { lwt: 1, lmib: 2, lslots: 8, lsecs: 1800, lstop: STOP_MIB },
      logFile: path.join(d.dir, "guest.log"),
      timeoutMs: 300_000,
    });
    await guest.waitForOutput(/VHOSTD-LOOP-START/, 90_000);
    const requests = async () => ((await d.ok(["vf", "-i", VF])).device.queues as Array<{ packets: number }>).reduce((s, q) => s + q.packets, 0);
    const progress = async (what: string) => {
      const r0 = await requests();
      await waitFor(async () => (await requests()) > r0 + 20, 10_000, `${what}: the guest's I/O goes on`);
    };
    await progress("before the kills");
    t.is((await d.ok(["vf", "-i", VF])).device.write_back, false, "the guest chose write-through");
    const rand = rng(SEED);
    const restartMs: number[] = [];
    for (let i = 0; i < VHOSTD_KILLS; i++) {
      await sleep(200 + Math.floor(rand() * 800));
      await d.killVhostd();
      const t0 = Date.now();
      await d.restartVhostd();
      restartMs.push(Date.now() - t0);
      await progress(`vfe-vhostd kill ${i}`);
      t.is((await d.ok(["vf", "-i", VF])).device.reconnects, 0, `vfe-vhostd kill ${i}: no reconnect`);
    }
    for (let i = 0; i < KEEPER_KILLS; i++) {
      await sleep(200 + Math.floor(rand() * 800));
      const countedBefore = await requests();
      await d.killKeeper();
      await progress(`keeper kill ${i}: vfe-vhostd runs the session`);
      t.is((await d.ok(["vf", "-i", VF])).device.reconnects, 0, `keeper kill ${i}: no reconnect after the takeover`);
      t.is((await d.ok(["vf", "-i", VF])).device.write_back, false, `keeper kill ${i}: vfe-vhostd kept write-through`);
      await sleep(Math.floor(rand() * 500));
      await d.startKeeper();
      await waitFor(async () => ((await d.keeperCall({ method: "list" })).vfs as string[]).includes(VF), 5000, `keeper kill ${i}: the keeper runs the VF again`);
      await progress(`keeper kill ${i}: back on the keeper`);
      t.true((await requests()) >= countedBefore, `keeper kill ${i}: the per-queue counts went on from where they were (shared engine file)`);
      t.is((await d.ok(["vf", "-i", VF])).device.write_back, false, `keeper kill ${i}: the keeper kept write-through on hand-back`);
    }
    const reconnectsBefore = (await d.ok(["vf", "-i", VF])).device.reconnects;
    t.is(reconnectsBefore, 0);
    // Both daemons die: nobody holds the connection, QEMU (listening) sees the disconnect; both
    // come back from their journals and our VF (client mode) connects again. QEMU resumes the
    // rings at used->idx, which with in-order completion is exactly where we stopped.
    const stallMs: number[] = [];
    for (let i = 0; i < BOTH_KILLS; i++) {
      await sleep(500 + Math.floor(rand() * 1000));
      await d.killKeeper();
      await d.killVhostd();
      const t0 = Date.now();
      await d.startKeeper();
      await d.restartVhostd();
      await progress(`both killed ${i}`);
      stallMs.push(Date.now() - t0);
      t.is((await d.ok(["vf", "-i", VF])).device.write_back, false, `both killed ${i}: the guest's write-through came back from the keeper's replica`);
    }
    const info = await d.ok(["vf", "-i", VF]);
    const disk = fs.openSync(path.join(d.dir, "disk.raw"), "r+");
    fs.writeSync(disk, Buffer.from("VHOSTD-STOP"), 0, 11, STOP_MIB * 1024 * 1024);
    fs.closeSync(disk);
    const run = await guest.wait();
    const loop = run.results.find((r) => r.test === "blkloop");
    t.log({ loop, failedRounds: run.results.filter((r) => r.test === "blkloop-round"), restartMs, stallMs, requests: info.device.queues.map((q: { packets: number }) => q.packets) });
    t.is(run.exitCode, 0);
    t.truthy(loop, "the loop reported");
    t.like(loop, { ok: true, stopped: true, failed: 0, ioErrors: 0, finalMismatches: 0 });
    t.true(loop!.rounds >= 10, `rounds: ${loop!.rounds}`);
    t.is(info.device.queues[0].errors, 0);
    t.notRegex(run.output, /I\/O error|blk_update_request|critical (target|medium) error/i, "the guest kernel logged no I/O error");
    // Both daemons died: QEMU handed the inflight area back on reconnect, and it was checked and used.
    if (BOTH_KILLS > 0) t.regex(d.keeperLog() + d.log(), /inflight area handed back/);
  } finally {
    guest?.kill();
    await d.stop();
  }
});
