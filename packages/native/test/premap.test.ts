// Mappings made ahead (premapKeep): the engine's next mapping of the same file range takes one
// instead of calling mmap(), and the device runs on it; untaken ones are released.
import test from "ava";
import { native, type EngineEvent } from "../src/native.js";
import { DrvRing, Guest, VNet, frame, waitFor } from "./engine_guest.js";

const A = "52:54:00:00:0c:0a";
const B = "52:54:00:00:0c:0b";

test("a kept mapping is taken by the engine's memory table and carries traffic; release drops an untaken one", async (t) => {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: 8 }, (ev) => events.push(ev));
  eng.addSwitch(1);
  const a = new VNet(eng, 1, A);
  const b = new VNet(eng, 2, B);
  const g2 = new Guest();
  try {
    const base = native.premapCount();
    const r = g2.region();
    const id = native.premapKeep(g2.fd, r.mmapOffset, r.size);
    t.true(id > 0);
    t.is(native.premapCount(), base + 1);
    // A's new memory table maps g2: it takes the kept mapping.
    eng.setMemTable(1, [r]);
    t.is(native.premapCount(), base, "taken, not mapped again");
    native.premapRelease(id); // taken: ignored
    const rx2 = new DrvRing(g2);
    const tx2 = new DrvRing(g2);
    eng.startQueue(1, 0, rx2.cfg());
    eng.startQueue(1, 1, tx2.cfg());
    const buf = g2.alloc(2048);
    rx2.publish(rx2.chain([{ addr: g2.addr(buf), len: 2048, write: true }]));
    b.send(frame(A, B, 128, 7));
    t.true(await waitFor(() => rx2.usedIdx() === 1), "B -> A delivered into the premapped memory");
    t.deepEqual(g2.buf.subarray(buf + 12, buf + 12 + 128), frame(A, B, 128, 7));
    t.deepEqual(events, []);
    for (const x of [rx2, tx2]) x.closeFds();

    // Kept and never taken: released; hostile arguments are refused, nothing kept.
    const id2 = native.premapKeep(g2.fd, 0n, 4096n);
    t.is(native.premapCount(), base + 1);
    native.premapRelease(id2);
    t.is(native.premapCount(), base);
    t.throws(() => native.premapKeep(g2.fd, 0n, 0n), { message: /Invalid argument/ });
    t.throws(() => native.premapKeep(g2.fd, BigInt(g2.size), 4096n), { message: /Invalid argument/ }, "past the file's end");
    t.throws(() => native.premapKeep(g2.fd, 2n ** 64n - 1n, 4096n), { message: /Invalid argument/ }, "wraps");
    t.throws(() => native.premapKeep(-1, 0n, 4096n));
    t.is(native.premapCount(), base);
  } finally {
    eng.close();
    for (const x of [a, b]) x.close();
    g2.close();
  }
});
