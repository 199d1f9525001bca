// Engine datapath: forwarding between devices through the switch, over memfd "guests".
import test from "ava";
import { native, type EngineEvent } from "../src/native.js";
import { F, VNet, counter, frame, sleep, waitFor } from "./engine_guest.js";

const A = "52:54:00:00:00:0a";
const B = "52:54:00:00:00:0b";
const C = "52:54:00:00:00:0c";

function mkEngine(opts: { workers?: number; pollUs?: number } = {}) {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 64, ...opts }, (ev) => events.push(ev));
  eng.addSwitch(1);
  return { eng, events };
}

test("unicast after learning, flooding of unknown and broadcast", async (t) => {
  const { eng } = mkEngine();
  const a = new VNet(eng, 1, A);
  // b's guest uses B, not the VF's MAC: B is unknown until b sends (and locks its port to it).
  const b = new VNet(eng, 2, "52:54:00:00:01:0b");
  const c = new VNet(eng, 3, C);
  for (const d of [a, b, c]) d.postRx(32);

  // Unknown destination: flooded to b and c, not back to a.
  const f1 = frame(B, A, 100, 1);
  a.send(f1);
  t.true(await waitFor(() => b.rx.usedIdx() === 1 && c.rx.usedIdx() === 1));
  const rb = b.recv();
  t.deepEqual(rb[0].frame, f1);
  t.is(rb[0].numBuffers, 1);
  t.is(c.recv().length, 1);
  t.is(a.rx.usedIdx(), 0);

  // b answers a: a is learned, so only a receives.
  const f2 = frame(A, B, 80, 2);
  b.send(f2);
  t.true(await waitFor(() => a.rx.usedIdx() === 1));
  t.deepEqual(a.recv()[0].frame, f2);
  // a -> b again: now unicast, c sees nothing more.
  a.send(frame(B, A, 70, 3));
  t.true(await waitFor(() => b.rx.usedIdx() === 2));
  await sleep(20);
  t.is(c.rx.usedIdx(), 1);

  // Broadcast floods to everybody else.
  c.send(frame("ff:ff:ff:ff:ff:ff", C, 60, 4));
  t.true(await waitFor(() => a.rx.usedIdx() === 2 && b.rx.usedIdx() === 3));
  t.is(c.rx.usedIdx(), 1);

  const fdb = eng.fdb(1).sort((x, y) => x.devId - y.devId);
  t.deepEqual(fdb.map((e) => [e.mac, e.devId]), [[A, 1], [B, 2], [C, 3]]);

  // TX chains were returned used (len 0) and counted.
  t.is(a.tx.usedIdx(), 2);
  t.is(counter(eng, 1, 1, "packets"), 2n);
  t.is(counter(eng, 1, 1, "bytes"), 170n);
  t.is(counter(eng, 2, 0, "packets"), 3n);
  t.is(counter(eng, 2, 0, "bytes"), 100n + 70n + 60n);
  eng.close();
  for (const d of [a, b, c]) d.close();
});

test("split header/frame descriptors and legacy 10-byte header", async (t) => {
  const { eng } = mkEngine();
  const a = new VNet(eng, 1, A, 0n); // legacy: 10-byte header
  const b = new VNet(eng, 2, B, F.VERSION_1);
  b.postRx(4);
  a.postRx(4);
  const f = frame(B, A, 300, 7);
  a.send(f, undefined, true);
  t.true(await waitFor(() => b.rx.usedIdx() === 1));
  const r = b.recv()[0];
  t.deepEqual(r.frame, f);
  t.is(r.numBuffers, 1); // VERSION_1 without MRG_RXBUF: num_buffers = 1
  const g = frame(A, B, 64, 8);
  b.send(g);
  t.true(await waitFor(() => a.rx.usedIdx() === 1));
  const ra = a.recv()[0];
  t.is(ra.hdr.length, 10);
  t.deepEqual(ra.frame, g);
  eng.close();
  a.close();
  b.close();
});

test("MRG_RXBUF spreads a frame over several buffers; without it a too-small buffer drops", async (t) => {
  const { eng } = mkEngine();
  const a = new VNet(eng, 1, A);
  const b = new VNet(eng, 2, B, F.VERSION_1 | F.MRG_RXBUF);
  const c = new VNet(eng, 3, C, F.VERSION_1);
  b.postRx(16, 256);
  c.postRx(4, 256);
  const f = frame("ff:ff:ff:ff:ff:ff", A, 1000, 9);
  a.send(f);
  t.true(await waitFor(() => b.rx.usedIdx() === 4));
  const r = b.recv();
  t.is(r.length, 1);
  t.is(r[0].numBuffers, 4); // ceil((1000 + 12) / 256)
  t.deepEqual(r[0].frame, f);
  await sleep(20);
  t.is(c.rx.usedIdx(), 0); // does not fit one 256-byte chain: dropped, buffers untouched
  t.is(counter(eng, 3, 0, "drops"), 1n);
  // A small frame still fits c's first buffer (the buffer was not consumed by the drop).
  a.send(frame("ff:ff:ff:ff:ff:ff", A, 100, 10));
  t.true(await waitFor(() => c.rx.usedIdx() === 1));
  eng.close();
  for (const d of [a, b, c]) d.close();
});

test("no receive buffers: drop and count; disabled or stopped queue: drop", async (t) => {
  const { eng } = mkEngine();
  const a = new VNet(eng, 1, A);
  const b = new VNet(eng, 2, B);
  a.send(frame(B, A));
  t.true(await waitFor(() => counter(eng, 2, 0, "drops") === 1n));
  b.postRx(2);
  eng.setQueueEnabled(2, 0, false);
  a.send(frame(B, A));
  t.true(await waitFor(() => counter(eng, 2, 0, "drops") === 2n));
  eng.setQueueEnabled(2, 0, true);
  a.send(frame(B, A));
  t.true(await waitFor(() => b.rx.usedIdx() === 1));
  t.is(eng.queueLastAvail(2, 0), 1, "the live index of a running queue");
  t.is(eng.stopQueue(2, 0), 1);
  t.is(eng.queueLastAvail(2, 0), -1, "a stopped queue has none");
  a.send(frame(B, A));
  t.true(await waitFor(() => counter(eng, 2, 0, "drops") === 3n));
  // restart from the returned index; traffic resumes
  eng.startQueue(2, 0, b.rx.cfg(1));
  a.send(frame(B, A));
  t.true(await waitFor(() => b.rx.usedIdx() === 2));
  t.is(eng.queueLastAvail(2, 0), 2);
  t.throws(() => eng.queueLastAvail(2, 99), { message: /queue/ });
  t.throws(() => eng.queueLastAvail(77, 0), { message: /out of range/ });
  t.throws(() => eng.queueLastAvail(9, 0), { message: /does not exist/ });
  eng.close();
  a.close();
  b.close();
});

test("two workers forward across each other", async (t) => {
  const { eng } = mkEngine({ workers: 2 });
  const a = new VNet(eng, 1, A);
  const b = new VNet(eng, 2, B);
  a.postRx(200);
  b.postRx(200);
  for (let i = 0; i < 100; i++) {
    a.send(frame(B, A, 64 + i, i));
    b.send(frame(A, B, 64 + i, i));
  }
  t.true(await waitFor(() => a.rx.usedIdx() === 100 && b.rx.usedIdx() === 100));
  const ra = a.recv();
  t.deepEqual(ra.map((r) => r.frame.length), [...Array(100).keys()].map((i) => 64 + i));
  eng.close();
  a.close();
  b.close();
});

test("multiqueue: RX lands on the same pair modulo the destination's running RX queues", async (t) => {
  const { eng } = mkEngine();
  const a = new VNet(eng, 1, A);
  // b: 2 queue pairs, laid out by hand; only pair 1's RX queue (queue 2) is started
  const { Guest, DrvRing } = await import("./engine_guest.js");
  const g = new Guest();
  const rx1 = new DrvRing(g, 64);
  eng.addNetDevice(2, { switchId: 1, mac: B, mtu: 1500, maxQueuePairs: 2 });
  eng.setFeatures(2, F.VERSION_1);
  eng.setMemTable(2, [g.region()]);
  eng.startQueue(2, 2, rx1.cfg());
  const off = g.alloc(2048);
  rx1.publish(rx1.chain([{ addr: g.addr(off), len: 2048, write: true }]));
  a.send(frame(B, A, 90, 5));
  t.true(await waitFor(() => rx1.usedIdx() === 1));
  t.is(counter(eng, 2, 2, "packets"), 1n);
  t.throws(() => eng.startQueue(2, 4, rx1.cfg()), { instanceOf: RangeError });
  eng.close();
  a.close();
  rx1.closeFds();
  g.close();
});
