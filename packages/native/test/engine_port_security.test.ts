// Port security of the L2 switch (cc/l2_switch.h): MAC spoofing, FDB exhaustion, trust, the
// per-port FDB limit and SEND_RARP's source, driven by frames between devices on one switch.
import test from "ava";
import { native, type EngineEvent, type NativeEngine } from "../src/native.js";
import { VNet, frame, sleep, waitFor } from "./engine_guest.js";

const ATT = "52:54:00:00:00:0a"; // the attacker's VF MAC
const VIC = "52:54:00:00:00:0b"; // the victim's
const PEER = "52:54:00:00:00:0c"; // talks to the victim
const BCAST = "ff:ff:ff:ff:ff:ff";

function mkEngine() {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 64 }, (ev) => events.push(ev));
  eng.addSwitch(1);
  return { eng, events };
}

/** Port security counters of a queue (a second block after the per-queue counters). */
function portCounter(eng: NativeEngine, devId: number, queue: number, name: "spoofed" | "unlearned"): bigint {
  const field = native.PORT_COUNTER_NAMES?.indexOf(name) ?? -1;
  if (field < 0) return -1n;
  const base = eng.maxDevices * eng.maxQueues * native.COUNTERS_PER_QUEUE;
  return eng.counters[base + (devId * eng.maxQueues + queue) * native.PORT_COUNTERS_PER_QUEUE + field];
}

function invented(i: number): string {
  return `02:66:${((i >> 16) & 0xff).toString(16).padStart(2, "0")}:${((i >> 8) & 0xff).toString(16).padStart(2, "0")}:${(i & 0xff).toString(16).padStart(2, "0")}:01`;
}

/** Sends frames in ring-sized batches, waiting for each batch to be consumed. */
async function sendAll(v: VNet, frames: Buffer[], t: { true(x: boolean, m?: string): void }): Promise<void> {
  for (let i = 0; i < frames.length; i += 128) {
    const batch = frames.slice(i, i + 128);
    const target = (v.tx.usedIdx() + batch.length) & 0xffff;
    for (const f of batch) {
      const off = v.g.alloc(v.hdrLen + f.length);
      f.copy(v.g.buf, off + v.hdrLen);
      v.tx.publish(v.tx.chain([{ addr: v.g.addr(off), len: v.hdrLen + f.length }]));
    }
    v.tx.doKick();
    t.true(await waitFor(() => v.tx.usedIdx() === target, 5000), "batch consumed");
  }
}

/** Frames a device received whose payload fill byte is `fill`. */
function received(v: VNet, fill: number): number {
  return v.recv().filter((r) => r.frame[20] === fill).length;
}

test("a VF sending with another VF's MAC is dropped and counted; the victim's traffic is not redirected", async (t) => {
  const { eng, events } = mkEngine();
  const att = new VNet(eng, 1, ATT);
  const vic = new VNet(eng, 2, VIC);
  const peer = new VNet(eng, 3, PEER);
  for (const d of [att, vic, peer]) d.postRx(64);
  // The attacker claims the victim's MAC (the victim has not sent anything yet).
  att.send(frame(BCAST, VIC, 64, 0x11));
  t.true(await waitFor(() => att.tx.usedIdx() === 1));
  // The peer sends to the victim's MAC: it must reach the victim, never the attacker.
  for (let i = 0; i < 5; i++) peer.send(frame(VIC, PEER, 64, 0x22));
  t.true(await waitFor(() => vic.rx.usedIdx() >= 5), "the victim receives its frames");
  await sleep(50);
  t.is(received(att, 0x22), 0, "the attacker received none of the victim's frames");
  const got = vic.recv();
  t.is(got.filter((r) => r.frame[20] === 0x11).length, 0, "the spoofed broadcast was not forwarded");
  t.is(got.filter((r) => r.frame[20] === 0x22).length, 5);
  t.is(portCounter(eng, 1, 1, "spoofed"), 1n, "counted on the attacker's TX queue");
  t.true(await waitFor(() => events.some((e) => e.devId === 1 && e.kind === "spoofed" && e.reason.includes(VIC))), "logged with the VF");
  const fdb = eng.fdb(1);
  t.deepEqual(fdb.filter((e) => e.mac === VIC).map((e) => e.devId), [2], "the victim's MAC stays on the victim's port");
  // The attacker's own MAC still works.
  att.send(frame(PEER, ATT, 64, 0x33));
  t.true(await waitFor(() => received(peer, 0x33) === 1));
  eng.close();
  for (const d of [att, vic, peer]) d.close();
});

test("5000 invented source MACs neither fill the FDB nor make the victim's unicast flood to the attacker", async (t) => {
  const { eng } = mkEngine();
  const att = new VNet(eng, 1, ATT);
  const vic = new VNet(eng, 2, VIC, undefined, { portSecurity: { spoofchk: false } }); // even an unlocked victim
  const peer = new VNet(eng, 3, PEER);
  for (const d of [att, vic, peer]) d.postRx(128);
  // The attacker's first frame is its own; then 5000 invented sources, sent to its own MAC so
  // that they go nowhere (only the learning matters; nobody's receive ring fills).
  att.send(frame(PEER, ATT, 60, 0x43));
  t.true(await waitFor(() => received(peer, 0x43) === 1));
  const frames = Array.from({ length: 5000 }, (_, i) => frame(ATT, invented(i), 60, 0x44));
  await sendAll(att, frames, t);
  // A MAC behind the victim's port (spoofchk off there), learned after the flood.
  const behind = "52:54:00:00:01:0b";
  vic.send(frame(PEER, behind, 64, 0x55));
  t.true(await waitFor(() => received(peer, 0x55) === 1));
  for (let i = 0; i < 20; i++) peer.send(frame(behind, PEER, 64, 0x66));
  t.true(await waitFor(() => vic.rx.usedIdx() >= 20), "the victim receives its frames");
  await sleep(50);
  t.is(received(att, 0x66), 0, "nothing bound to the victim reached the attacker");
  t.true(eng.fdb(1).length < 16, `the FDB holds ${eng.fdb(1).length} entries`);
  t.is(portCounter(eng, 1, 1, "spoofed"), 5000n, "its port locked to its first source: every invented one was dropped");
  t.is(eng.portState(1).lockedMac, ATT);
  eng.close();
  for (const d of [att, vic, peer]) d.close();
});

test("per-port FDB limit: an untrusted VF with spoofchk off owns at most 8 entries, the rest are dropped", async (t) => {
  const { eng } = mkEngine();
  const att = new VNet(eng, 1, ATT, undefined, { portSecurity: { spoofchk: false } });
  const peer = new VNet(eng, 3, PEER);
  peer.postRx(64);
  await sendAll(att, Array.from({ length: 20 }, (_, i) => frame(PEER, invented(i), 60, 0x44)), t);
  const st = eng.portState(1);
  t.is(st.limit, 8);
  t.is(st.learned, 8, "its own MAC and 7 learned");
  t.is(eng.fdb(1).filter((e) => e.devId === 1).length, 8);
  t.is(portCounter(eng, 1, 1, "spoofed"), 13n);
  t.true(await waitFor(() => received(peer, 0x44) === 7));
  eng.close();
  att.close();
  peer.close();
});

test("trust lifts spoofchk: any source is forwarded and learned up to the trusted share; another VF's MAC is forwarded, never learned", async (t) => {
  const { eng } = mkEngine();
  const att = new VNet(eng, 1, ATT, undefined, { portSecurity: { trust: true } });
  const vic = new VNet(eng, 2, VIC);
  const peer = new VNet(eng, 3, PEER);
  for (const d of [att, vic, peer]) d.postRx(128);
  const x = "52:54:00:00:07:07";
  att.send(frame(PEER, x, 64, 0x11));
  t.true(await waitFor(() => received(peer, 0x11) === 1), "a foreign source is forwarded");
  peer.send(frame(x, PEER, 64, 0x12));
  t.true(await waitFor(() => received(att, 0x12) === 1), "and learned on the trusted port");
  att.send(frame(PEER, VIC, 64, 0x13));
  att.send(frame(PEER, "01:00:5e:00:00:01", 64, 0x13)); // a group source: forwarded, never learned
  t.true(await waitFor(() => att.tx.usedIdx() === 3));
  peer.send(frame(VIC, PEER, 64, 0x14));
  t.true(await waitFor(() => received(vic, 0x14) === 1));
  t.is(received(att, 0x14), 0, "the victim's MAC did not move to the trusted VF");
  t.is(portCounter(eng, 1, 1, "spoofed"), 0n);
  t.is(portCounter(eng, 1, 1, "unlearned"), 1n, "forwarded, its source not learned");
  t.false(eng.fdb(1).some((e) => e.mac === "01:00:5e:00:00:01"));
  // Past its share (256) a trusted VF's sources are forwarded, not learned, and counted.
  await sendAll(att, Array.from({ length: 300 }, (_, i) => frame(PEER, invented(i), 60, 0x15)), t);
  t.is(eng.portState(1).learned, 256);
  t.is(portCounter(eng, 1, 1, "unlearned"), 1n + 300n - 254n);
  // Trust off again on the live port: spoofchk applies at once (its entries are forgotten).
  eng.setPortSecurity(1, { trust: false });
  att.send(frame(PEER, x, 64, 0x16));
  t.true(await waitFor(() => att.tx.usedIdx() === 3 + 300 + 1));
  await sleep(30);
  t.true(portCounter(eng, 1, 1, "spoofed") === 1n || eng.portState(1).lockedMac === x, "x either locks the port or is dropped");
  eng.close();
  for (const d of [att, vic, peer]) d.close();
});

test("an operator-set MAC locks the port at once; a VF without one locks to its first source", async (t) => {
  const { eng, events } = mkEngine();
  const adm = new VNet(eng, 1, ATT, undefined, { portSecurity: { adminMac: true } });
  const dflt = new VNet(eng, 2, VIC, undefined, { portSecurity: { reportLock: true } });
  const peer = new VNet(eng, 3, PEER);
  peer.postRx(64);
  t.is(eng.portState(1).lockedMac, ATT);
  t.is(eng.portState(2).lockedMac, "");
  const guestMac = "52:54:00:12:34:56";
  adm.send(frame(PEER, guestMac, 64, 0x21)); // dropped: not the admin MAC
  dflt.send(frame(PEER, guestMac, 64, 0x22)); // the guest's own MAC: locks port 2
  t.true(await waitFor(() => received(peer, 0x22) === 1));
  t.is(portCounter(eng, 1, 1, "spoofed"), 1n);
  t.is(eng.portState(2).lockedMac, guestMac);
  t.true(await waitFor(() => events.some((e) => e.devId === 2 && e.kind === "port-locked" && e.reason === guestMac)));
  dflt.send(frame(PEER, VIC, 64, 0x23)); // its default MAC no longer
  t.true(await waitFor(() => portCounter(eng, 2, 1, "spoofed") === 1n));
  const fdb = eng.fdb(1);
  t.true(fdb.some((e) => e.mac === guestMac && e.devId === 2 && e.pinned));
  t.true(fdb.some((e) => e.mac === ATT && e.devId === 1 && e.pinned));
  t.false(fdb.some((e) => e.mac === VIC), "the default MAC's reservation was released");
  // An adopter restores a learned lock (HA mirror) before any frame.
  eng.removeDevice(2);
  const again = new VNet(eng, 2, VIC, undefined, { portSecurity: { lockedMac: guestMac } });
  t.is(eng.portState(2).lockedMac, guestMac);
  again.send(frame(PEER, VIC, 64, 0x24));
  t.true(await waitFor(() => portCounter(eng, 2, 1, "spoofed") === 1n)); // counters restarted with the device
  eng.close();
  for (const d of [adm, dflt, peer, again]) d.close();
});

test("RARP (injectFrame) is refused for a MAC that is not the VF's own", async (t) => {
  const { eng } = mkEngine();
  const a = new VNet(eng, 1, ATT, undefined, { portSecurity: { adminMac: true } });
  const v = new VNet(eng, 2, VIC);
  const u = new VNet(eng, 3, PEER);
  v.postRx(8);
  const rarp = (m: string) => {
    const f = Buffer.alloc(60);
    f.fill(0xff, 0, 6);
    Buffer.from(m.split(":").map((x) => parseInt(x, 16))).copy(f, 6);
    f.writeUInt16BE(0x8035, 12);
    return f;
  };
  t.throws(() => eng.injectFrame(1, rarp("52:54:00:99:99:99")), { message: /not the VF's MAC 52:54:00:00:00:0a/ });
  t.throws(() => eng.injectFrame(3, rarp(VIC)), { message: /another VF/ }, "an unlocked VF cannot announce another VF's MAC");
  t.is(v.rx.usedIdx(), 0, "nothing was flooded");
  eng.injectFrame(1, rarp(ATT));
  t.true(await waitFor(() => v.rx.usedIdx() === 1), "its own MAC is announced");
  eng.close();
  for (const d of [a, v, u]) d.close();
});

test("a VF whose MAC another VF's guest already locked is still added (it locks on its first frame); a taken operator's MAC is refused", async (t) => {
  const { eng } = mkEngine();
  const guest = "52:54:00:77:00:01";
  const a = new VNet(eng, 1, ATT);
  const peer = new VNet(eng, 3, PEER);
  peer.postRx(16);
  a.send(frame(PEER, guest, 64, 0x31));
  t.true(await waitFor(() => received(peer, 0x31) === 1));
  t.is(eng.portState(1).lockedMac, guest);
  // Restore or HA adoption of a VF whose default MAC (or carried lock) is that guest's MAC.
  const b = new VNet(eng, 2, guest);
  const c = new VNet(eng, 4, VIC, undefined, { portSecurity: { lockedMac: guest } });
  t.is(eng.portState(2).lockedMac, "");
  t.is(eng.portState(4).lockedMac, "");
  t.deepEqual(eng.fdb(1).filter((e) => e.mac === guest).map((e) => e.devId), [1], "the MAC stays with the port that has it");
  b.send(frame(PEER, "52:54:00:77:00:02", 64, 0x32));
  t.true(await waitFor(() => received(peer, 0x32) === 1), "b locks to its own first source");
  t.throws(() => eng.addNetDevice(5, { switchId: 1, mac: guest, mtu: 1500, maxQueuePairs: 1, portSecurity: { adminMac: true } }), { message: /already another port's MAC/ });
  t.false(eng.fdb(1).some((e) => e.devId === 5));
  eng.close();
  for (const d of [a, b, c, peer]) d.close();
});
