// No poison pill across HA (issue 17): which VF a daemon crash is attributed to, and what
// follows from it.
//
// The engine's threads publish in the shared engine file which device each one is serving,
// and a fatal-signal handler turns that into a crash record as the process dies
// (native/cc/crash_attr.h). This file is the JS half:
//  - the JS thread's own slot: `within(devId, fn)` around everything done for one VF (a
//    vhost-user message, an adoption, a resume), a plain typed-array store, no native call;
//  - the ledger, per device id in the same file (so it outlives either daemon, and a crash of
//    the adopter too): which VF uses the id (a tag of its address, socket and uuid), how many
//    crashes in a row it was implicated in, whether it is broken;
//  - the verdict: claim() takes the records a dead daemon left and counts them against the
//    devices they name. Two crashes in a row make a device broken: its session is not resumed
//    (connection closed, rings not started), `vf -i`/`vf -l` show state "broken" with the
//    reason, and it stays so until `vf -r` (which forgets its record) and `vf -a`.
//    A device served cleanly for `cleanMs` after a crash starts from zero again.
//
// A crash while delivering frames names two devices: the sender (served) and the receiver
// (delivered to). Both are counted; when both reach two, only the sender is broken (the frame
// came from it; a hostile receiving ring that crashes every sender is broken at the next crash
// that names it with another sender, or none, as the uplink).
import { constants } from "node:os";
import type { Logger } from "pino";
import { native, type CrashRecord, type NativeEngine } from "@vhostd/native";
import type { VfSpec } from "../vf_host.js";

/** The daemon behind each area of the shared file (NativeEngine crashRole). */
export const CRASH_ROLES = ["vfe-vhostd-ha", "vfe-vhostd"] as const;
export const KEEPER_CRASH_ROLE = 0;
export const VHOSTD_CRASH_ROLE = 1;
/** Crashes in a row that break a device. */
export const BREAK_AFTER = 2;
/** How long a device must run without a crash for its count to start again from zero. */
export const DEFAULT_CLEAN_MS = 60_000;

const F_BROKEN = 1;
const HOW = ["", "serving", "delivering frames to", "handling"] as const;
type How = 1 | 2 | 3;

export interface CrashState {
  /** Crashes in a row this VF was implicated in (0: none, or cleared). */
  count: number;
  broken: boolean;
  /** Why, for `vf -i` (last_error) and the log; set once count > 0. */
  reason?: string;
}

export interface Implicated {
  devId: number;
  vf?: string;
  socket?: string;
  how: string;
  count: number;
  broken: boolean;
}

export interface CrashVerdict {
  crashed: string;
  pid: number;
  signal: string;
  implicated: Implicated[];
}

/** Names a device id for the log (the caller's VFs). */
export type DevLookup = (devId: number) => { dev: string; socketPath: string } | undefined;

/** Which VF uses a device id: FNV-1a of its address, socket and uuid; never 0. */
export function vfTag(spec: Pick<VfSpec, "dev" | "socketPath" | "uuid">): number {
  let h = 0x811c9dc5;
  for (const ch of Buffer.from(`${spec.dev}\n${spec.socketPath}\n${spec.uuid ?? ""}`)) {
    h ^= ch;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h === 0 ? 1 : h;
}

export function signalName(sig: number): string {
  if (sig === 0) return "an uncaught exception";
  const hit = Object.entries(constants.signals).find(([, n]) => n === sig);
  return hit ? hit[0] : `signal ${sig}`;
}

function ordinal(n: number): string {
  return n === 1 ? "1st" : n === 2 ? "2nd" : n === 3 ? "3rd" : `${n}th`;
}

/** Errors thrown out of `within(devId, …)`: the device the JS thread was handling then. */
const thrownFor = new WeakMap<object, number>();

export class CrashLedger {
  private readonly slot: Uint32Array;
  private readonly ledger: Uint32Array;
  private readonly maxDevices: number;

  constructor(
    engine: NativeEngine,
    private readonly log: Logger,
  ) {
    this.slot = engine.crash.jsSlot;
    this.ledger = engine.crash.ledger;
    this.maxDevices = this.ledger.length / 4;
    this.claimFn = () => engine.claimCrashes();
  }

  private readonly claimFn: () => CrashRecord[];

  /* ------------------------------------------------------------------ the JS slot */

  /**
   * Runs fn with the JS thread's crash slot naming devId: a crash (or an uncaught exception
   * thrown out of fn) is then this device's. Nests (the outer device comes back after).
   */
  within<T>(devId: number, fn: () => T): T {
    const prev = this.slot[0]!;
    this.slot[0] = devId + 1;
    try {
      const out = fn();
      this.slot[0] = prev;
      return out;
    } catch (err) {
      this.slot[0] = prev;
      if (typeof err === "object" && err !== null && !thrownFor.has(err)) thrownFor.set(err, devId);
      throw err;
    }
  }

  /* ------------------------------------------------------------------ the ledger */

  private at(devId: number): number {
    return devId >= 0 && devId < this.maxDevices ? devId * 4 : -1;
  }

  /** The device id is now this VF's: a record left by another VF under the same id is dropped. */
  register(spec: VfSpec): void {
    const i = this.at(spec.devId);
    if (i < 0) return;
    const tag = vfTag(spec);
    if (this.ledger[i] === tag) return;
    this.ledger.fill(0, i, i + 4);
    this.ledger[i] = tag;
  }

  state(spec: VfSpec): CrashState {
    const i = this.at(spec.devId);
    if (i < 0 || this.ledger[i] !== vfTag(spec)) return { count: 0, broken: false };
    const count = this.ledger[i + 1]!;
    const flags = this.ledger[i + 2]!;
    const broken = (flags & F_BROKEN) !== 0;
    if (count === 0 && !broken) return { count, broken };
    const sig = (flags >>> 8) & 0xff;
    const role = CRASH_ROLES[(flags >>> 16) & 0x3] ?? "a daemon";
    const how = HOW[(flags >>> 18) & 0x3] || "serving";
    const when = new Date(this.ledger[i + 3]! * 1000).toISOString();
    const last = `last: ${role} died of ${signalName(sig)} while ${how} it, ${when}`;
    const reason = broken
      ? `broken: implicated in ${count} crashes in a row (${last}); its session is not resumed. To serve it again: vf -r, then vf -a`
      : `implicated in ${count} crash(es) in a row (${last}); a ${ordinal(BREAK_AFTER)} breaks it`;
    return { count, broken, reason };
  }

  /** `vf -r`: the VF is gone, and its record with it (re-adding it starts clean). */
  forget(spec: VfSpec): void {
    const i = this.at(spec.devId);
    if (i >= 0 && this.ledger[i] === vfTag(spec)) this.ledger.fill(0, i, i + 4);
  }

  /** It ran cleanly long enough: its crashes are no longer "in a row". True if it had any. */
  clean(spec: VfSpec): boolean {
    const i = this.at(spec.devId);
    if (i < 0 || this.ledger[i] !== vfTag(spec) || this.ledger[i + 1] === 0 || (this.ledger[i + 2]! & F_BROKEN) !== 0) return false;
    this.ledger[i + 1] = 0;
    return true;
  }

  /** Any device with a count (the clean-interval timer has nothing to do otherwise). */
  anyCounted(): boolean {
    for (let i = 1; i < this.ledger.length; i += 4) if (this.ledger[i] !== 0) return true;
    return false;
  }

  /* ------------------------------------------------------------------ the verdict */

  /**
   * Takes every crash record a dead daemon left (each is taken exactly once, by whichever
   * daemon looks first) and counts it against the devices it names. Call before running any
   * VF the dead daemon ran: after it, state() says which are broken.
   */
  claim(lookup: DevLookup = () => undefined): CrashVerdict[] {
    let records: CrashRecord[];
    try {
      records = this.claimFn();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "crash records could not be read");
      return [];
    }
    return records.map((r) => this.judge(r, lookup));
  }

  private judge(r: CrashRecord, lookup: DevLookup): CrashVerdict {
    const crashed = CRASH_ROLES[r.role] ?? `role ${r.role}`;
    const signal = signalName(r.sig);
    const base = { event: "crash_attributed", crashed, pid: r.pid, signal, thread: r.slot === 0 ? "js" : r.slot > 0 ? `worker ${r.slot - 1}` : "other" };
    const jsThread = r.slot === 0 || r.command || r.external || r.jsException;
    const named: Array<{ devId: number; tag: number; how: How }> = [];
    if (r.serve >= 0) named.push({ devId: r.serve, tag: r.serveTag, how: jsThread ? 3 : 1 });
    if (r.peer >= 0 && r.peer !== r.serve) named.push({ devId: r.peer, tag: r.peerTag, how: 2 });
    const implicated: Implicated[] = [];
    const sec = Math.floor((r.atMs || Date.now()) / 1000) >>> 0;
    for (const n of named) {
      const i = this.at(n.devId);
      const who = lookup(n.devId);
      if (i < 0 || n.tag === 0 || this.ledger[i] !== n.tag) {
        this.log.warn({ ...base, devId: n.devId, vf: who?.dev }, `${crashed} (pid ${r.pid}) died of ${signal} while ${HOW[n.how]} device ${n.devId}, which no longer belongs to the VF it was then: not counted`);
        continue;
      }
      const count = Math.min(this.ledger[i + 1]! + 1, 255);
      this.ledger[i + 1] = count;
      this.ledger[i + 2] = (this.ledger[i + 2]! & F_BROKEN) | ((r.sig & 0xff) << 8) | ((r.role & 0x3) << 16) | (n.how << 18);
      this.ledger[i + 3] = sec;
      implicated.push({ devId: n.devId, vf: who?.dev, socket: who?.socketPath, how: HOW[n.how], count, broken: false });
    }
    // Two in a row breaks a device; of a sender and its receiver both there, the sender.
    const served = implicated.find((x) => x.how !== HOW[2] && x.count >= BREAK_AFTER);
    for (const x of implicated) {
      if (x.count < BREAK_AFTER || (served && x !== served)) continue;
      x.broken = true;
      const i = this.at(x.devId);
      this.ledger[i + 2] = this.ledger[i + 2]! | F_BROKEN;
    }
    if (named.length === 0) {
      this.log.warn({ ...base }, `${crashed} (pid ${r.pid}) died of ${signal} while serving no device: nothing to hold against a VF`);
    }
    for (const x of implicated) {
      const msg = x.broken
        ? `${crashed} (pid ${r.pid}) died of ${signal} while ${x.how} VF ${x.vf ?? `device ${x.devId}`} (${x.socket ?? "?"}): its ${ordinal(x.count)} crash in a row; the VF is broken and will not be resumed`
        : `${crashed} (pid ${r.pid}) died of ${signal} while ${x.how} VF ${x.vf ?? `device ${x.devId}`} (${x.socket ?? "?"}): its ${ordinal(x.count)} crash in a row; a ${ordinal(BREAK_AFTER)} breaks it`;
      this.log[x.broken ? "error" : "warn"]({ ...base, vf: x.vf, socket: x.socket, devId: x.devId, how: x.how, count: x.count, broken: x.broken }, msg);
    }
    return { crashed, pid: r.pid, signal, implicated };
  }
}

/**
 * For the daemons' uncaughtException handlers: record the exception as a crash of the VF being
 * handled when it was thrown (see CrashLedger.within), before the process exits.
 */
export function noteFatalException(err: unknown): void {
  try {
    const dev = typeof err === "object" && err !== null ? thrownFor.get(err) : undefined;
    native.noteFatalException(dev ?? -1);
  } catch {
    /* the exit goes on */
  }
}
