// `drill --target VF`: a drill of a RUNNING system. It starts nothing and sends no traffic: it
// finds the daemons serving the run dir, SIGKILLs them by pid at seeded moments, waits for
// their supervisor to bring them back (systemd Restart=always) - or with --restart starts them
// again itself from the command line the kernel still shows in /proc/PID/cmdline - and measures
// how long the control plane took to answer and what the VF's session saw (`vf -i`).
//
// Limits (docs/recovery.md): loss cannot be counted without our own numbered frames, so the VF's
// own counters stand in: a session that survived keeps its reconnect counter and its per-queue
// counters only grow; a session rebuilt by a restarted keeper starts them again from zero.
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, readlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HA_PID_FILE_NAME, keeperSocketPath, PID_FILE_NAME } from "@vhostd/runtime";
import { VF_RUNTIME_FIELDS, rpc, rpcSocket, socketOwnerPid, waitControlPlane } from "./rpc.js";
import { renderTable } from "./report.js";
import { rng, type DrillOptions, type EventKind } from "./options.js";
import type { FreshHooks } from "./fresh.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Daemon = "vhostd" | "keeper";

interface QueueCounters {
  index: number;
  packets: number;
  drops: number;
  errors: number;
}

interface VfView {
  state: string;
  connected: boolean;
  reconnects: number;
  queues: QueueCounters[];
}

export interface TargetEvent {
  index: number;
  kind: EventKind;
  atMs: number;
  pids: Partial<Record<Daemon, { old: number; new: number | null }>>;
  rpcMs: number | undefined;
  /** Kill to: every killed daemon serves its socket again (a new pid). */
  backMs: number | undefined;
  before: VfView;
  after: VfView | null;
  /**
   * The VF's session survived (its counters only grew, no reconnect); null when the VF moved
   * no frame before the kill, so a rebuilt session would look the same (nothing to judge by).
   */
  sessionKept: boolean | null;
  /** Reconnects the VF counted across the event (when the session was kept), else null. */
  reconnects: number | null;
  packets: number | null;
  drops: number | null;
  errors: number | null;
  configSame: boolean;
  row: string;
  broken: string[];
}

export interface TargetReport {
  mode: "target";
  date: string;
  target: string;
  runDir: string;
  ha: boolean;
  options: { kill: string; events: number; seed: number; intervalMs: [number, number]; restart: boolean; waitS: number };
  events: TargetEvent[];
  ok: boolean;
}

/** Whether a pid is gone (or a zombie: dead, only not reaped yet by its parent). */
function dead(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a.length > 0);
  } catch {
    return [];
  }
}

/**
 * The pid serving a daemon's socket (SO_PEERCRED), else its pid file's when that process is
 * alive and its command line names the daemon. A pid file alone may be stale after a kill -9.
 */
function findPid(runDir: string, d: Daemon): number | undefined {
  const sock = d === "vhostd" ? rpcSocket(runDir) : keeperSocketPath(runDir);
  const bySocket = socketOwnerPid(sock);
  if (bySocket) return bySocket;
  try {
    const pid = Number(readFileSync(join(runDir, d === "vhostd" ? PID_FILE_NAME : HA_PID_FILE_NAME), "utf8").trim());
    const name = d === "vhostd" ? /vfe-vhostd(\.js)?$|vhostd\/dist\/src\/main\.js$/ : /vfe-vhostd-ha(\.js)?$|ha\/dist\/src\/main\.js$/;
    if (Number.isInteger(pid) && pid > 1 && !dead(pid) && cmdline(pid).some((a) => name.test(a))) return pid;
  } catch {
    // no pid file
  }
  return undefined;
}

async function vfView(runDir: string, vf: string): Promise<VfView> {
  const r = await rpc(runDir, ["vf", "-i", vf], 2000);
  const d = r.device as Record<string, unknown>;
  const queues = (Array.isArray(d.queues) ? d.queues : []) as Array<Record<string, number>>;
  return {
    state: String(d.state),
    connected: d.connected === true,
    reconnects: Number(d.reconnects ?? 0),
    queues: queues.map((q) => ({ index: q.index!, packets: q.packets ?? 0, drops: q.drops ?? 0, errors: q.errors ?? 0 })),
  };
}

/** The VF's configuration as `vf -l` of its PF shows it (runtime fields left out). */
async function vfConfig(runDir: string, vf: string, pf: string): Promise<string> {
  const r = await rpc(runDir, ["vf", "-l", pf], 2000);
  const row = (r.devices as Array<Record<string, unknown>>).find((x) => x.vf === vf) ?? {};
  return JSON.stringify(Object.entries(row).filter(([k]) => !VF_RUNTIME_FIELDS.has(k)));
}

/** Starts a daemon again as it was started (same argv and cwd; the drill's environment). */
function restartFrom(argv: string[], cwd: string | undefined, d: Daemon): string {
  const log = join(tmpdir(), `vhostd-drill-restarted-${d}.log`);
  const out = openSync(log, "a");
  const env = { ...process.env };
  for (const k of ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]) delete env[k];
  // Detached and not waited for: it belongs to the system now, as if its supervisor had started it.
  const p = spawn(argv[0]!, argv.slice(1), { cwd, stdio: ["ignore", out, out], env, detached: true });
  closeSync(out);
  p.unref();
  return log;
}

export async function runTarget(o: DrillOptions, h: FreshHooks): Promise<TargetReport> {
  const vf = o.target!;
  const runDir = o.runDir;
  h.onCleanup(
    async () => undefined,
    () => undefined,
  ); // nothing of ours to clean: the system's daemons stay as they are
  // A daemon restarting right now (its supervisor at work) is given a moment to come back.
  const deadline = Date.now() + 3000;
  while (!findPid(runDir, "vhostd") && Date.now() < deadline) await sleep(50);
  if (!findPid(runDir, "vhostd")) throw new Error(`no vfe-vhostd serves ${rpcSocket(runDir)} and ${join(runDir, PID_FILE_NAME)} names no live vfe-vhostd (wrong --run-dir?)`);
  const ha = findPid(runDir, "keeper") !== undefined;
  if (!ha && o.kill !== "vhostd") throw new Error(`no keeper serves ${keeperSocketPath(runDir)}: nothing to --kill ${o.kill}`);
  const info = await rpc(runDir, ["vf", "-i", vf], 2000).catch((e) => {
    throw new Error(`--target ${vf}: ${(e as Error).message}`);
  });
  const pf = String(info.device.pf);
  const rand = rng(o.seed);
  const kinds: EventKind[] = ["vhostd", "keeper", "both"];
  const events: TargetEvent[] = [];
  h.err(`drill: target ${vf} (PF ${pf}) on ${runDir}, ${ha ? "keeper + vfe-vhostd" : "vfe-vhostd alone"}, ${o.restart ? "drill restarts" : "supervisor restarts"}\n`);
  for (let i = 0; i < o.events && !h.interrupted(); i++) {
    const kind: EventKind = o.kill === "mix" ? kinds[Math.floor(rand() * 3)]! : (o.kill as EventKind); // "none" is --migrate only
    const atMs = o.intervalMs[0] + Math.floor(rand() * (o.intervalMs[1] - o.intervalMs[0] + 1));
    await sleep(atMs);
    const victims: Daemon[] = kind === "both" ? ["keeper", "vhostd"] : [kind];
    const before = await vfView(runDir, vf);
    const config0 = await vfConfig(runDir, vf, pf);
    const found = victims.map((d) => ({ d, pid: findPid(runDir, d) }));
    const missing = found.filter((f) => !f.pid).map((f) => f.d);
    if (missing.length) throw new Error(`event ${i + 1}: ${missing.join(", ")} not running (the supervisor did not bring it back?)`);
    const argv = new Map(found.map((f) => [f.d, { argv: cmdline(f.pid!), cwd: (() => { try { return readlinkSync(`/proc/${f.pid}/cwd`); } catch { return undefined; } })() }]));

    const t0 = Date.now();
    for (const f of found) process.kill(f.pid!, "SIGKILL");
    while (!found.every((f) => dead(f.pid!))) await sleep(5);
    if (o.restart) {
      // The production order: the keeper first, and up, before vfe-vhostd.
      for (const d of ["keeper", "vhostd"] as const) {
        const a = argv.get(d);
        if (!a) continue;
        if (a.argv.length === 0) throw new Error(`cannot restart ${d}: its command line was unreadable`);
        const log = restartFrom(a.argv, a.cwd, d);
        h.err(`drill: restarted ${d}: ${a.argv.join(" ")} (output: ${log})\n`);
        if (d === "keeper") {
          const deadline = Date.now() + o.waitS * 1000;
          while (!findPid(runDir, "keeper") && Date.now() < deadline) await sleep(20);
        }
      }
    }
    const rpcMs = await waitControlPlane(runDir, ha, vf, t0, o.waitS * 1000);
    // Every killed daemon must be back (a new pid serving its socket) before the VF is judged:
    // with a keeper, RPC may answer long before the keeper is back (vfe-vhostd adopted its VFs).
    const pids: TargetEvent["pids"] = {};
    let backMs: number | undefined;
    for (;;) {
      for (const f of found) {
        const now = findPid(runDir, f.d);
        pids[f.d] = { old: f.pid!, new: now !== undefined && now !== f.pid ? now : null };
      }
      if (found.every((f) => pids[f.d]!.new !== null)) {
        backMs = Date.now() - t0;
        break;
      }
      if (Date.now() - t0 > o.waitS * 1000) break;
      await sleep(20);
    }
    // Let the session settle (a rebuilt one renegotiates) before reading its counters.
    await sleep(300);
    const after = await vfView(runDir, vf).catch(() => null);
    const configSame = await vfConfig(runDir, vf, pf).then((c) => c === config0, () => false);
    const grew = (a: VfView) =>
      a.reconnects >= before.reconnects &&
      before.queues.every((q) => {
        const n = a.queues.find((x) => x.index === q.index);
        return !!n && n.packets >= q.packets && n.drops >= q.drops && n.errors >= q.errors;
      });
    const observable = before.queues.some((q) => q.packets > 0);
    const kept = !!after && after.connected === before.connected && grew(after);
    const sessionKept = observable ? kept : null;
    const delta = (f: keyof Omit<QueueCounters, "index">) => (kept ? after!.queues.reduce((s, q) => s + q[f], 0) - before.queues.reduce((s, q) => s + q[f], 0) : null);
    const reconnects = kept ? after!.reconnects - before.reconnects : null;
    const broken: string[] = [];
    if (rpcMs === undefined) broken.push("control plane did not answer again");
    for (const f of found) if (pids[f.d]!.new === null) broken.push(`${f.d} not back within ${o.waitS} s`);
    if (!configSame) broken.push("configuration changed");
    let row: string;
    if (kind === "vhostd" && ha) {
      row = "vfe-vhostd killed";
      if (sessionKept === false) broken.push("the VF's session did not survive");
      else if (reconnects) broken.push(`${reconnects} front-end reconnect(s)`);
    } else if (kind === "keeper") {
      row = "vfe-vhostd-ha killed";
      if (sessionKept === false) broken.push("the VF's session was rebuilt (front-end reconnected)");
      else if (reconnects) broken.push(`${reconnects} front-end reconnect(s)`);
    } else {
      row = ha ? "both killed" : "vfe-vhostd killed (standalone: whole back-end)";
      if (before.connected && !after?.connected) broken.push("the front-end did not reconnect (yet)");
    }
    if ((delta("errors") ?? 0) > 0) broken.push(`${delta("errors")} malformed descriptor chain(s)`);
    const ev: TargetEvent = { index: i, kind, atMs, pids, rpcMs, backMs, before, after, sessionKept, reconnects, packets: delta("packets"), drops: delta("drops"), errors: delta("errors"), configSame, row, broken };
    events.push(ev);
    h.err(
      `drill: event ${i + 1}/${o.events} kill ${kind} (${found.map((f) => `${f.d} ${f.pid}`).join(", ")}): rpc ${rpcMs ?? "never"} ms, back ${backMs ?? "never"} ms, session ${sessionKept === null ? "not observable (the VF moved no frame before)" : kept ? "kept" : "rebuilt"}, ` +
        `${kept ? `reconnects +${reconnects}, packets +${ev.packets}, drops +${ev.drops}` : `state ${after?.state ?? "?"}`} -> ${broken.length ? "BROKEN: " + broken.join("; ") : "ok"}\n`,
    );
  }
  return {
    mode: "target",
    date: new Date().toISOString(),
    target: vf,
    runDir,
    ha,
    options: { kill: o.kill, events: o.events, seed: o.seed, intervalMs: o.intervalMs, restart: o.restart, waitS: o.waitS },
    events,
    ok: events.length === o.events && events.every((e) => e.broken.length === 0),
  };
}

export function renderTargetTable(r: TargetReport): string {
  const rows = r.events.map((e) => ({
    "#": e.index + 1,
    kill: e.kind,
    pids: Object.entries(e.pids)
      .map(([d, p]) => `${d} ${p!.old}->${p!.new ?? "?"}`)
      .join(", "),
    rpc_ms: e.rpcMs ?? "never",
    back_ms: e.backMs ?? "never",
    session: e.sessionKept === null ? "n/a (idle)" : e.sessionKept ? "kept" : "rebuilt",
    reconn: e.reconnects ?? "",
    packets: e.packets ?? "",
    drops: e.drops ?? "",
    "vf -l": e.configSame ? "config same" : "CHANGED",
    promise: e.broken.length ? "BROKEN: " + e.broken.join("; ") : "kept",
  }));
  return `vhostd drill ${r.date}: target ${r.target} on ${r.runDir} (${r.ha ? "keeper + vfe-vhostd" : "vfe-vhostd alone"}), kill ${r.options.kill}, seed ${r.options.seed}\n` + renderTable(rows);
}
