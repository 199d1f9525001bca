// The blk inflight area is shared memory the front-end can rewrite at any moment: nothing in it
// may bound what the engine writes. desc_num rewritten after the area was checked (0xffff made a
// ring restart write ~1 MiB past the mapping; 1 made heads go untracked), and an area whose
// queue size is not the ring's (heads past its table) are handled with the sizes we checked.
import test from "ava";
import fs from "node:fs";
import { native, type EngineEvent } from "../src/native.js";
import { testSupport } from "../src/testing.js";
import { DrvRing, F, Guest, waitFor } from "./engine_guest.js";

const T_OUT = 1;
const RING = 256;
const areaBytes = (queueSize: number) => Math.ceil((16 + 16 * queueSize) / 64) * 64;

function setup(t: { teardown: (f: () => void) => void }) {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 4 }, (ev) => events.push(ev));
  eng.addBlkDevice(1, { fd: -1, nullBytes: 16 << 20, numQueues: 1 });
  eng.setFeatures(1, F.VERSION_1);
  const g = new Guest(8 << 20);
  eng.setMemTable(1, [g.region()]);
  const r = new DrvRing(g, RING);
  t.teardown(() => {
    eng.close();
    r.closeFds();
    g.close();
  });
  /** One 4 KiB write to the null disk; resolves with its head once it completed. */
  const write = async (): Promise<number> => {
    const h = g.alloc(16);
    g.buf.writeUInt32LE(T_OUT, h);
    const data = g.alloc(4096, 512);
    const st = g.alloc(1);
    const head = r.chain([
      { addr: g.addr(h), len: 16 },
      { addr: g.addr(data), len: 4096 },
      { addr: g.addr(st), len: 1, write: true },
    ]);
    const before = r.usedIdx();
    r.publish(head);
    r.doKick();
    if (!(await waitFor(() => r.usedIdx() === ((before + 1) & 0xffff), 5000))) throw new Error("request never completed");
    return head;
  };
  return { eng, events, g, r, write };
}

function area(t: { teardown: (f: () => void) => void }, queueSize: number) {
  const bytes = areaBytes(queueSize);
  const fd = native.memfdCreate("inflight-hostile", bytes);
  t.teardown(() => native.closeFd(fd));
  const u16 = (off: number, v: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v);
    fs.writeSync(fd, b, 0, 2, off);
  };
  const counter = (head: number) => {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, 16 + 16 * head + 8);
    return b.readBigUInt64LE(0);
  };
  return { fd, bytes, u16, counter, spec: { fd, size: BigInt(bytes), offset: 0n, numQueues: 1, queueSize } };
}

test("desc_num rewritten to 0xffff after the check: a ring restart clears queue_size marks, not 65535", (t) => {
  const s = setup(t);
  const a = area(t, RING);
  s.eng.setBlkInflight(1, { ...a.spec, fresh: true });
  s.eng.startQueue(1, 0, s.r.cfg());
  a.u16(10, 0xffff);
  // Before: 65535 x 16 bytes of stores from the area's start, far past its one page (SIGSEGV).
  s.eng.stopQueue(1, 0);
  s.eng.startQueue(1, 0, s.r.cfg());
  t.pass("the process is alive");
});

test("desc_num rewritten to 1: heads up to the checked queue size are still tracked", async (t) => {
  const s = setup(t);
  const a = area(t, RING);
  s.eng.setBlkInflight(1, { ...a.spec, fresh: true });
  s.eng.startQueue(1, 0, s.r.cfg());
  a.u16(10, 1);
  const head = await s.write(); // head 0: three descriptors
  const next = await s.write(); // head 3
  t.true(next > 0);
  t.true(a.counter(head) > 0n && a.counter(next) > a.counter(head), "both heads were marked, in order");
});

test("an area for another queue size than the ring: the running ring stops, a start is refused", async (t) => {
  const s = setup(t);
  s.eng.startQueue(1, 0, s.r.cfg());
  const a = area(t, RING / 4); // heads of this ring reach 4x past its table
  s.eng.setBlkInflight(1, { ...a.spec, fresh: true });
  t.true(await waitFor(() => s.events.some((e) => e.devId === 1 && e.kind === "queue-broken")));
  t.regex(s.events.find((e) => e.kind === "queue-broken")!.reason, /ring size 256 differs from the inflight area's queue size 64/);
  t.is(testSupport.eventFdRead(s.r.err), 1, "err fd signalled");
  t.throws(() => s.eng.startQueue(1, 0, s.r.cfg()), { message: /ring size 256 differs from the inflight area's queue size 64/ });
  // With a matching area the ring runs again.
  const b = area(t, RING);
  s.eng.setBlkInflight(1, { ...b.spec, fresh: true });
  s.eng.startQueue(1, 0, s.r.cfg());
  await s.write();
  t.pass();
});
