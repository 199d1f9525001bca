// Hostile front-end, memory level: one VF's front-end ftruncate()s its guest memory (the memfd
// it sent with SET_MEM_TABLE) after the daemon mapped it, then kicks its TX ring so the engine
// touches pages that no longer exist (SIGBUS). The daemon lives on, logs the VF with the
// reason, and numbered streams between two other VFs lose, duplicate and corrupt nothing.
import test from "ava";
import fs from "node:fs";
import { native } from "@vhostd/native";
import { FrontendDriver } from "@vhostd/frontend";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";

const PF = "0000:af:00.2";
const VF_H = "0000:af:04.5";
const VF_A = "0000:af:05.5";
const VF_B = "0000:af:06.5";

test.serial("a front-end that truncates its guest memory costs only its own VF", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  const fds: number[] = [];
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_H, "-v", d.sock("h"), "--server"]);
    const aP = FrontendDriver.listen(d.sock("a"), { connectTimeoutMs: 10_000 });
    const bP = FrontendDriver.listen(d.sock("b"), { connectTimeoutMs: 10_000 });
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
    const [a, b] = await Promise.all([aP, bP]);
    const h = await FrontendDriver.connect(d.sock("h"), { connectTimeoutMs: 10_000, memSize: 16 << 20 });
    drivers.push(a, b, h);
    await Promise.all([a.handshake(), b.handshake(), h.handshake()]);

    // Clean numbered streams both ways between A and B for the whole test. Rates are modest on
    // purpose: these drivers share this process's CPUs with the truncation (freeing the pages
    // takes the kernel tens of ms on a loaded 2-vCPU box), and a receiver that cannot refill its
    // 256-slot RX ring in time loses frames to "ring full", which is not what this test is about.
    a.device.startRx(0);
    b.device.startRx(0);
    a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: 512, ratePps: 2_000, streamId: 7 });
    b.device.startTx(0, { dstMac: a.mac, srcMac: b.mac, frameSize: 256, ratePps: 1_000, streamId: 8 });
    await waitFor(() => b.device.stats(0).rxPackets > 400 && a.device.stats(0).rxPackets > 200, 10_000, "clean traffic");

    // The hostile VF's memory lives in this process too (the driver maps it): keep our own
    // handles on the memfd and the TX kick fd, then close the driver device (its thread stops
    // and its mapping goes) so that only the daemon touches the memory once it shrinks.
    const memFd = native.dupFd(h.device.memFd);
    const kick = native.dupFd(h.device.ring(1).kickFd);
    fds.push(memFd, kick);
    h.device.close();

    const before = d.logLines().length;
    if (!process.env.HM_SKIP) fs.ftruncateSync(memFd, 0);
    native.eventFdWrite(kick); // the engine reads the TX avail ring: SIGBUS in the daemon

    const line = await d.waitForLog(
      (l) => l.vf === VF_H && l.level >= 40 && /shrank under us \(SIGBUS at/.test(`${l.msg}`),
      10_000,
    ).catch(() => undefined);
    t.truthy(line, `a warning names ${VF_H} and why (log after the truncation: ${JSON.stringify(d.logLines().slice(before))})`);
    if (line) {
      t.log(line.msg);
      t.regex(line.msg, /^guest memory region 0x[0-9a-f]+\+0x[0-9a-f]+ shrank under us \(SIGBUS at guest 0x[0-9a-f]+\)/);
    }
    t.is(d.proc?.exitCode, null, "the daemon is alive");
    t.is(d.proc?.signalCode, null, "the daemon was not killed by a signal");
    t.is((await d.cli(["version"])).code, 0, "the daemon still answers RPC");
    // Kicking again after the queues failed touches nothing and logs nothing new.
    native.eventFdWrite(kick);

    await sleep(1000); // the clean streams keep running after the fault
    a.device.stopTx(0);
    b.device.stopTx(0);
    await sleep(300);
    const rxDrops = async (vf: string) => (await d.ok(["vf", "-i", vf])).device.queues[0].drops;
    for (const [name, tx, rx, rxVf] of [["A -> B", a, b, VF_B], ["B -> A", b, a, VF_A]] as const) {
      const s = rx.device.stats(0);
      const drops = await rxDrops(rxVf);
      t.log(name, `sent ${tx.device.stats(0).txPackets}`, s, `engine RX drops (ring full) ${drops}`);
      // A starved receiver may lose frames, but only ones the engine counted (no back-pressure in virtio-net).
      t.is(s.rxPackets + drops, tx.device.stats(0).txPackets, `${name}: every clean frame arrived or is a counted drop`);
      t.is(s.rxLost, drops, `${name}: every lost frame is a counted drop`);
      t.is(s.rxDuplicated + s.rxCorrupted + s.rxReordered, 0, `${name}: the clean stream was untouched`);
    }
    t.false(
      d.logLines().slice(before).some((l) => (l.vf === VF_A || l.vf === VF_B) && l.level >= 40),
      "nothing to warn about on the other VFs",
    );

    const hLines = d.logLines().slice(before).filter((l) => l.vf === VF_H && l.level >= 40);
    t.is(hLines.length, 1, `one warning for ${VF_H}, no misleading ring errors: ${JSON.stringify(hLines.map((l) => l.msg))}`);

    // The VF recovers with a new front-end and new memory (new memory table, fresh rings).
    h.close();
    const h2 = await FrontendDriver.connect(d.sock("h"), { connectTimeoutMs: 10_000 });
    drivers.push(h2);
    await h2.handshake();
    const dropsBefore = await rxDrops(VF_B); // the engine's counter is cumulative; startRx resets the driver's
    b.device.startRx(0);
    h2.device.startTx(0, { dstMac: b.mac, srcMac: h2.mac, frameSize: 128, count: 2000, ratePps: 20_000, streamId: 9 });
    let drops = 0;
    await waitFor(async () => (drops = (await rxDrops(VF_B)) - dropsBefore) + b.device.stats(0).rxPackets >= 2000, 10_000, "traffic from the reconnected VF");
    const s = b.device.stats(0);
    t.is(s.rxLost, drops, "the new session's stream lost only counted drops");
    t.is(s.rxDuplicated + s.rxCorrupted, 0, "the new session's stream is clean");
    t.is((await d.cli(["version"])).code, 0);
  } finally {
    for (const x of drivers) x.close();
    for (const fd of fds) native.closeFd(fd);
    await d.stop();
  }
});
