// Payload integrity through the engine with the project's own front-end driver: every frame
// is numbered and checksummed, so loss, duplication, reordering and corruption are counted
// exactly. virtio-net has no back-pressure: when a receiver's ring is empty the engine drops
// and counts, so "lost" must equal the engine's drop counter for that queue, frame for frame.
// (Interop with front-ends nobody here wrote is proven in net_testpmd.test.ts.)
import test from "ava";
import { FrontendDriver, DEFAULT_WANT_FEATURES, type DriverStats } from "@vhostd/frontend";
import { VirtioFeatureBit as F, bit } from "@vhostd/proto";
import { Daemon, waitFor } from "./harness/daemon.js";

const PF = "0000:af:00.2";
const VF_A = "0000:af:04.5";
const VF_B = "0000:af:05.5";

interface Link {
  d: Daemon;
  a: FrontendDriver;
  b: FrontendDriver;
}

/** Two VFs in client mode, each connected to a driver that listens (like virtio-user server=1). */
async function link(opts: { wantFeatures?: bigint; queuePairs?: number } = {}): Promise<Link> {
  const d = await Daemon.start();
  await d.ok(["mgmtpf", "-a", PF]);
  const q = opts.queuePairs ?? 1;
  const fo = { wantFeatures: opts.wantFeatures, queuePairs: q, connectTimeoutMs: 10_000 };
  const aP = FrontendDriver.listen(d.sock("a"), fo);
  const bP = FrontendDriver.listen(d.sock("b"), fo);
  const qargs = q > 1 ? ["-q", String(q)] : [];
  await d.ok(["vf", "-a", VF_A, "-v", d.sock("a"), ...qargs]);
  await d.ok(["vf", "-a", VF_B, "-v", d.sock("b"), ...qargs]);
  const [a, b] = await Promise.all([aP, bP]);
  await Promise.all([a.handshake(), b.handshake()]);
  return { d, a, b };
}

async function close(l: Link): Promise<void> {
  l.a.close();
  l.b.close();
  await l.d.stop();
}

/** Engine drops on the RX queue of `pair` of a VF (read from the shared counters via the CLI). */
async function rxDrops(d: Daemon, vf: string, pair: number): Promise<number> {
  const info = await d.ok(["vf", "-i", vf]);
  return info.device.queues[2 * pair].drops;
}

/** Waits until every frame of the stream was either received or counted as dropped. */
async function settle(d: Daemon, fe: FrontendDriver, vf: string, pair: number, count: number): Promise<number> {
  let drops = 0;
  await waitFor(
    async () => {
      drops = await rxDrops(d, vf, pair);
      return fe.device.stats(pair).rxPackets + drops >= count;
    },
    30_000,
    `${count} frames received or dropped on ${vf} pair ${pair}`,
  );
  return drops;
}

// The callers check received + counted drops = sent; with nothing duplicated, every frame
// missing is then a counted drop. The driver sees a loss only as a gap before a later frame, so
// drops at the end of a stream (the receiver's ring full as it ends) are not among its rxLost.
function clean(t: import("ava").ExecutionContext, s: DriverStats, drops: number, what: string): void {
  t.true(s.rxLost <= drops, `${what}: every gap in the stream is a frame the engine counted as dropped (${s.rxLost} lost, ${drops} dropped)`);
  t.is(s.rxDuplicated, 0, `${what}: nothing duplicated`);
  t.is(s.rxCorrupted, 0, `${what}: nothing corrupted`);
  t.is(s.rxReordered, 0, `${what}: nothing reordered`);
}

for (const frameSize of [60, 1514, 9000]) {
  test.serial(`both ways, ${frameSize}-byte frames: every frame arrives once, intact, in order, or is a counted drop`, async (t) => {
    const l = await link();
    try {
      const count = 20_000;
      l.a.device.startRx(0);
      l.b.device.startRx(0);
      l.a.device.startTx(0, { dstMac: l.b.mac, srcMac: l.a.mac, frameSize, count, ratePps: 40_000, streamId: 1 });
      l.b.device.startTx(0, { dstMac: l.a.mac, srcMac: l.b.mac, frameSize, count, ratePps: 40_000, streamId: 2 });
      const dropsA = await settle(l.d, l.a, VF_A, 0, count);
      const dropsB = await settle(l.d, l.b, VF_B, 0, count);
      const sa = l.a.device.stats(0);
      const sb = l.b.device.stats(0);
      t.log({ a: sa, b: sb, dropsA, dropsB });
      t.is(sb.rxPackets + dropsB, count);
      t.is(sa.rxPackets + dropsA, count);
      clean(t, sa, dropsA, "A");
      clean(t, sb, dropsB, "B");
    } finally {
      await close(l);
    }
  });
}

test.serial("without MRG_RXBUF (10-byte legacy header off, one buffer per frame)", async (t) => {
  const l = await link({ wantFeatures: DEFAULT_WANT_FEATURES & ~bit(F.NET_MRG_RXBUF) });
  try {
    t.is(l.a.features & bit(F.NET_MRG_RXBUF), 0n);
    const count = 10_000;
    l.b.device.startRx(0);
    l.a.device.startTx(0, { dstMac: l.b.mac, srcMac: l.a.mac, frameSize: 1514, count, ratePps: 40_000, streamId: 3 });
    const drops = await settle(l.d, l.b, VF_B, 0, count);
    t.is(l.b.device.stats(0).rxPackets + drops, count);
    clean(t, l.b.device.stats(0), drops, "B");
  } finally {
    await close(l);
  }
});

test.serial("8 queue pairs: each pair carries its own stream intact", async (t) => {
  const PAIRS = 8;
  const l = await link({ queuePairs: PAIRS });
  try {
    const count = 3_000;
    for (let p = 0; p < PAIRS; p++) {
      l.b.device.startRx(p);
      l.a.device.startTx(p, { dstMac: l.b.mac, srcMac: l.a.mac, frameSize: 256, count, ratePps: 10_000, streamId: 10 + p });
    }
    for (let p = 0; p < PAIRS; p++) {
      const drops = await settle(l.d, l.b, VF_B, p, count);
      const s = l.b.device.stats(p);
      t.is(s.rxPackets + drops, count, `pair ${p} received its stream`);
      clean(t, s, drops, `pair ${p}`);
    }
  } finally {
    await close(l);
  }
});
