// Hostile front-end, MAC spoofing (issue 17 item 5): an attacker VF (the project's driver over
// its vhost-user socket) sends with a victim VF's source MAC while a peer exchanges traffic with
// the victim through a real vfe-vhostd. Port security (docs/operations.md "Port security")
// drops and counts the spoofed frames: the victim's frames stay exact, the attacker receives
// none of them, SEND_RARP for the victim's MAC is refused, `vf -i` shows spoofchk/trust and
// `mgmtpf -i` the switch's table. The settings survive a daemon restart (journal) and a
// config save/load round trip.
import test from "ava";
import { FrontendDriver, DEFAULT_WANT_PROTOCOL_FEATURES } from "@vhostd/frontend";
import { MsgFlag, ProtocolFeature, Req, bit } from "@vhostd/proto";
import { Daemon, waitFor } from "./harness/daemon.js";

const PF = "0000:af:00.2";
const VF_ATT = "0000:af:04.5";
const VF_VIC = "0000:af:05.5";
const VF_PEER = "0000:af:06.5";

const fo = { connectTimeoutMs: 10_000, wantProtocolFeatures: DEFAULT_WANT_PROTOCOL_FEATURES | bit(ProtocolFeature.RARP) };

async function threeVfs(d: Daemon, victimArgs: string[] = [], victimMac?: string): Promise<[FrontendDriver, FrontendDriver, FrontendDriver]> {
  await d.ok(["mgmtpf", "-a", PF]);
  const att = FrontendDriver.listen(d.sock("att"), fo);
  const vic = FrontendDriver.listen(d.sock("vic"), { ...fo, ...(victimMac ? { mac: victimMac } : {}) });
  const peer = FrontendDriver.listen(d.sock("peer"), fo);
  await d.ok(["vf", "-a", VF_ATT, "-v", d.sock("att")]);
  await d.ok(["vf", "-a", VF_VIC, "-v", d.sock("vic"), ...victimArgs]);
  await d.ok(["vf", "-a", VF_PEER, "-v", d.sock("peer")]);
  const drivers = (await Promise.all([att, vic, peer])) as [FrontendDriver, FrontendDriver, FrontendDriver];
  await Promise.all(drivers.map((f) => f.handshake()));
  for (const f of drivers) f.device.startRx(0);
  return drivers;
}

/** The peer sends n frames to the victim (stream 1); resolves once the peer has sent them. */
async function peerToVictim(peer: FrontendDriver, vic: FrontendDriver, n: number): Promise<void> {
  const before = peer.device.stats(0).txPackets;
  // Paced: the driver's receive side on this shared machine must keep up (no RX-ring drops).
  peer.device.startTx(0, { dstMac: vic.mac, srcMac: peer.mac, frameSize: 128, count: n, streamId: 1, ratePps: 5000 });
  await waitFor(() => peer.device.stats(0).txPackets >= before + n, 20_000, "the peer's frames sent");
}

test.serial("a VF spoofing another VF's MAC: its frames are dropped and counted, the victim's traffic stays exact and never reaches it", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  try {
    const [att, vic, peer] = await threeVfs(d);
    drivers.push(att, vic, peer);
    const pid = (await d.ok(["version"])).pid;
    // The victim talks first (its port locks to its guest's MAC), as an established VM does.
    vic.device.startTx(0, { dstMac: peer.mac, srcMac: vic.mac, frameSize: 128, count: 100, streamId: 2, ratePps: 5000 });
    await waitFor(() => peer.device.stats(0).rxPackets >= 100, 20_000, "the victim's first frames at the peer");
    // Those flooded (the peer had not sent yet) and reached the attacker too: its baseline.
    const attRx = att.device.stats(0).rxPackets;
    // The attacker claims the victim's MAC, to the peer and to everybody.
    att.device.startTx(0, { dstMac: peer.mac, srcMac: vic.mac, frameSize: 128, count: 300, streamId: 3 });
    await waitFor(() => att.device.stats(0).txPackets >= 300, 20_000, "the attacker's frames sent");
    att.device.startTx(0, { dstMac: "ff:ff:ff:ff:ff:ff", srcMac: vic.mac, frameSize: 128, count: 20, streamId: 4 });
    await waitFor(() => att.device.stats(0).txPackets >= 320, 20_000, "the attacker's broadcasts sent");
    // The peer's traffic to the victim: exact at the victim, nothing at the attacker.
    await peerToVictim(peer, vic, 2000);
    await waitFor(() => vic.device.stats(0).rxPackets >= 2000, 20_000, "the peer's frames at the victim").catch(async (e) => {
      t.log(JSON.stringify(vic.device.stats(0)), JSON.stringify(att.device.stats(0)), JSON.stringify(peer.device.stats(0)));
      t.log(JSON.stringify(await d.ok(["mgmtpf", "-i", PF])));
      t.log(JSON.stringify((await d.ok(["vf", "-i", VF_VIC])).device.queues));
      throw e;
    });
    const vs = vic.device.stats(0);
    t.is(vs.rxPackets, 2000);
    t.is(vs.rxLost + vs.rxDuplicated + vs.rxCorrupted, 0, JSON.stringify(vs));
    t.is(att.device.stats(0).rxPackets, attRx, "the attacker received none of the victim's frames");
    t.is(peer.device.stats(0).rxPackets, 100, "the peer received only the victim's own frames");

    // Counted on the attacker's TX queue; vf -i shows the port security.
    const ai = (await d.ok(["vf", "-i", VF_ATT])).device;
    t.is(ai.queues.find((q: { index: number }) => q.index === 1).spoofed, 320);
    t.is(ai.spoofchk, true);
    t.is(ai.trust, false);
    t.is(ai.mac_admin, false);
    t.is(ai.mac_locked, "", "nothing the attacker sent locked its port");
    const vi = (await d.ok(["vf", "-i", VF_VIC])).device;
    t.is(vi.mac_locked, vic.mac.toUpperCase());
    t.is(vi.queues.find((q: { index: number }) => q.index === 1).spoofed, 0);
    // Logged with the attacker's VF.
    await d.waitForLog((l) => l.vf === VF_ATT && l.kind === "spoofed" && String(l.msg).includes(vic.mac));

    // mgmtpf -i: the victim's MAC is locked on the victim's port.
    const pi = await d.ok(["mgmtpf", "-i", PF]);
    t.is(pi.device.pf, PF);
    const entry = pi.fdb.find((e: { mac: string }) => e.mac === vic.mac.toUpperCase());
    t.like(entry, { port: VF_VIC, locked: true, admin: false });
    t.false(pi.fdb.some((e: { port: string; mac: string }) => e.port === VF_ATT && e.mac === vic.mac.toUpperCase()));
    const table = await d.cli(["-o", "table", "mgmtpf", "-i", PF]);
    t.is(table.code, 0);

    // SEND_RARP for the victim's MAC is refused (failure ack), the session stays up.
    const rarp = Buffer.alloc(8);
    Buffer.from(vic.mac.split(":").map((x) => parseInt(x, 16))).copy(rarp);
    const r = await att.request(Req.SEND_RARP, rarp, [], MsgFlag.VERSION | MsgFlag.NEED_REPLY);
    t.not(r?.payload.readBigUInt64LE(0), 0n, "RARP for another VF's MAC refused");
    await d.waitForLog((l) => l.vf === VF_ATT && /RARP announcement for .* refused/.test(JSON.stringify(l)));
    await peerToVictim(peer, vic, 100);
    await waitFor(() => vic.device.stats(0).rxPackets >= 2100, 20_000, "the victim still gets its frames");
    t.is(att.device.stats(0).rxPackets, attRx);

    t.is((await d.ok(["version"])).pid, pid, "same daemon");
  } finally {
    for (const f of drivers) f.close();
    await d.stop();
  }
});

test.serial("an operator-set MAC is locked before the VM sends anything; trust and spoofchk are journaled, restored and saved", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  const VIC_MAC = "52:54:00:5a:00:01";
  try {
    const [att, vic, peer] = await threeVfs(d, ["--mac", VIC_MAC], VIC_MAC);
    drivers.push(att, vic, peer);
    // The attacker goes first this time: the admin MAC is the victim's from the start.
    att.device.startTx(0, { dstMac: peer.mac, srcMac: VIC_MAC, frameSize: 128, count: 50, streamId: 3 });
    await waitFor(() => att.device.stats(0).txPackets >= 50, 20_000, "the attacker's frames sent");
    await peerToVictim(peer, vic, 500);
    await waitFor(() => vic.device.stats(0).rxPackets >= 500, 20_000, "the peer's frames at the victim");
    t.is(att.device.stats(0).rxPackets, 0);
    t.is(peer.device.stats(0).rxPackets, 0, "no spoofed frame reached the peer");
    const vi = (await d.ok(["vf", "-i", VF_VIC])).device;
    t.like(vi, { spoofchk: true, trust: false, mac_admin: true, mac_locked: VIC_MAC.toUpperCase() });
    t.is((await d.ok(["vf", "-i", VF_ATT])).device.queues[1].spoofed, 50);
    const pi = await d.ok(["mgmtpf", "-i", PF]);
    t.like(pi.fdb.find((e: { mac: string }) => e.mac === VIC_MAC.toUpperCase()), { port: VF_VIC, locked: true, admin: true });
    for (const f of drivers) f.close();
    drivers.length = 0;

    // More VFs with the other settings; a bad value is a usage error.
    await d.ok(["vf", "-a", "0000:af:07.5", "-v", d.sock("t"), "--trust", "on"]);
    await d.ok(["vf", "-a", "0000:af:08.5", "-v", d.sock("s"), "--spoofchk", "off"]);
    const bad = await d.cli(["vf", "-a", "0000:af:09.5", "-v", d.sock("x"), "--trust", "yes"]);
    t.not(bad.code, 0);
    t.regex(bad.stdout + bad.stderr, /not on or off/);
    const show = async () =>
      Object.fromEntries(
        await Promise.all(
          ["0000:af:04.5", VF_VIC, "0000:af:07.5", "0000:af:08.5"].map(async (v) => {
            const i = (await d.ok(["vf", "-i", v])).device;
            return [v, { spoofchk: i.spoofchk, trust: i.trust, mac_admin: i.mac_admin, mac: i.mac }];
          }),
        ),
      );
    const before = await show();
    t.like(before["0000:af:07.5"], { spoofchk: true, trust: true, mac_admin: false });
    t.like(before["0000:af:08.5"], { spoofchk: false, trust: false, mac_admin: false });

    // config save keeps the operator's MAC only, and the port security settings.
    const saved = (await d.ok(["config", "save"])) as { vfs: Array<Record<string, unknown>> };
    const sv = (dev: string) => saved.vfs.find((v) => v.vfdev === dev)!;
    t.like(sv(VF_VIC), { mac: VIC_MAC, spoofchk: true, trust: false });
    t.is(sv("0000:af:07.5").mac, undefined, "a derived MAC is derived again at load");
    t.like(sv("0000:af:07.5"), { trust: true });
    t.like(sv("0000:af:08.5"), { spoofchk: false });

    // A restart restores everything from the journal.
    await d.stopVhostd();
    await d.restartVhostd();
    t.deepEqual(await show(), before);
    // Loading the saved configuration into the restored daemon changes nothing.
    const fs = await import("node:fs");
    const file = d.sock("config.json");
    fs.writeFileSync(file, JSON.stringify(saved));
    const load = await d.cli(["config", "load", file]);
    t.is(load.code, 0, load.stdout + load.stderr);
    t.like(load.json, { added: 0, failed: 0 });
  } finally {
    for (const f of drivers) f.close();
    await d.stop();
  }
});

test.serial("HA: a port's learned lock survives a keeper kill; after the takeover the attacker still cannot claim the victim's MAC", async (t) => {
  const d = await Daemon.start({ ha: true });
  const drivers: FrontendDriver[] = [];
  try {
    const [att, vic, peer] = await threeVfs(d);
    drivers.push(att, vic, peer);
    // The victim's first frames lock its port to its guest's MAC (not the VF's default).
    vic.device.startTx(0, { dstMac: peer.mac, srcMac: vic.mac, frameSize: 128, count: 50, streamId: 2, ratePps: 5000 });
    await waitFor(() => peer.device.stats(0).rxPackets >= 50, 20_000, "the victim's first frames at the peer");
    await waitFor(() => d.keeperLog().includes(`switch port locked to source MAC ${vic.mac}`), 10_000, "the keeper's engine reported the lock");
    t.is((await d.ok(["vf", "-i", VF_VIC])).device.mac_locked, vic.mac.toUpperCase(), "vf -i through the keeper");
    const pi = await d.ok(["mgmtpf", "-i", PF]);
    t.like(pi.fdb.find((e: { mac: string }) => e.mac === vic.mac.toUpperCase()), { port: VF_VIC, locked: true });
    await waitFor(async () => {
      const s = await d.ok(["ha", "status"]);
      return s.mirror?.copies === 3 && s.keeper?.vfs === 3;
    }, 10_000, "vfe-vhostd holds every session's copy");
    await new Promise((r) => setTimeout(r, 300)); // the lock's mirror push is on its way

    const logAt = d.log().length;
    await d.killKeeper();
    await waitFor(() => d.log().slice(logAt).includes('"takeover_done"'), 15_000, "vfe-vhostd took over");
    t.is((await d.ok(["vf", "-i", VF_VIC])).device.mac_locked, vic.mac.toUpperCase(), "the lock came with the session");

    // The attacker goes first after the takeover (the victim sends nothing).
    const attRx = att.device.stats(0).rxPackets;
    att.device.startTx(0, { dstMac: peer.mac, srcMac: vic.mac, frameSize: 128, count: 100, streamId: 3, ratePps: 5000 });
    await waitFor(() => att.device.stats(0).txPackets >= 100, 20_000, "the attacker's frames sent");
    const vicRx = vic.device.stats(0).rxPackets;
    await peerToVictim(peer, vic, 500);
    await waitFor(() => vic.device.stats(0).rxPackets >= vicRx + 500, 20_000, "the peer's frames at the victim");
    t.is(att.device.stats(0).rxPackets, attRx, "nothing bound to the victim reached the attacker");
    const ai = (await d.ok(["vf", "-i", VF_ATT])).device;
    t.is(ai.queues.find((q: { index: number }) => q.index === 1).spoofed, 100);
    const pi2 = await d.ok(["mgmtpf", "-i", PF]);
    t.like(pi2.fdb.find((e: { mac: string }) => e.mac === vic.mac.toUpperCase()), { port: VF_VIC, locked: true });
  } finally {
    for (const f of drivers) f.close();
    await d.stop();
  }
});

test.serial("a VM's learned MAC moves with it: once every ring of its old VF stopped (a migration's switch-over), another VF may lock it; before, it may not", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  try {
    // vic is the migration's source, att (here no attacker) the destination on another VF.
    const [dst, src, peer] = await threeVfs(d);
    drivers.push(dst, src, peer);
    const vmMac = src.mac;
    src.device.startTx(0, { dstMac: peer.mac, srcMac: vmMac, frameSize: 128, count: 50, streamId: 2, ratePps: 5000 });
    await waitFor(() => peer.device.stats(0).rxPackets >= 50, 20_000, "the source's first frames at the peer");
    await waitFor(async () => (await d.ok(["vf", "-i", VF_VIC])).device.mac_locked === vmMac.toUpperCase(), 10_000, "the source's port locked");
    // While the source runs, the MAC is its own: the destination's frames with it are dropped.
    dst.device.startTx(0, { dstMac: peer.mac, srcMac: vmMac, frameSize: 128, count: 40, streamId: 3, ratePps: 5000 });
    await waitFor(() => dst.device.stats(0).txPackets >= 40, 20_000, "early frames sent");
    await waitFor(async () => (await d.ok(["vf", "-i", VF_ATT])).device.queues[1].spoofed === 40, 10_000, "counted as spoofed");
    t.is(peer.device.stats(0).rxPackets, 50);

    // QEMU stops the source's device at switch-over: GET_VRING_BASE on every ring, still connected.
    await src.getVringBase(0);
    await src.getVringBase(1);
    await d.waitForLog((l) => l.vf === VF_VIC && String(l.msg).includes("switch port unlocked (every ring stopped)"));
    t.is((await d.ok(["vf", "-i", VF_VIC])).device.mac_locked, "");

    // The VM resumes on the destination VF: its first frame locks that port, and traffic for the
    // VM's MAC goes there, none to the stopped source.
    dst.device.startTx(0, { dstMac: peer.mac, srcMac: vmMac, frameSize: 128, count: 60, streamId: 4, ratePps: 5000 });
    await waitFor(() => peer.device.stats(0).rxPackets >= 110, 20_000, "the destination's frames at the peer");
    t.is((await d.ok(["vf", "-i", VF_ATT])).device.mac_locked, vmMac.toUpperCase());
    const dstRx = dst.device.stats(0).rxPackets;
    const srcRx = src.device.stats(0).rxPackets;
    await peerToVictim(peer, src, 300); // to the VM's MAC
    await waitFor(() => dst.device.stats(0).rxPackets >= dstRx + 300, 20_000, "the VM's frames at its new VF");
    t.is(src.device.stats(0).rxPackets, srcRx, "nothing for the VM reached its old, stopped VF");
    const pi = await d.ok(["mgmtpf", "-i", PF]);
    t.like(pi.fdb.find((e: { mac: string }) => e.mac === vmMac.toUpperCase()), { port: VF_ATT, locked: true });
  } finally {
    for (const f of drivers) f.close();
    await d.stop();
  }
});
