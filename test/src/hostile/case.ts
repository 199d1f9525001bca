// One hostile case of the catalogue: an area (what it attacks), a name, and a run that
// attacks through a real socket and throws if the back-end did not refuse it as it must.
import type { HostileWorld } from "../harness/hostile_world.js";

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
