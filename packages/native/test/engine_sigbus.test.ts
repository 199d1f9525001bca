// Guest memory that shrinks under us: a front-end ftruncate()s its memfd after the engine
// mapped it. The engine must survive (SIGBUS turned into zero pages), fail only that device
// with a reason, and keep every other device forwarding; a SIGBUS anywhere else must still
// kill the process.
import test from "ava";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { native, type EngineEvent } from "../src/native.js";
import { testSupport } from "../src/testing.js";
import { DrvRing, GUEST_BASE, Guest, VNet, frame, sleep, waitFor } from "./engine_guest.js";

const A = "52:54:00:00:0b:0a";
const B = "52:54:00:00:0b:0b";
const C = "52:54:00:00:0b:0c";
const SHRANK = /^guest memory region 0x100000000\+0x800000 shrank under us \(SIGBUS at guest 0x1[0-9a-f]{8}\)/;

/** One frame from `from` to `to` arrives (to's RX used index moves by one). */
async function forwards(from: VNet, to: VNet, fill: number): Promise<boolean> {
  to.recv(); // flooded frames from earlier steps
  const before = to.rx.usedIdx();
  from.send(frame(to.macAddr, from.macAddr, 128, fill));
  if (!(await waitFor(() => to.rx.usedIdx() === ((before + 1) & 0xffff)))) return false;
  const got = to.recv();
  return got.length === 1 && got[0].frame.equals(frame(to.macAddr, from.macAddr, 128, fill));
}

test("a front-end that truncates its memory fails its own device only; a new memory table revives it", async (t) => {
  const events: EngineEvent[] = [];
  // Two workers: A's RX is written by B's worker, A's TX read by A's own.
  const eng = new native.Engine({ workers: 2, maxDevices: 8 }, (ev) => events.push(ev));
  eng.addSwitch(1);
  const a = new VNet(eng, 1, A);
  const b = new VNet(eng, 2, B);
  const c = new VNet(eng, 3, C);
  for (const x of [a, b, c]) x.postRx(64);
  const g2 = new Guest();
  try {
    t.true(await forwards(a, b, 1));
    t.true(await forwards(b, a, 2)); // both learned: B -> A is unicast into A's RX ring
    t.true(await forwards(b, c, 3));

    // From here on the test process must not touch a.g.buf either: its own mapping of the
    // memfd would SIGBUS (and that mapping is not guest memory of any engine: fatal).
    fs.ftruncateSync(a.g.fd, 0);
    b.send(frame(A, B, 128, 4)); // RX path: B's worker writes into A's memory
    testSupport.eventFdWrite(a.tx.kick); // TX path: A's worker reads A's avail ring
    t.true(await waitFor(() => events.some((e) => e.devId === 1)), "an event about device A");
    const ev = events.find((e) => e.devId === 1)!;
    t.log(ev);
    t.is(ev.kind, "queue-broken");
    t.is(ev.queue, -1);
    t.regex(ev.reason, SHRANK);
    t.is(testSupport.eventFdRead(a.rx.err), 1, "A's RX err fd signalled");
    t.is(testSupport.eventFdRead(a.tx.err), 1, "A's TX err fd signalled");

    // B and C keep forwarding both ways (B's first frame to C may flood to A too: dropped).
    for (let i = 0; i < 20; i++) {
      t.true(await forwards(b, c, 10 + i), `B -> C ${i}`);
      t.true(await forwards(c, b, 40 + i), `C -> B ${i}`);
    }
    t.false(events.some((e) => e.devId !== 1), JSON.stringify(events));

    // Restarting a queue on the shrunk table is refused: its rings would run on zero pages.
    t.throws(() => eng.startQueue(1, 1, a.tx.cfg()), { message: /shrank under us earlier; send a new memory table/ });

    // A new memory table (the old mapping and its zero pages go away) and fresh rings revive A.
    eng.setMemTable(1, [g2.region()]);
    const rx2 = new DrvRing(g2);
    const tx2 = new DrvRing(g2);
    eng.startQueue(1, 0, rx2.cfg());
    eng.startQueue(1, 1, tx2.cfg());
    const buf = g2.alloc(2048);
    rx2.publish(rx2.chain([{ addr: g2.addr(buf), len: 2048, write: true }]));
    b.send(frame(A, B, 128, 5));
    t.true(await waitFor(() => rx2.usedIdx() === 1), "A receives again on its new memory");
    t.deepEqual(g2.buf.subarray(buf + 12, buf + 12 + 128), frame(A, B, 128, 5));

    // The record re-arms: shrinking the new memory is reported again.
    const seen = events.length;
    fs.ftruncateSync(g2.fd, 4096); // keeps page 0; the rings are further up
    b.send(frame(A, B, 128, 6));
    t.true(await waitFor(() => events.length > seen), "a second fault is reported");
    t.is(events[seen].devId, 1);
    t.regex(events[seen].reason, SHRANK);
    t.true(await forwards(b, c, 99), "B -> C still fine");

    // Removing the device unmaps the faulted memory; nothing else notices.
    eng.removeDevice(1);
    t.true(await forwards(c, b, 100));
    for (const r of [rx2, tx2]) r.closeFds();
  } finally {
    eng.close();
    for (const x of [a, b, c]) x.close();
    g2.close();
  }
});

test("a device whose memory shrinks while nobody uses it is failed on the next access, not before", async (t) => {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 8, pollUs: 0 }, (ev) => events.push(ev));
  eng.addSwitch(1);
  const a = new VNet(eng, 1, A);
  const b = new VNet(eng, 2, B);
  a.postRx(8);
  b.postRx(8);
  try {
    t.true(await forwards(a, b, 1));
    fs.ftruncateSync(a.g.fd, 0);
    await sleep(100);
    t.is(events.length, 0, "an idle engine does not touch guest memory");
    b.send(frame("ff:ff:ff:ff:ff:ff", B, 60, 2)); // broadcast: delivered into A's RX
    t.true(await waitFor(() => events.length === 1));
    t.is(events[0].devId, 1);
    t.regex(events[0].reason, SHRANK);
  } finally {
    eng.close();
    for (const x of [a, b]) x.close();
  }
});

// A child process with an engine (so the guard is installed) that does something fatal.
function child(body: string): ReturnType<typeof spawnSync> {
  const nativeJs = fileURLToPath(new URL("../src/native.js", import.meta.url));
  const guestJs = fileURLToPath(new URL("./engine_guest.js", import.meta.url));
  const script = `
    import fs from "node:fs";
    import { native } from ${JSON.stringify(nativeJs)};
    import { VNet } from ${JSON.stringify(guestJs)};
    const eng = new native.Engine({ maxDevices: 4 }, () => {});
    eng.addSwitch(1);
    ${body}
    console.log("survived");
  `;
  return spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
}

test("a SIGBUS outside guest memory still kills the process", (t) => {
  // The same memfd, mapped by the engine (guarded) and by the test itself (not guest memory):
  // touching the test's own mapping after the truncation must die, not be papered over.
  const r = child(`
    const a = new VNet(eng, 1, "${A}");
    fs.ftruncateSync(a.g.fd, 0);
    console.log("touching");
    a.g.buf[0x2000] = 1;
  `);
  t.is(r.signal, "SIGBUS", `stdout ${r.stdout} stderr ${r.stderr}`);
  t.regex(String(r.stdout), /touching/);
  t.notRegex(String(r.stdout), /survived/);
});

test("a SIGBUS sent with kill() still kills the process", (t) => {
  const r = child(`process.kill(process.pid, "SIGBUS"); await new Promise((r) => setTimeout(r, 1000));`);
  t.is(r.signal, "SIGBUS", `stdout ${r.stdout} stderr ${r.stderr}`);
});

test("one worker: devices at the same guest addresses are told apart by host address", async (t) => {
  t.is(GUEST_BASE, 0x100000000n); // every VNet's guest; only the host mappings differ
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 8 }, (ev) => events.push(ev));
  eng.addSwitch(1);
  const a = new VNet(eng, 1, A);
  const b = new VNet(eng, 2, B);
  const c = new VNet(eng, 3, C);
  for (const x of [a, b, c]) x.postRx(32);
  try {
    t.true(await forwards(b, c, 1));
    t.true(await forwards(c, b, 2));
    fs.ftruncateSync(a.g.fd, 0);
    testSupport.eventFdWrite(a.tx.kick);
    t.true(await waitFor(() => events.length >= 1));
    for (let i = 0; i < 10; i++) t.true(await forwards(b, c, 3 + i));
    t.deepEqual(new Set(events.map((e) => e.devId)), new Set([1]));
  } finally {
    eng.close();
    for (const x of [a, b, c]) x.close();
  }
});
