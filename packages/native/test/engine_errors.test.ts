// Hostile rings: every malformed chain is returned empty with an event naming the device and
// the reason; a broken ring stops only its own queue; argument errors are clear JS errors.
import test from "ava";
import { native, type EngineEvent } from "../src/native.js";
import { testSupport } from "../src/testing.js";
import { DESC_INDIRECT, DESC_NEXT, DESC_WRITE, F, GUEST_BASE, VNet, counter, frame, waitFor } from "./engine_guest.js";

const A = "52:54:00:00:02:0a";
const B = "52:54:00:00:02:0b";
const C = "52:54:00:00:02:0c";
const D = "52:54:00:00:02:0d";

function setup(features = F.VERSION_1) {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 16 }, (ev) => events.push(ev));
  eng.addSwitch(1);
  eng.addSwitch(2);
  const a = new VNet(eng, 1, A, features);
  const b = new VNet(eng, 2, B, features);
  // an unrelated pair on another switch, which must not notice anything
  const c = new VNet(eng, 3, C, features, { switchId: 2 });
  const d = new VNet(eng, 4, D, features, { switchId: 2 });
  for (const x of [a, b, c, d]) x.postRx(16);
  const done = () => {
    eng.close();
    for (const x of [a, b, c, d]) x.close();
  };
  return { eng, events, a, b, c, d, done };
}

async function otherPairStillWorks(t: any, s: ReturnType<typeof setup>) {
  const before = s.d.rx.usedIdx();
  s.c.send(frame(D, C, 64, 1));
  t.true(await waitFor(() => s.d.rx.usedIdx() === before + 1), "other device's traffic unaffected");
}

const chainCases: [string, (s: ReturnType<typeof setup>) => number, RegExp][] = [
  [
    "descriptor loop",
    (s) => {
      const off = s.a.g.alloc(64);
      s.a.tx.writeDesc(10, s.a.g.addr(off), 32, DESC_NEXT, 11);
      s.a.tx.writeDesc(11, s.a.g.addr(off), 32, DESC_NEXT, 10);
      return 10;
    },
    /chain longer than 256 descriptors/,
  ],
  [
    "zero-length descriptor",
    (s) => {
      s.a.tx.writeDesc(10, s.a.g.addr(s.a.g.alloc(64)), 0, 0, 0);
      return 10;
    },
    /desc 10: zero length/,
  ],
  [
    "address outside guest memory",
    (s) => {
      s.a.tx.writeDesc(12, GUEST_BASE + 0x10000000n, 4096, 0, 0);
      return 12;
    },
    /desc 12: addr 0x110000000 len 4096 outside guest memory/,
  ],
  [
    "address wrapping around 2^64",
    (s) => {
      s.a.tx.writeDesc(12, 0xfffffffffffff000n, 0x2000, 0, 0);
      return 12;
    },
    /outside guest memory/,
  ],
  [
    "writable descriptor in a TX chain",
    (s) => {
      s.a.tx.writeDesc(13, s.a.g.addr(s.a.g.alloc(128)), 100, DESC_WRITE, 0);
      return 13;
    },
    /desc 13: device-writable descriptor in a transmit/,
  ],
  [
    "indirect inside indirect",
    (s) => {
      const tbl = s.a.g.alloc(32, 16);
      const inner = s.a.g.alloc(16, 16);
      s.a.tx.writeDesc(0, s.a.g.addr(inner), 16, DESC_INDIRECT, 0, tbl);
      s.a.tx.writeDesc(14, s.a.g.addr(tbl), 32, DESC_INDIRECT, 0);
      return 14;
    },
    /INDIRECT inside an indirect table/,
  ],
  [
    "indirect with NEXT",
    (s) => {
      const tbl = s.a.g.alloc(32, 16);
      s.a.tx.writeDesc(15, s.a.g.addr(tbl), 32, DESC_INDIRECT | DESC_NEXT, 16);
      return 15;
    },
    /INDIRECT together with NEXT/,
  ],
  [
    "indirect table length not a multiple of 16",
    (s) => {
      s.a.tx.writeDesc(15, s.a.g.addr(s.a.g.alloc(32, 16)), 20, DESC_INDIRECT, 0);
      return 15;
    },
    /not a non-zero multiple of 16/,
  ],
];

for (const [name, build, reason] of chainCases) {
  test(`chain error: ${name}`, async (t) => {
    const s = setup(F.VERSION_1 | F.INDIRECT);
    const bad = build(s);
    s.a.tx.publish(bad);
    s.a.send(frame(B, A, 64, 2)); // a good chain right behind the bad one
    t.true(await waitFor(() => s.b.rx.usedIdx() === 1), "the following good chain is forwarded");
    const used = s.a.tx.takeUsed();
    t.deepEqual(used[0], { id: bad, len: 0 });
    t.is(counter(s.eng, 1, 1, "errors"), 1n);
    t.true(await waitFor(() => s.events.length > 0));
    const ev = s.events[0];
    t.is(ev.kind, "chain-error");
    t.is(ev.devId, 1);
    t.is(ev.queue, 1);
    t.regex(ev.reason, reason);
    await otherPairStillWorks(t, s);
    s.done();
  });
}

test("indirect descriptors work when negotiated and are a chain error when not", async (t) => {
  for (const negotiated of [true, false]) {
    const s = setup(negotiated ? F.VERSION_1 | F.INDIRECT : F.VERSION_1);
    const f = frame(B, A, 100, 3);
    const buf = s.a.g.alloc(112);
    f.copy(s.a.g.buf, buf + 12);
    const tbl = s.a.g.alloc(32, 16);
    s.a.tx.writeDesc(0, s.a.g.addr(buf), 12, DESC_NEXT, 1, tbl);
    s.a.tx.writeDesc(1, s.a.g.addr(buf + 12), 100, 0, 0, tbl);
    s.a.tx.writeDesc(20, s.a.g.addr(tbl), 32, DESC_INDIRECT, 0);
    s.a.tx.publish(20);
    s.a.tx.doKick();
    if (negotiated) {
      t.true(await waitFor(() => s.b.rx.usedIdx() === 1), JSON.stringify(s.events));
      t.deepEqual(s.b.recv()[0].frame, f);
    } else {
      t.true(await waitFor(() => s.events.length === 1));
      t.regex(s.events[0].reason, /INDIRECT not negotiated/);
    }
    s.done();
  }
});

test("RX chain errors: read-only buffer in the receive queue", async (t) => {
  const s = setup();
  // b's receive ring gets one read-only buffer, then a good one
  const off = s.b.g.alloc(2048);
  s.b.rx.lastUsed = s.b.rx.usedIdx();
  const fresh = new VNet(s.eng, 5, "52:54:00:00:02:0e", F.VERSION_1);
  fresh.rx.writeDesc(30, fresh.g.addr(fresh.g.alloc(2048)), 2048, 0, 0);
  fresh.rx.publish(30);
  fresh.postRx(1);
  s.a.send(frame("52:54:00:00:02:0e", A, 64, 4));
  t.true(await waitFor(() => s.events.some((e) => e.devId === 5)));
  const ev = s.events.find((e) => e.devId === 5)!;
  t.is(ev.kind, "chain-error");
  t.is(ev.queue, 0);
  t.regex(ev.reason, /desc 30: read-only descriptor in a receive/);
  t.is(counter(s.eng, 5, 0, "errors"), 1n);
  void off;
  fresh.close();
  s.done();
});

test("head >= ring size breaks the queue (errFd, queue-broken event), nothing else", async (t) => {
  const s = setup();
  s.a.tx.publish(300);
  s.a.tx.doKick();
  t.true(await waitFor(() => s.events.length === 1));
  t.is(s.events[0].kind, "queue-broken");
  t.is(s.events[0].devId, 1);
  t.regex(s.events[0].reason, /head 300 >= ring size 256/);
  t.is(testSupport.eventFdRead(s.a.tx.err), 1);
  // the broken queue is not processed any more
  s.a.send(frame(B, A));
  await otherPairStillWorks(t, s);
  t.is(s.b.rx.usedIdx(), 0);
  // a restart repairs it (front-end reset)
  s.eng.stopQueue(1, 1);
  s.done();
});

test("avail idx jumping more than the ring size breaks the queue", async (t) => {
  const s = setup();
  s.a.tx.setAvailIdxRaw(1000);
  s.a.tx.doKick();
  t.true(await waitFor(() => s.events.length === 1));
  t.is(s.events[0].kind, "queue-broken");
  t.regex(s.events[0].reason, /avail idx 1000 is 1000 entries ahead of last avail 0 \(ring size 256\)/);
  await otherPairStillWorks(t, s);
  s.done();
});

test("chain-error events are rate limited per queue", async (t) => {
  const s = setup();
  for (let i = 0; i < 20; i++) s.a.tx.writeDesc(40 + i, s.a.g.addr(0), 0, 0, 0);
  s.a.tx.publish(...Array.from({ length: 20 }, (_, i) => 40 + i));
  s.a.tx.doKick();
  t.true(await waitFor(() => counter(s.eng, 1, 1, "errors") === 20n));
  await new Promise((r) => setTimeout(r, 50));
  t.is(s.events.length, 1);
  s.done();
});

test("ring placement is checked at startQueue; arguments are validated", (t) => {
  const s = setup();
  const cfg = s.a.tx.cfg();
  t.throws(() => s.eng.startQueue(1, 1, { ...cfg, usedAddr: GUEST_BASE + BigInt(s.a.g.size) - 16n }), {
    message: /queue 1: used ring 0x[0-9a-f]+ len 2054 outside mapped memory/,
  });
  t.throws(() => s.eng.startQueue(1, 1, { ...cfg, descAddr: 0x1000n }), { message: /desc table 0x1000 len 4096 outside/ });
  t.throws(() => s.eng.startQueue(1, 1, { ...cfg, size: 3 }), { instanceOf: RangeError });
  t.throws(() => s.eng.startQueue(1, 1, { ...cfg, size: 65536 }), { instanceOf: RangeError });
  t.throws(() => s.eng.startQueue(1, 2, cfg), { instanceOf: RangeError, message: /queue 2 is out of range \[0, 1\]/ });
  t.throws(() => s.eng.startQueue(9, 1, cfg), { message: /device 9 does not exist/ });
  t.throws(() => s.eng.startQueue(16, 1, cfg), { instanceOf: RangeError });
  t.throws(() => s.eng.setFeatures(1, "x" as any), { instanceOf: TypeError });
  t.throws(() => s.eng.addNetDevice(7, { switchId: 1, mac: "nope", mtu: 1500, maxQueuePairs: 1 }), { instanceOf: TypeError });
  t.throws(() => s.eng.addNetDevice(7, { switchId: 1, mac: A, mtu: 1500, maxQueuePairs: 17 }), { instanceOf: RangeError });
  t.throws(() => s.eng.addNetDevice(7, { switchId: 9, mac: A, mtu: 1500, maxQueuePairs: 1 }), { message: /switch 9 does not exist/ });
  t.throws(() => s.eng.addNetDevice(1, { switchId: 1, mac: A, mtu: 1500, maxQueuePairs: 1 }), { message: /already exists/ });
  t.throws(() => s.eng.setMemTable(1, [{ ...s.a.g.region() }, { ...s.a.g.region() }]), { message: /overlaps/ });
  t.throws(() => s.eng.addSwitch(1), { message: /already exists/ });
  t.throws(() => s.eng.removeSwitch(1), { message: /still has 2 devices/ });
  t.throws(() => new native.Engine({ workers: 0 }, () => {}), { instanceOf: RangeError });
  t.throws(() => new native.Engine({}, 5 as any), { instanceOf: TypeError });
  s.done();
  t.throws(() => s.eng.addSwitch(3), { message: /closed/ });
});
