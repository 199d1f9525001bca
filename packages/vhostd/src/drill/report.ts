// What a drill prints: one progress line per event on stderr while it runs, then one table row
// per event and a totals row (or the same as JSON with --json). The numbers are the
// measurements themselves; the verdict column names each broken promise.
import type { EventMeasure } from "./promises.js";
import type { DrillOptions } from "./options.js";

export interface EventRecord extends EventMeasure {
  index: number;
  /** Traffic time before the kill, ms (the seeded random moment). */
  atMs: number;
  /** Kill to: every killed daemon restarted and serving (keeper: inspection socket; vfe-vhostd: RPC). */
  backMs: number | undefined;
  /** Front-end reconnect time (drop to renegotiated), longest of the event, ms. */
  reconnectMs: number;
  row: string;
  broken: string[];
}

export interface FreshReport {
  mode: "fresh";
  date: string;
  host: { cpus: number; node: string };
  options: Omit<DrillOptions, "target" | "runDir" | "restart" | "waitS" | "json" | "keep" | "migrate" | "hops" | "guestDir">;
  topology: Array<{ pf: string; vfs: Array<{ vf: string; mode: string }> }>;
  events: EventRecord[];
  totals: {
    events: number;
    sent: number;
    received: number;
    lost: number;
    duplicated: number;
    corrupted: number;
    reconnects: number;
    maxGapMs: number;
    rpcMs: { min: number | null; median: number | null; max: number | null };
    broken: number;
  };
  ok: boolean;
  /** Set when the drill stopped early (a daemon did not come back, or SIGINT). */
  stopped?: string;
  /** Kept directory with the daemons' logs (--keep). */
  dir?: string;
}

/** A plain aligned table (own copy: the CLI's formatter is free to change its look). */
export function renderTable(rows: Array<Record<string, unknown>>): string {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cells = rows.map((r) => cols.map((c) => (r[c] === undefined || r[c] === null ? "" : String(r[c]))));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (vals: string[]) => vals.map((v, i) => (i === vals.length - 1 ? v : v.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(cols), ...cells.map(line)].join("\n") + "\n";
}

const ms = (v: number | undefined) => (v === undefined ? "never" : String(v));

export function progressLine(e: EventRecord, total: number): string {
  return (
    `drill: event ${e.index + 1}/${total} kill ${e.kind} after ${e.atMs} ms: ` +
    `sent ${e.sent} recv ${e.received} lost ${e.lost}${e.lost && e.engineDrops !== null ? ` (engine drops ${e.engineDrops})` : ""} dup ${e.duplicated} corrupt ${e.corrupted} ` +
    `gap ${e.maxGapMs} ms, rpc ${ms(e.rpcMs)} ms, daemons back ${ms(e.backMs)} ms, traffic ${ms(e.trafficMs)} ms, reconnects ${e.reconnects}, ` +
    `vf -l ${e.listSame ? "identical" : e.configSame ? "config identical" : "CHANGED"} -> ${e.broken.length ? "BROKEN: " + e.broken.join("; ") : "ok"}\n`
  );
}

export function totals(events: EventRecord[]): FreshReport["totals"] {
  const sum = (f: (e: EventRecord) => number) => events.reduce((s, e) => s + f(e), 0);
  const rpc = events.map((e) => e.rpcMs).filter((v): v is number => v !== undefined).sort((a, b) => a - b);
  return {
    events: events.length,
    sent: sum((e) => e.sent),
    received: sum((e) => e.received),
    lost: sum((e) => e.lost),
    duplicated: sum((e) => e.duplicated),
    corrupted: sum((e) => e.corrupted),
    reconnects: sum((e) => e.reconnects),
    maxGapMs: Math.max(0, ...events.map((e) => e.maxGapMs)),
    rpcMs: { min: rpc[0] ?? null, median: rpc.length ? rpc[rpc.length >> 1]! : null, max: rpc.length ? rpc[rpc.length - 1]! : null },
    broken: events.filter((e) => e.broken.length).length,
  };
}

export function renderFreshTable(r: FreshReport): string {
  const rows: Array<Record<string, unknown>> = r.events.map((e) => ({
    "#": e.index + 1,
    kill: e.kind,
    at_ms: e.atMs,
    sent: e.sent,
    recv: e.received,
    lost: e.lost,
    dup: e.duplicated,
    corrupt: e.corrupted,
    gap_ms: e.maxGapMs,
    rpc_ms: ms(e.rpcMs),
    traffic_ms: ms(e.trafficMs),
    reconn: e.reconnects,
    "vf -l": e.listSame ? "same" : e.configSame ? "config same" : "CHANGED",
    promise: e.broken.length ? "BROKEN: " + e.broken.join("; ") : "kept",
  }));
  const t = r.totals;
  rows.push({
    "#": "all",
    kill: r.options.kill,
    at_ms: "",
    sent: t.sent,
    recv: t.received,
    lost: t.lost,
    dup: t.duplicated,
    corrupt: t.corrupted,
    gap_ms: t.maxGapMs,
    rpc_ms: t.rpcMs.median === null ? "never" : `${t.rpcMs.min}/${t.rpcMs.median}/${t.rpcMs.max}`,
    traffic_ms: "",
    reconn: t.reconnects,
    "vf -l": "",
    promise: t.broken ? `${t.broken} of ${t.events} event(s) broke a promise` : "all kept",
  });
  const o = r.options;
  const head =
    `vhostd drill ${r.date}: ${o.standalone ? "vfe-vhostd standalone" : "keeper + vfe-vhostd --ha"}, kill ${o.kill}, ${o.events} event(s), seed ${o.seed}, ` +
    `${o.vfs} VFs (${r.topology.length} PF(s)), ${o.ratePps} pps x ${o.frameSize} B per direction, interval ${o.intervalMs[0]}-${o.intervalMs[1]} ms, ${r.host.cpus} CPU(s)\n`;
  const foot = "rpc_ms of the totals row: min/median/max; gap_ms: longest gap between received frames in any stream's window.\n";
  return head + renderTable(rows) + foot + (r.stopped ? `drill stopped ${r.stopped}\n` : "");
}
