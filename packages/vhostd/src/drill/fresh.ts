// The fresh-pair drill: a private pair, K VFs carrying driver streams, N seeded SIGKILL events,
// each measured in its own traffic window (see traffic.ts) and judged (promises.ts).
//
// Topology: one net PF per pair of VFs. The engine's switch is a learning switch: a frame to a
// MAC it has not learned yet is flooded to every port of the PF, and a keeper restart empties
// the FDB. A flooded frame reaching a third driver would show up there as a stream starting
// at seq N, i.e. N "lost" frames that were never lost. One switch per pair keeps the accounting
// exact; in each pair one VF is client mode (vhostd connects to a listening driver), and in
// every other pair the partner is server mode (vhostd listens, the driver connects), so both
// kinds of socket are drilled.
import { cpus } from "node:os";
import { VF_RUNTIME_FIELDS, rpc, waitControlPlane } from "./rpc.js";
import { Pair, type Daemon } from "./pair.js";
import { Link, drain, waitFlowing, type LinkSpec } from "./traffic.js";
import { judge } from "./promises.js";
import { progressLine, totals, type EventRecord, type FreshReport } from "./report.js";
import { rng, type DrillOptions, type EventKind } from "./options.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Ring size of the drivers: also what bounds the frames a dropped connection can take along. */
const QUEUE_SIZE = 1024;
/** Traffic kept flowing after recovery before the window closes (shows it really resumed). */
const TAIL_MS = 300;
/** Between starting the receivers and the senders of a window (see Link.startRx). */
const RX_READY_MS = 50;
/** Longest wait for the control plane / the traffic to come back before calling it broken. */
const RECOVERY_LIMIT_MS = 30_000;

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** Link j's PF: 0000:BB:00.2 with BB = a0 + j. */
function pfOf(j: number): string {
  return `0000:${hex2(0xa0 + j)}:00.2`;
}

/** Link j: its PF, and the PF's VF 0 and VF 1 (offset 35, stride 8). */
function linkSpecs(pair: Pair, vfs: number): LinkSpec[] {
  const out: LinkSpec[] = [];
  for (let j = 0; j < vfs / 2; j++) {
    const bus = hex2(0xa0 + j);
    out.push({
      index: j,
      pf: pfOf(j),
      a: { vf: `0000:${bus}:04.5`, sock: pair.sock(`vf${j}a`), mode: "client" },
      b: { vf: `0000:${bus}:05.5`, sock: pair.sock(`vf${j}b`), mode: j % 2 === 0 ? "server" : "client" },
    });
  }
  return out;
}

/** The PFs vfe-vhostd's inventory needs (--config). */
function config(vfs: number): unknown {
  return { pfs: Array.from({ length: vfs / 2 }, (_, j) => ({ dev: pfOf(j), type: "net", firstVfOffset: 35, numVfs: 8 })) };
}

type VfRow = Record<string, unknown>;

async function vfList(runDir: string, specs: LinkSpec[]): Promise<VfRow[]> {
  const rows: VfRow[] = [];
  for (const s of specs) rows.push(...((await rpc(runDir, ["vf", "-l", s.pf])).devices as VfRow[]));
  return rows.sort((x, y) => String(x.vf).localeCompare(String(y.vf)));
}

function configOnly(rows: VfRow[]): VfRow[] {
  return rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !VF_RUNTIME_FIELDS.has(k))));
}

/**
 * Frames the engine dropped at the VFs' RX queues (no buffer posted, queue stopped), summed;
 * undefined when unknown (the keeper is down, or restarted and counts from zero again).
 */
async function engineRxDrops(runDir: string, specs: LinkSpec[]): Promise<number | undefined> {
  let n = 0;
  for (const s of specs) {
    for (const vf of [s.a.vf, s.b.vf]) {
      const r = await rpc(runDir, ["vf", "-i", vf], 2000).catch(() => undefined);
      const qs = r?.device?.queues as Array<{ index: number; drops: number }> | undefined;
      if (!qs || r.device.state === "unknown") return undefined;
      n += qs.filter((q) => q.index % 2 === 0).reduce((x, q) => x + q.drops, 0);
    }
  }
  return n;
}

export interface FreshHooks {
  err: (s: string) => void;
  /** Registers the cleanup the SIGINT handler must run. */
  onCleanup: (fn: () => Promise<void>, now: () => void) => void;
  interrupted: () => boolean;
}

export async function runFresh(o: DrillOptions, h: FreshHooks): Promise<FreshReport> {
  const pair = new Pair({ standalone: o.standalone, keep: o.keep, config: config(o.vfs) });
  const specs = linkSpecs(pair, o.vfs);
  const links = specs.map((s) => new Link(s));
  h.onCleanup(
    async () => {
      for (const l of links) l.close();
      await pair.cleanup();
    },
    () => {
      for (const l of links) l.close();
      pair.killAllNow();
    },
  );
  const rand = rng(o.seed);
  const events: EventRecord[] = [];
  h.err(`drill: pair in ${pair.dir} (${pair.ha ? "keeper + vfe-vhostd --ha" : "vfe-vhostd standalone"}), ${specs.length} PF(s), ${o.vfs} VF(s)\n`);
  await pair.start();
  for (const s of specs) await rpc(pair.runDir, ["mgmtpf", "-a", s.pf]);
  const addVf = async (vf: string, sock: string, mode: "client" | "server") => {
    await rpc(pair.runDir, ["vf", "-a", vf, "-v", sock, ...(mode === "server" ? ["--server"] : [])]);
  };
  for (const l of links) await l.open(addVf, QUEUE_SIZE);

  const kinds: EventKind[] = ["vhostd", "keeper", "both"];
  for (let i = 0; i < o.events && !h.interrupted(); i++) {
    const kind: EventKind = o.kill === "mix" ? kinds[Math.floor(rand() * 3)]! : (o.kill as EventKind); // "none" is --migrate only
    const atMs = o.intervalMs[0] + Math.floor(rand() * (o.intervalMs[1] - o.intervalMs[0] + 1));
    const reconnects0 = links.reduce((s, l) => s + l.reconnects, 0);
    const drops0 = await engineRxDrops(pair.runDir, specs);
    for (const l of links) l.startRx(i);
    await sleep(RX_READY_MS);
    for (const l of links) l.startTx(o.ratePps, o.frameSize);
    await sleep(atMs);
    // Listed with traffic flowing: a VF's port locks to the first source MAC it sends
    // (mac_locked), and that lock must then survive the event like everything else listed.
    const before = await vfList(pair.runDir, specs);

    // The event: SIGKILL, then restart what died the way systemd would (keeper first).
    const victims: Daemon[] = kind === "both" ? ["keeper", "vhostd"] : [kind];
    const base = links.map((l) => l.rxCounts());
    const t0 = Date.now();
    await Promise.all(victims.map((d) => pair.kill(d)));
    const abort = { aborted: false };
    const rpcP = waitControlPlane(pair.runDir, pair.ha, specs[0]!.a.vf, t0, RECOVERY_LIMIT_MS, abort);
    const trafficP = waitFlowing(links, base, t0, RECOVERY_LIMIT_MS, abort);
    let restartError: string | undefined;
    for (const d of victims) {
      try {
        await pair.startDaemon(d);
      } catch (e) {
        restartError = (e as Error).message;
        break;
      }
    }
    const backMs = Date.now() - t0;
    if (restartError !== undefined) {
      // A daemon that does not come back is the worst broken promise there is; nothing more
      // can be measured after it.
      abort.aborted = true;
      await Promise.all([rpcP, trafficP]);
      for (const l of links) l.stopTx();
      const none = { sent: 0, received: 0, lost: 0, duplicated: 0, corrupted: 0, maxGapMs: 0, reconnects: 0, inFlightBound: 0, reconnectMs: 0 };
      const rec: EventRecord = {
        index: i,
        kind,
        atMs,
        backMs: undefined,
        ...none,
        rpcMs: undefined,
        trafficMs: undefined,
        configSame: false,
        listSame: false,
        engineDrops: null,
        row: kind,
        broken: [`restart failed: ${restartError}`],
      };
      events.push(rec);
      h.err(progressLine(rec, o.events));
      break;
    }
    const [rpcMs, trafficMs] = await Promise.all([rpcP, trafficP]);
    await sleep(TAIL_MS);
    await drain(links);

    const streams = links.flatMap((l) => l.result());
    const after = await vfList(pair.runDir, specs).catch(() => [] as VfRow[]);
    const drops1 = await engineRxDrops(pair.runDir, specs);
    const sum = (f: (s: (typeof streams)[number]) => number) => streams.reduce((n, s) => n + f(s), 0);
    const m = {
      kind,
      sent: sum((s) => s.sent),
      received: sum((s) => s.received),
      lost: sum((s) => s.lost),
      duplicated: sum((s) => s.duplicated),
      corrupted: sum((s) => s.corrupted),
      maxGapMs: Math.round(Math.max(...streams.map((s) => s.maxGapUs)) / 1000),
      rpcMs,
      trafficMs,
      reconnects: links.reduce((s, l) => s + l.reconnects, 0) - reconnects0,
      configSame: JSON.stringify(configOnly(after)) === JSON.stringify(configOnly(before)),
      listSame: JSON.stringify(after) === JSON.stringify(before),
      inFlightBound: streams.length * 2 * QUEUE_SIZE,
      // The engine's counters survive only a vfe-vhostd kill with a keeper (the keeper runs the engine).
      engineDrops: pair.ha && kind === "vhostd" && drops0 !== undefined && drops1 !== undefined && drops1 >= drops0 ? drops1 - drops0 : null,
    };
    const j = judge(m, { standalone: o.standalone, maxGapMs: o.maxGapMs });
    const reconnectMs = m.reconnects ? Math.max(...links.map((l) => l.lastReconnectMs)) : 0;
    const rec: EventRecord = { index: i, atMs, backMs, reconnectMs, ...m, row: j.row, broken: j.broken };
    events.push(rec);
    h.err(progressLine(rec, o.events));
  }

  const t = totals(events);
  return {
    mode: "fresh",
    date: new Date().toISOString(),
    host: { cpus: cpus().length, node: process.version },
    options: { kill: o.kill, events: o.events, seed: o.seed, vfs: o.vfs, ratePps: o.ratePps, frameSize: o.frameSize, intervalMs: o.intervalMs, standalone: o.standalone, maxGapMs: o.maxGapMs },
    topology: specs.map((s) => ({ pf: s.pf, vfs: [s.a, s.b].map((v) => ({ vf: v.vf, mode: v.mode })) })),
    events,
    totals: t,
    ok: events.length === o.events && t.broken === 0,
    ...(events.length < o.events ? { stopped: `after ${events.length} of ${o.events} event(s)` } : {}),
    ...(o.keep ? { dir: pair.dir } : {}),
  };
}
