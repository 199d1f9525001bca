// One hostile case of the catalogue: an area (what it attacks), a name, and a run that
// attacks through a real socket and throws if the back-end did not refuse it as it must.
import { sleep, waitFor } from "../harness/daemon.js";
import type { HostileWorld } from "../harness/hostile_world.js";
import type { RingWriter } from "../harness/ring_writer.js";

export type HostileArea = "message" | "net" | "blk" | "inflight" | "log" | "mirror" | "rpc";

export interface HostileCase {
  area: HostileArea;
  name: string;
  run(w: HostileWorld): Promise<void>;
}

export class CaseFailed extends Error {}

export function expect(cond: unknown, what: string): asserts cond {
  if (!cond) throw new CaseFailed(what);
}

/**
 * Runs `act`, which must break `vf`'s queue: within 2 s a warning names the VF and the queue,
 * and the ring returns nothing more. Queue events are rate-limited to one a second per queue,
 * so it first waits out the previous case's.
 */
export async function expectQueueBroken(w: HostileWorld, vf: string, queue: number, ring: RingWriter, act: () => void): Promise<void> {
  await sleep(1100);
  const seen = w.keeperLogLines().length;
  const used = ring.usedIdx();
  const t0 = Date.now();
  act();
  const logged = () => w.keeperLogLines().slice(seen).some((l) => l.vf === vf && l.level >= 40 && l.queue === queue);
  await waitFor(logged, 5000, "a log line about the queue").catch(() => {});
  expect(logged(), "no warning naming the VF and the queue");
  const ms = Date.now() - t0;
  expect(ms < 2000, `breaking the queue took ${ms} ms`);
  await sleep(100);
  expect(ring.usedIdx() === used, "the broken ring still returned buffers");
}
