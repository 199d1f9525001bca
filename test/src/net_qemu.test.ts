// Interop with QEMU's vhost-user-net front-end (its own message order: SET_VRING_ENABLE many
// times before anything is configured, LOG_SHMFD/… offered, rings started twice): a Linux
// guest's virtio-net on one VF pings across our L2 switch to DPDK testpmd in icmpecho mode on
// another VF. Both front-ends are real; only the back-end is ours.
import test from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Daemon } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Guest } from "./harness/qemu.js";
import { Testpmd } from "./harness/testpmd.js";

const PF = "0000:af:00.2";
const VF_GUEST = "0000:af:04.5";
const VF_ECHO = "0000:af:05.5";
const GUEST_MAC = "52:54:00:12:34:56";

for (const ourSide of ["client", "server"] as const) {
  test.serial(`a QEMU guest pings through our switch to testpmd icmpecho (our VF in ${ourSide} mode)`, async (t) => {
    if (!needPeer(t, "qemu-system-x86_64") || !needPeer(t, "dpdk-testpmd")) return;
    const d = await Daemon.start();
    try {
      await d.ok(["mgmtpf", "-a", PF]);
      const mode = ourSide === "server" ? ["--server"] : [];
      await d.ok(["vf", "-a", VF_ECHO, "-v", d.sock("echo")]);
      const echo = await Testpmd.start({ socket: d.sock("echo"), server: true, mode: "icmpecho", logFile: path.join(d.dir, "echo.log"), lcores: "0@1,1@1" });
      await d.ok(["vf", "-a", VF_GUEST, "-v", d.sock("guest"), ...mode]);
      const run = await Guest.boot({
        // Our client mode connects to QEMU's listening socket, and the reverse.
        net: [{ socket: d.sock("guest"), server: ourSide === "client", mac: GUEST_MAC }],
        test: "netinfo,ping",
        args: { ip: "10.0.0.2/24", peer: "10.0.0.77", count: 20, carrier: 30 },
        logFile: path.join(d.dir, "guest.log"),
        timeoutMs: 150_000,
      });
      await echo.stop();
      const netinfo = run.results.find((r) => r.test === "netinfo");
      const ping = run.results.find((r) => r.test === "ping");
      const info = await d.ok(["vf", "-i", VF_GUEST]);
      t.log({ netinfo, ping, bootMs: run.bootMs, guest: info.device.queues });
      t.truthy(netinfo?.ok, "the guest saw its virtio-net device");
      t.is(String(netinfo?.mac).toLowerCase(), GUEST_MAC);
      t.is(Number(netinfo?.carrier), 1, "link up");
      t.truthy(ping, "the ping test ran");
      t.true(ping!.received >= ping!.sent - 1, `ping replies came back through the switch (${ping!.received}/${ping!.sent})`);
      t.true(info.device.queues[0].packets > 0 && info.device.queues[1].packets > 0, "frames crossed both of the guest's rings");
      t.is(info.device.queues[1].errors, 0, "the guest's chains were all well-formed");
    } finally {
      await d.stop();
    }
  });
}

test.serial("a QEMU guest reaches the host's own network stack through the PF's TAP uplink", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64") || !needPeer(t, "ip")) return;
  const tap = `vht${process.pid % 100000}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-tapcfg-"));
  const config = path.join(dir, "vhostd.json");
  fs.writeFileSync(config, JSON.stringify({ pfs: [{ dev: PF, type: "net", firstVfOffset: 35, uplink: { tap } }] }));
  const d = await Daemon.start({ args: ["--config", config] });
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    // The daemon created the TAP and brought it up; the host side gets an address like a bridge port would.
    execFileSync("ip", ["addr", "add", "10.0.9.1/24", "dev", tap]);
    await d.ok(["vf", "-a", VF_GUEST, "-v", d.sock("guest")]);
    const run = await Guest.boot({
      net: [{ socket: d.sock("guest"), server: true, mac: GUEST_MAC }],
      test: "ping",
      args: { ip: "10.0.9.2/24", peer: "10.0.9.1", count: 10, carrier: 30 },
      logFile: path.join(d.dir, "guest.log"),
      timeoutMs: 150_000,
    });
    const ping = run.results.find((r) => r.test === "ping");
    t.log({ ping });
    t.truthy(ping, "the ping test ran");
    t.true(ping!.received >= ping!.sent - 1, `the host answered through the TAP (${ping!.received}/${ping!.sent})`);
    const fdb = execFileSync("ip", ["neigh", "show", "dev", tap], { encoding: "utf8" });
    t.regex(fdb.toLowerCase(), new RegExp(GUEST_MAC), "the host learned the guest's MAC over the uplink");
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
