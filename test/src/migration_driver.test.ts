// What live migration needs from a back-end, driven by the project's own front-end driver:
// dirty-page logging (LOG_SHMFD, LOG_ALL, SET_LOG_BASE, VHOST_VRING_F_LOG) and the RARP
// announcement after switch-over (SEND_RARP). For the log, the driver: it can read back every used-ring entry and
// descriptor the engine wrote, so the exact set of guest pages the engine wrote is known and
// each one must be marked in the log. (QEMU's use of it, a real migration, is in
// migration.test.ts.)
import fs from "node:fs";
import test from "ava";
import { native } from "@vhostd/native";
import { FrontendDriver, DEFAULT_WANT_PROTOCOL_FEATURES } from "@vhostd/frontend";
import { MsgFlag, ProtocolFeature, Req, VirtioFeatureBit as F, bit, codec } from "@vhostd/proto";
import { Daemon, waitFor } from "./harness/daemon.js";

const PF = "0000:af:00.2";
const VF_A = "0000:af:04.5";
const VF_B = "0000:af:05.5";
const VF_C = "0000:af:06.5";
const PAGE = 4096n;

/** The log bytes that cover the driver's memory, read from the log file. */
function logWindow(logFd: number, b: FrontendDriver): { first: bigint; bytes: Buffer } {
  const first = b.device.memAddr / PAGE / 8n;
  const last = (b.device.memAddr + BigInt(b.device.memSize) - 1n) / PAGE / 8n;
  const bytes = Buffer.alloc(Number(last - first + 1n));
  fs.readSync(logFd, bytes, 0, bytes.length, Number(first));
  return { first, bytes };
}

const marked = (w: { first: bigint; bytes: Buffer }, page: bigint): boolean => {
  const byte = Number(page / 8n - w.first);
  return (w.bytes[byte]! & (1 << Number(page % 8n))) !== 0;
};

const pagesOf = (addr: bigint, len: number): bigint[] => {
  const out: bigint[] = [];
  for (let p = addr / PAGE; p <= (addr + BigInt(len) - 1n) / PAGE; p++) out.push(p);
  return out;
};

/** Sends `n` frames from a to b and waits until b has them all. */
async function send(a: FrontendDriver, b: FrontendDriver, n: number, stream: number): Promise<void> {
  b.device.startRx(0);
  a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: 200, count: n, streamId: stream });
  await waitFor(() => b.device.stats(0).rxPackets >= n, 20_000, `${n} frames at b`);
}

const setAck = async (f: FrontendDriver, req: Req, payload: Buffer): Promise<void> => {
  const r = await f.request(req, payload, [], MsgFlag.VERSION | MsgFlag.NEED_REPLY);
  if (!r || r.payload.readBigUInt64LE(0) !== 0n) throw new Error(`${Req[req]} was refused`);
};

test.serial("dirty log: with LOG_ALL every page the engine writes (receive buffers, used ring) is marked, nothing without it; a bad log ends only that session", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  let logFd = -1;
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    const fo = { connectTimeoutMs: 10_000, wantProtocolFeatures: DEFAULT_WANT_PROTOCOL_FEATURES | bit(ProtocolFeature.LOG_SHMFD) };
    const aP = FrontendDriver.listen(d.sock("a"), fo);
    const bP = FrontendDriver.listen(d.sock("b"), fo);
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
    const [a, b] = await Promise.all([aP, bP]);
    drivers.push(a, b);
    await Promise.all([a.handshake(), b.handshake()]);
    t.true((b.offeredFeatures & bit(F.LOG_ALL)) !== 0n, "LOG_ALL offered");
    t.true((b.protocolFeatures & bit(ProtocolFeature.LOG_SHMFD)) !== 0n, "LOG_SHMFD negotiated");
    // b learns its MAC into the switch by sending once; then a's frames are unicast to it.
    a.device.startRx(0);
    // One frame only: a's driver thread must have posted its receive buffers, or it is dropped.
    const aRx = a.device.ring(0);
    await waitFor(() => a.device.readMem(aRx.avail + 2n, 2).readUInt16LE(0) > 0, 10_000, "a's receive buffers posted");
    b.device.startTx(0, { dstMac: a.mac, srcMac: b.mac, frameSize: 64, count: 1, streamId: 99 });
    await waitFor(() => a.device.stats(0).rxPackets >= 1, 10_000, "b's hello at a");

    // The log covers guest-physical addresses 0 .. end of the driver's memory (GPA == its VA).
    const logBytes = (b.device.memAddr + BigInt(b.device.memSize)) / PAGE / 8n + 1n;
    logFd = native.memfdCreate("dirty-log", Number(logBytes));
    const reply = await b.request(Req.SET_LOG_BASE, codec.log.encode({ size: logBytes, offset: 0n }), [logFd]);
    t.is(reply!.payload.readBigUInt64LE(0), 0n, "SET_LOG_BASE replied 0");

    // 1. Log set but LOG_ALL not negotiated: nothing is marked.
    await send(a, b, 50, 1);
    t.true(logWindow(logFd, b).bytes.every((x) => x === 0), "no page marked without LOG_ALL");

    // 2. LOG_ALL on, the RX ring's used ring logged at its own address (GPA == VA here).
    const rx = b.device.ring(0);
    await setAck(b, Req.SET_VRING_ADDR, codec.vringAddr.encode({ index: 0, flags: 1, desc: rx.desc, used: rx.used, avail: rx.avail, log: rx.used }));
    await setAck(b, Req.SET_FEATURES, codec.u64.encode(b.features | bit(F.LOG_ALL)));
    const before = b.device.readMem(rx.used + 2n, 2).readUInt16LE(0);
    await send(a, b, 120, 2);
    const after = b.device.readMem(rx.used + 2n, 2).readUInt16LE(0);
    const w = logWindow(logFd, b);
    const expected = new Set<bigint>(pagesOf(rx.used, 4));
    for (let i = before; i !== after; i = (i + 1) & 0xffff) {
      const slot = BigInt(i % b.queueSize);
      const e = b.device.readMem(rx.used + 4n + 8n * slot, 8);
      const id = e.readUInt32LE(0), len = e.readUInt32LE(4);
      for (const p of pagesOf(rx.used + 4n + 8n * slot, 8)) expected.add(p);
      const desc = b.device.readMem(rx.desc + 16n * BigInt(id), 16);
      for (const p of pagesOf(desc.readBigUInt64LE(0), len)) expected.add(p);
    }
    t.true(expected.size > 10, `${expected.size} pages written`);
    const missing = [...expected].filter((p) => !marked(w, p));
    t.deepEqual(missing.map((p) => `0x${(p * PAGE).toString(16)}`), [], "every page the engine wrote is marked");
    // b's TX ring is only read by the engine: its used ring page stays clean.
    t.false(marked(w, b.device.ring(1).used / PAGE), "a ring the engine did not write is not marked");

    // Under load: 20000 frames as fast as the rings go, so every receive buffer is written many
    // times over; the front-end clears the log first, as a migration round does.
    fs.writeSync(logFd, Buffer.alloc(w.bytes.length), 0, w.bytes.length, Number(w.first));
    const rxBefore = b.device.stats(0).rxPackets;
    b.device.startRx(0);
    a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: 1400, count: 20_000, streamId: 6 });
    await waitFor(() => a.device.stats(0).txPackets >= 20_000, 30_000, "20000 frames sent");
    await waitFor(async () => b.device.stats(0).rxPackets + (await d.ok(["vf", "-i", VF_B])).device.queues[0].drops >= 20_000, 30_000, "20000 frames received or dropped");
    const ws = logWindow(logFd, b);
    const stressed = new Set<bigint>(pagesOf(rx.used, 4 + 8 * b.queueSize));
    for (let id = 0; id < b.queueSize; id++) {
      const desc = b.device.readMem(rx.desc + 16n * BigInt(id), 16);
      for (const p of pagesOf(desc.readBigUInt64LE(0), 12 + 1400)) stressed.add(p);
    }
    const unmarked = [...stressed].filter((p) => !marked(ws, p));
    t.log({ stress: { received: b.device.stats(0).rxPackets, before: rxBefore, pages: stressed.size } });
    t.deepEqual(unmarked.map((p) => `0x${(p * PAGE).toString(16)}`), [], "under load too, every receive buffer page and the whole used ring are marked");

    // 3. LOG_ALL off again: the front-end clears its log and nothing new appears.
    await setAck(b, Req.SET_FEATURES, codec.u64.encode(b.features));
    fs.writeSync(logFd, Buffer.alloc(w.bytes.length), 0, w.bytes.length, Number(w.first));
    await send(a, b, 30, 3);
    t.true(logWindow(logFd, b).bytes.every((x) => x === 0), "no page marked after LOG_ALL is turned off");

    // 4. Hostile: a log area beyond its file ends b's session only.
    const tiny = native.memfdCreate("tiny-log", 4096);
    b.request(Req.SET_LOG_BASE, codec.log.encode({ size: 8192n, offset: 4096n }), [tiny]).catch(() => undefined);
    native.closeFd(tiny);
    await b.closed;
    const vfs = (await d.ok(["vf", "-l", PF])).devices as Array<{ vf: string }>;
    t.is(vfs.length, 2, "the daemon and both VFs are still there");
    t.regex(d.log(), /SET_LOG_BASE.*(not inside|log)/);
  } finally {
    for (const f of drivers) f.close();
    if (logFd >= 0) native.closeFd(logFd);
    await d.stop();
  }
});

test.serial("SEND_RARP after a switch-over: a RARP frame from the guest's MAC is flooded, and the switch sends that MAC's frames to this VF only", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    const fo = { connectTimeoutMs: 10_000, wantProtocolFeatures: DEFAULT_WANT_PROTOCOL_FEATURES | bit(ProtocolFeature.RARP) };
    const names = ["a", "b", "c"];
    const listening = names.map((n) => FrontendDriver.listen(d.sock(n), fo));
    for (const [i, vf] of [VF_A, VF_B, VF_C].entries()) await d.ok(["vf", "-a", vf, "-v", d.sock(names[i]!)]);
    drivers.push(...(await Promise.all(listening)));
    await Promise.all(drivers.map((f) => f.handshake()));
    const [a, b, c] = drivers as [FrontendDriver, FrontendDriver, FrontendDriver];
    t.true((b.protocolFeatures & bit(ProtocolFeature.RARP)) !== 0n, "RARP negotiated");
    for (const f of drivers) f.device.startRx(0);
    // The guest's own MAC (b's driver): port security allows a RARP for the VF's MAC only, and
    // b's port, which has sent nothing yet, locks to it (its first source).
    const moved = b.mac;
    const rarp = Buffer.alloc(8);
    Buffer.from(moved.split(":").map((x) => parseInt(x, 16))).copy(rarp);
    await setAck(b, Req.SEND_RARP, rarp);
    // Another MAC now is refused: b's port is locked to the announced one.
    const other = Buffer.from([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc, 0, 0]);
    await t.throwsAsync(setAck(b, Req.SEND_RARP, other), { message: /refused/ });
    // The broadcast reaches the other ports (not ours: no test-frame magic, so "foreign").
    await waitFor(() => a.device.stats(0).rxForeign >= 1 && c.device.stats(0).rxForeign >= 1, 10_000, "the RARP frame at a and c");
    t.is(b.device.stats(0).rxForeign, 0, "never back out of the port it came from");
    // Frames to the announced MAC now go to b only.
    a.device.startTx(0, { dstMac: moved, srcMac: a.mac, frameSize: 100, count: 40, streamId: 5 });
    await waitFor(() => b.device.stats(0).rxPackets >= 40, 10_000, "frames to the moved MAC at b");
    t.is(c.device.stats(0).rxPackets - c.device.stats(0).rxForeign, 0, "none flooded to c");
  } finally {
    for (const f of drivers) f.close();
    await d.stop();
  }
});
