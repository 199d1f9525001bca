// Two "hosts" on one machine: two independent HA daemon pairs (their own run and state dirs)
// whose net PFs have TAP uplinks joined by a Linux bridge in a network namespace of this
// test's own; the bridge's address is the peer the guest pings wherever it runs. Both pairs
// serve a blk VF on the same disk file (shared storage, as between real hosts). A QEMU guest
// with one net and one blk VF on pair A runs a write-then-verify loop on its disk and is
// migrated to pair B in the middle of it; then it pings the peer and is migrated back to a
// fresh QEMU on pair A in the middle of that. Every block verifies at the end, no I/O error,
// and the pings lost fit QEMU's reported downtime.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import test from "ava";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Guest, type GuestOptions } from "./harness/qemu.js";
import { Qmp } from "./harness/qmp.js";

const NET_PF = "0000:af:00.2";
const BLK_PF = "0000:af:00.3";
const NET_VF = "0000:af:04.5";
const BLK_VF = "0000:af:05.1";
const GUEST_MAC = "52:54:00:12:34:56";
const INTERVAL_S = 0.05;
const PINGS = 700;

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });


test.serial("two hosts: a guest with a net and a blk VF migrates A → B during disk writes and B → A during pings; every block verifies, pings fit the downtime", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64") || !needPeer(t, "ip")) return;
  const tag = process.pid % 100000;
  const ns = `vhmig${tag}`;
  const taps = { a: `vhma${tag}`, b: `vhmb${tag}` };
  const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-mig-"));
  const config = (tap: string) => {
    const f = path.join(cfgDir, `${tap}.json`);
    fs.writeFileSync(f, JSON.stringify({ pfs: [{ dev: NET_PF, type: "net", firstVfOffset: 35, uplink: { tap } }, { dev: BLK_PF, type: "blk", firstVfOffset: 38 }] }));
    return f;
  };
  const hosts: Daemon[] = [];
  const guests: Guest[] = [];
  const qmps: Qmp[] = [];
  try {
    ip("netns", "add", ns);
    ip("-n", ns, "link", "add", "br0", "type", "bridge");
    ip("-n", ns, "addr", "add", "10.0.9.1/24", "dev", "br0");
    ip("-n", ns, "link", "set", "br0", "up");
    const disk = path.join(cfgDir, "disk.raw");
    for (const name of ["a", "b"] as const) {
      const d = await Daemon.start({ ha: true, args: ["--config", config(taps[name])] });
      hosts.push(d);
      await d.ok(["mgmtpf", "-a", NET_PF]);
      await d.ok(["mgmtpf", "-a", BLK_PF]);
      // The daemon created its uplink TAP; it joins the namespace's bridge like a host's NIC.
      ip("link", "set", taps[name], "netns", ns);
      ip("-n", ns, "link", "set", taps[name], "master", "br0");
      ip("-n", ns, "link", "set", taps[name], "up");
      await d.ok(["vf", "-a", NET_VF, "-v", d.sock("net")]);
      await d.ok(["vf", "-a", BLK_VF, "-v", d.sock("blk"), "--disk", disk, ...(name === "a" ? ["--disk-size", "64M"] : [])]);
    }
    const [A, B] = hosts as [Daemon, Daemon];
    const guestOpts = (d: Daemon, name: string, incoming?: string): GuestOptions => ({
      net: [{ socket: d.sock("net"), server: true, mac: GUEST_MAC }],
      blk: [{ socket: d.sock("blk"), server: true }],
      test: "blkloop,ping",
      args: { lmib: 2, lslots: 8, lsecs: 30, ip: "10.0.9.2/24", peer: "10.0.9.1", count: PINGS, interval: INTERVAL_S, wait: 1, carrier: 30 },
      memMb: 256,
      logFile: path.join(d.dir, `guest-${name}.log`),
      timeoutMs: 300_000,
      qmpSocket: path.join(d.dir, `qmp-${name}.sock`),
      ...(incoming ? { qemuArgs: ["-incoming", incoming] } : {}),
    });
    const connected = async (d: Daemon) =>
      (await d.ok(["vf", "-i", NET_VF])).device.connected === true && (await d.ok(["vf", "-i", BLK_VF])).device.connected === true;

    const g1 = await Guest.start(guestOpts(A, "a1"));
    guests.push(g1);
    let q = await Qmp.connect(g1.opts.qmpSocket!);
    qmps.push(q);
    await g1.waitForOutput(/VHOSTD-LOOP-START/, 120_000);
    await sleep(4000);

    // A -> B in the middle of the disk loop.
    const uriB = `unix:${path.join(B.dir, "mig.sock")}`;
    const g2 = await Guest.start(guestOpts(B, "b1", uriB));
    guests.push(g2);
    const q2 = await Qmp.connect(g2.opts.qmpSocket!);
    qmps.push(q2);
    await waitFor(() => connected(B), 30_000, "pair B's VFs connected to the destination QEMU");
    const hop1 = await q.migrate(uriB);
    await q.execute("quit").catch(() => undefined);
    q = q2;
    // The loop ends on B; then the pings start: move it back while they run.
    await g2.waitForOutput(/VHOSTD-RESULT \{"test":"blkloop",.*\}\n/, 120_000);
    await sleep(4000);
    const uriA = `unix:${path.join(A.dir, "mig.sock")}`;
    const g3 = await Guest.start(guestOpts(A, "a2", uriA));
    guests.push(g3);
    const q3 = await Qmp.connect(g3.opts.qmpSocket!);
    qmps.push(q3);
    await waitFor(() => connected(A), 30_000, "pair A's VFs connected to the destination QEMU");
    const hop2 = await q.migrate(uriA);
    await q.execute("quit").catch(() => undefined);
    const run = await g3.wait();

    const loop = g2.results.find((r) => r.test === "blkloop");
    const ping = run.results.find((r) => r.test === "ping");
    t.log({ hop1, hop2, loop, ping });
    t.like(loop, { ok: true, failed: 0, ioErrors: 0, finalMismatches: 0 }, "every block verifies after a migration in the middle of the writes");
    t.notRegex(g2.output + run.output, /I\/O error|blk_update_request|critical (target|medium) error/i, "the guest kernel logged no I/O error");
    t.truthy(ping, `the pings ran on the guest's last home; serial tail:\n${run.output.slice(-1500)}`);
    t.is(ping!.sent, PINGS);
    const allowed = Math.ceil(hop2.downtimeMs / (INTERVAL_S * 1000)) + 3;
    t.true(ping!.sent - ping!.received <= allowed, `lost ${ping!.sent - ping!.received} pings, the ${hop2.downtimeMs} ms downtime allows ${allowed}`);
  } finally {
    for (const x of qmps) x.close();
    for (const g of guests) g.kill();
    for (const d of hosts) await d.stop();
    try {
      ip("netns", "del", ns);
    } catch {
      // never created
    }
    fs.rmSync(cfgDir, { recursive: true, force: true });
  }
});
