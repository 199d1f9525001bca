// Live migration through our VFs with real QEMU on both ends. A guest on VF A pings DPDK
// testpmd (icmpecho) on a third VF. A second QEMU waits with -incoming on VF B, and QMP
// `migrate` moves the running guest A → B, then back to a fresh QEMU on A, and so on four
// times, while daemons of the HA pair are killed -9 during pre-copy and after a switch-over. QEMU refuses to
// migrate a vhost-user device whose back-end cannot log dirty pages, so a completed migration
// already shows LOG_ALL/LOG_SHMFD/SET_LOG_BASE at work. The guest then goes on pinging from its
// new home: its ping count proves the rings resumed where the source stopped (a wrong base
// would stall or corrupt them), and QEMU reports the downtime.
import test from "ava";
import path from "node:path";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Guest, type GuestOptions } from "./harness/qemu.js";
import { Qmp } from "./harness/qmp.js";
import { Testpmd } from "./harness/testpmd.js";

const PF = "0000:af:00.2";
const VF_A = "0000:af:04.5";
const VF_B = "0000:af:05.5";
const VF_ECHO = "0000:af:06.5";
const GUEST_MAC = "52:54:00:12:34:56";
const INTERVAL_S = 0.05;
const COUNT = 2400;


test.serial("live migration A → B → A → B → A with a pinging guest, vfe-vhostd and the keeper killed during pre-copy and after a switch-over: the guest keeps its peer, losses fit the downtimes", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64") || !needPeer(t, "dpdk-testpmd")) return;
  const d = await Daemon.start({ ha: true });
  const guests: Guest[] = [];
  const qmps: Qmp[] = [];
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_ECHO, "-v", d.sock("echo")]);
    const echo = await Testpmd.start({ socket: d.sock("echo"), server: true, mode: "icmpecho", logFile: path.join(d.dir, "echo.log"), lcores: "0@1,1@1" });
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
    const guestOpts = (sock: string, name: string, incoming?: string): GuestOptions => ({
      net: [{ socket: sock, server: true, mac: GUEST_MAC }],
      test: "ping",
      args: { ip: "10.0.0.2/24", peer: "10.0.0.77", count: COUNT, interval: INTERVAL_S, wait: 1, carrier: 30 },
      memMb: 256,
      logFile: path.join(d.dir, `guest-${name}.log`),
      timeoutMs: 300_000,
      qmpSocket: path.join(d.dir, `qmp-${name}.sock`),
      ...(incoming ? { qemuArgs: ["-incoming", incoming] } : {}),
    });
    // "dirty log set" lines of every process that ran sessions (keeper, or vfe-vhostd after a takeover).
    const dirtyLogsSet = () => (d.keeperLog() + d.log()).split("dirty log set").length - 1;
    const echoed = async () => (await d.ok(["vf", "-i", VF_ECHO])).device.queues[1].packets as number;

    const src = await Guest.start(guestOpts(d.sock("a"), "a1"));
    guests.push(src);
    await src.waitForOutput(/VHOSTD-BOOTED/, 120_000);
    await waitFor(async () => (await echoed()) > 20, 60_000, "pings reach the echo VF");

    const hops: Array<{ hop: string; downtimeMs: number; totalMs: number }> = [];
    let from = src;
    // QEMU serves one QMP client at a time: each guest's connection is made once and kept.
    let qFrom = await Qmp.connect(src.opts.qmpSocket!);
    qmps.push(qFrom);
    // Back and forth, with the daemons killed where it hurts most: vfe-vhostd and the keeper
    // during pre-copy (the dirty log must survive the keeper's takeover), vfe-vhostd right after
    // a switch-over.
    const plan = [
      { sock: "b", name: "b1", kill: "none" },
      { sock: "a", name: "a2", kill: "vhostd during pre-copy" },
      { sock: "b", name: "b2", kill: "keeper during pre-copy" },
      { sock: "a", name: "a3", kill: "vhostd after switch-over" },
    ] as const;
    for (const { sock, name, kill } of plan) {
      const uri = `unix:${path.join(d.dir, `mig-${name}.sock`)}`;
      const dst = await Guest.start(guestOpts(d.sock(sock), name, uri));
      guests.push(dst);
      const qDst = await Qmp.connect(dst.opts.qmpSocket!);
      qmps.push(qDst);
      const vf = sock === "a" ? VF_A : VF_B;
      await waitFor(async () => (await d.ok(["vf", "-i", vf])).device.connected === true, 30_000, `our VF ${vf} connected to the destination QEMU`);
      const before = await echoed();
      const logsBefore = dirtyLogsSet();
      const migrating = qFrom.migrate(uri);
      let statusAtKill: string | undefined;
      if (kill !== "none" && kill !== "vhostd after switch-over") {
        // Into pre-copy: the source's log is set up (its message burst is over) and QEMU copies RAM.
        await waitFor(() => dirtyLogsSet() > logsBefore, 20_000, "the source's dirty log set");
        await sleep(100);
        statusAtKill = (await qFrom.execute("query-migrate")).status;
        if (kill === "vhostd during pre-copy") {
          await d.killVhostd();
          await d.restartVhostd();
        } else {
          await d.killKeeper();
          await d.startKeeper();
        }
      }
      const m = await migrating;
      if (statusAtKill !== undefined) t.is(statusAtKill, "active", `${name}: the kill landed during pre-copy`);
      if (kill === "vhostd after switch-over") {
        await d.killVhostd();
        await d.restartVhostd();
      }
      hops.push({ hop: `-> ${name}${kill === "none" ? "" : `, ${kill}`}`, ...m });
      await qFrom.execute("quit").catch(() => undefined); // the source's job is done
      await waitFor(async () => (await echoed()) > before + 20, 60_000, `pings flow from the guest on ${name}`);
      from = dst;
      qFrom = qDst;
    }
    const run = await from.wait();
    await echo.stop();
    const ping = run.results.find((r) => r.test === "ping");
    t.log({ hops, ping });
    t.truthy(ping, `the migrated guest reported its pings; serial tail:\n${run.output.slice(-1500)}`);
    t.is(ping!.sent, COUNT);
    // A ping is lost only inside a switch-over (the guest is stopped) or while the switch has
    // not yet seen the guest's MAC on its new port: allow the downtime's worth plus 3 per hop.
    const allowed = hops.reduce((n, h) => n + Math.ceil(h.downtimeMs / (INTERVAL_S * 1000)) + 3, 0);
    t.true(ping!.sent - ping!.received <= allowed, `lost ${ping!.sent - ping!.received} pings, allowed ${allowed} by the downtimes ${hops.map((h) => h.downtimeMs).join(", ")} ms`);
    t.regex(d.log() + d.keeperLog(), /dirty log set/);
  } finally {
    for (const q of qmps) q.close();
    for (const g of guests) g.kill();
    await d.stop();
  }
});
