// The recovery promises with a real VM: a QEMU guest's virtio-net on a VF of the HA pair pings
// DPDK testpmd (icmpecho) on another VF while
//  - the keeper is killed -9 (vfe-vhostd adopts its sessions in place, the keeper takes them
//    back) and restarted gracefully (SIGTERM: it hands over to vfe-vhostd first),
//  - vfe-vhostd is killed -9 (the keeper runs everything),
//  - then both are killed -9 and restarted (keeper first, as systemd orders them): QEMU's
//    vhost-user socket is a server, our VF its client, so the VF reconnects by itself, the guest
//    sees its link come back, and pings resume.
// Before the last phase the guest's VF must never have reconnected and no ping may be lost
// beyond one in flight at a kill; after it, only the pings inside the measured outage.
import test from "ava";
import path from "node:path";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Guest } from "./harness/qemu.js";
import { Testpmd } from "./harness/testpmd.js";

const PF = "0000:af:00.2";
const VF_GUEST = "0000:af:04.5";
const VF_ECHO = "0000:af:05.5";
const GUEST_MAC = "52:54:00:12:34:56";
const INTERVAL_S = 0.05;
const COUNT = 700;

test.serial("a QEMU guest keeps pinging through keeper kills, keeper restarts and vfe-vhostd kills; after both die it reconnects", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64") || !needPeer(t, "dpdk-testpmd")) return;
  const d = await Daemon.start({ ha: true });
  let guest: Guest | undefined;
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_ECHO, "-v", d.sock("echo")]);
    const echo = await Testpmd.start({ socket: d.sock("echo"), server: true, mode: "icmpecho", logFile: path.join(d.dir, "echo.log"), lcores: "0@1,1@1" });
    await d.ok(["vf", "-a", VF_GUEST, "-v", d.sock("guest")]);
    guest = await Guest.start({
      net: [{ socket: d.sock("guest"), server: true, mac: GUEST_MAC }],
      test: "ping",
      args: { ip: "10.0.0.2/24", peer: "10.0.0.77", count: COUNT, interval: INTERVAL_S, wait: 1, carrier: 30 },
      logFile: path.join(d.dir, "guest.log"),
      timeoutMs: 240_000,
    });
    await guest.waitForOutput(/VHOSTD-BOOTED/, 120_000);
    // Pings flow once the echo VF has seen some.
    await waitFor(async () => (await d.ok(["vf", "-i", VF_ECHO])).device.queues[1].packets > 20, 60_000, "pings reach the echo VF");
    const before = await d.ok(["vf", "-l", PF]);
    const events: string[] = [];
    for (let i = 0; i < 4; i++) {
      await sleep(700);
      await d.killKeeper();
      events.push(`keeper -9`);
      await sleep(300);
      await d.startKeeper();
      await sleep(700);
      await d.killVhostd();
      events.push(`vfe-vhostd -9`);
      await d.restartVhostd();
    }
    await sleep(500);
    await d.stopKeeper(); // graceful: hands every VF to vfe-vhostd
    events.push("keeper SIGTERM");
    await sleep(300);
    await d.startKeeper();
    await sleep(700);
    const mid = await d.ok(["vf", "-i", VF_GUEST]);
    t.is(mid.device.reconnects, 0, "the guest's VF never reconnected through keeper and vfe-vhostd kills");

    // Both die; systemd would restart the keeper first.
    const t0 = Date.now();
    await Promise.all([d.killKeeper(), d.killVhostd()]);
    events.push("both -9");
    await d.startKeeper();
    await d.restartVhostd();
    const echoed = (await d.ok(["vf", "-i", VF_ECHO])).device.queues[1].packets as number;
    await waitFor(async () => (await d.ok(["vf", "-i", VF_ECHO])).device.queues[1].packets > echoed + 5, 30_000, "pings flow again after both died");
    const outageMs = Date.now() - t0;
    const resumed = await d.ok(["vf", "-i", VF_GUEST]);
    // vf -i's last_avail_idx is the ring's live index, also after both daemons died: on the
    // guest's TX queue it moves exactly with the frames taken.
    await sleep(600);
    const later = await d.ok(["vf", "-i", VF_GUEST]);
    const [tx0, tx1] = [resumed.device.queues[1], later.device.queues[1]];
    t.true(later.device.queues[1].packets > tx0.packets, "the guest sent in between");
    t.is((tx1.last_avail_idx - tx0.last_avail_idx) & 0xffff, (tx1.packets - tx0.packets) & 0xffff, `TX last_avail_idx ${tx0.last_avail_idx} -> ${tx1.last_avail_idx} with packets ${tx0.packets} -> ${tx1.packets}`);
    const after = await d.ok(["vf", "-l", PF]); // while the guest still runs
    const run = await guest.wait();
    await echo.stop();
    const ping = run.results.find((r) => r.test === "ping");
    const info = await d.ok(["vf", "-i", VF_GUEST]);
    t.log({ events, ping, outageMs, stateAfterBoth: resumed.device.state, reconnects: info.device.reconnects });
    t.truthy(ping, "the guest's ping ran to its end");
    const lost = Number(ping!.sent) - Number(ping!.received);
    const allowed = Math.ceil(outageMs / 1000 / INTERVAL_S) + events.length;
    t.true(lost <= allowed, `lost ${lost} pings; the outage after both died explains at most ${allowed}`);
    // The restarted keeper opened the VF afresh from its replica: a new session on a new connection.
    t.is(resumed.device.state, "running", "after both died the VF connected to QEMU again by itself and runs");
    t.deepEqual(after, before, "vf -l identical after every kind of kill");
  } finally {
    guest?.kill();
    await d.stop();
  }
});
