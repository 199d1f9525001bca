// Interop with QEMU's vhost-user-net front-end (its own message order: SET_VRING_ENABLE many
// times before anything is configured, LOG_SHMFD/… offered, rings started twice): a Linux
// guest's virtio-net on one VF pings across our L2 switch to DPDK testpmd in icmpecho mode on
// another VF. Both front-ends are real; only the back-end is ours.
import test from "ava";
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
