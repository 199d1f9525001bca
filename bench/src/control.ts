// Control-plane figures of the HA pair with many VFs: time to add them, RSS and journal size,
// restore after kill -9 of vfe-vhostd, takeover by vfe-vhostd after kill -9 of the keeper,
// graceful keeper restart (hand-over and take-back), and idle CPU of the pair.
// VFs are server-mode (vhostd listens), with no front-end: this measures the control plane,
// not sessions (the HA kill tests and the drill measure those).
import fs from "node:fs";
import path from "node:path";
import { Daemon, waitFor } from "@vhostd/test/harness/daemon";
import { call, mirrorComplete } from "@vhostd/vhostd";
import { cpuSeconds, rssMiB } from "./sys.js";

const PF = "0000:af:00.2";
/** RPC clients adding at once in the concurrent add (an orchestrator starting VMs in parallel). */
export const ADD_CLIENTS = 8;

export interface ControlResult {
  vfs: number;
  addMs: number;
  /** The same adds from ADD_CLIENTS RPC clients at once (after removing them all again). */
  addConcurrentMs: number;
  rssVhostdMiB: number;
  rssKeeperMiB: number;
  journalKiB: number;
  replicaKiB: number;
  restoreMs: number;
  takeoverMs: number;
  keeperRestartMs: number;
  idleCpuPct: number;
}

/** The i-th VF of the net PF: first VF 0000:af:04.5, stride 8 (routing ids). */
function vfAddr(i: number): string {
  const rid = ((0xaf << 8) | (4 << 3) | 5) + 8 * i;
  const bus = rid >> 8;
  const dev = (rid >> 3) & 0x1f;
  const fn = rid & 7;
  return `0000:${bus.toString(16).padStart(2, "0")}:${dev.toString(16).padStart(2, "0")}.${fn}`;
}

function dirKiB(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? dirKiB(p) * 1024 : fs.statSync(p).blocks * 512;
  }
  return Math.round(total / 1024);
}

async function rpc(d: Daemon, method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await call(path.join(d.runDir, "vfe-vhostd.sock"), method, params, 30_000);
  if ("error" in r) throw new Error(`${method}: ${r.error.message}`);
  const res = r.result as Record<string, unknown>;
  if (res.errno !== 0) throw new Error(`${method}: ${String(res.errstr)} ${String(res.detail ?? "")}`);
  return res;
}

async function listCount(d: Daemon): Promise<number> {
  try {
    return ((await rpc(d, "vf", { list: true, mgmtpf: PF })).devices as unknown[]).length;
  } catch {
    return -1;
  }
}

export async function controlRun(n: number, idleMs: number): Promise<ControlResult> {
  const d = await Daemon.start({ ha: true, logLevel: "info" });
  try {
    await rpc(d, "mgmtpf", { add: true, dev: PF });
    const t0 = performance.now();
    // Sequential, as an orchestrator adding VMs one by one would (each is journaled and acked).
    for (let i = 0; i < n; i++) await rpc(d, "vf", { add: true, vfdev: vfAddr(i), socket_file: path.join(d.dir, `v${i}.sock`), mode: "server" });
    const addMs = performance.now() - t0;
    // The same adds from several clients at once: vfe-vhostd overlaps their keeper round trips
    // and journal syncs (the registry checks and reserves each add in turn, then lets it run).
    for (let i = 0; i < n; i++) await rpc(d, "vf", { remove: true, vfdev: vfAddr(i) });
    let next = 0;
    const tc = performance.now();
    await Promise.all(
      Array.from({ length: ADD_CLIENTS }, async () => {
        for (let i = next++; i < n; i = next++) await rpc(d, "vf", { add: true, vfdev: vfAddr(i), socket_file: path.join(d.dir, `v${i}.sock`), mode: "server" });
      }),
    );
    const addConcurrentMs = performance.now() - tc;
    await waitFor(async () => ((await d.keeperCall({ method: "list" })).vfs as string[]).length === n, 30_000, "keeper runs every VF");
    const vhostdPid = d.proc!.pid!;
    const keeperPid = d.keeper!.pid!;
    const c0 = cpuSeconds(vhostdPid) + cpuSeconds(keeperPid);
    await new Promise((r) => setTimeout(r, idleMs));
    const idleCpuPct = ((cpuSeconds(vhostdPid) + cpuSeconds(keeperPid) - c0) / (idleMs / 1000)) * 100;
    const rssVhostdMiB = rssMiB(vhostdPid);
    const rssKeeperMiB = rssMiB(keeperPid);
    const journalKiB = dirKiB(path.join(d.stateDir, "journal"));
    const replicaKiB = dirKiB(path.join(d.stateDir, "keeper-journal"));

    // kill -9 vfe-vhostd: until RPC lists every VF again (journal restored, keeper reconciled).
    // Polled on the RPC socket every 5 ms (restartVhostd would poll by spawning the CLI).
    await d.killVhostd();
    const t1 = performance.now();
    d.spawnVhostd();
    await waitFor(async () => (await listCount(d)) === n, 30_000, "vf -l lists every VF again", 5);
    const restoreMs = performance.now() - t1;

    // kill -9 the keeper: vfe-vhostd's takeover, from its own log. The restarted vfe-vhostd
    // serves RPC before the keeper has pushed it every session copy: wait for the copies.
    await waitFor(() => mirrorComplete(d.runDir), 30_000, "vfe-vhostd holds a copy of every session again", 5);
    const logAt = d.log().length;
    await d.killKeeper();
    let takeoverMs = NaN;
    await waitFor(
      () => {
        const line = d.log().slice(logAt).split("\n").find((l) => l.includes('"takeover_done"'));
        if (line) takeoverMs = (JSON.parse(line) as { ms: number }).ms;
        return line !== undefined;
      },
      30_000,
      "takeover logged",
    );
    // Graceful keeper restart with every VF run by vfe-vhostd: start until it runs all again.
    const t2 = performance.now();
    await d.startKeeper();
    await waitFor(async () => ((await d.keeperCall({ method: "list" })).vfs as string[]).length === n, 30_000, "keeper took every VF back");
    const keeperRestartMs = performance.now() - t2;
    return { vfs: n, addMs, addConcurrentMs, rssVhostdMiB, rssKeeperMiB, journalKiB, replicaKiB, restoreMs, takeoverMs, keeperRestartMs, idleCpuPct };
  } finally {
    await d.stop();
  }
}

export function controlTable(rs: ControlResult[]): string {
  const med = (f: (r: ControlResult) => number) => {
    const v = rs.map(f).sort((a, b) => a - b);
    return v[v.length >> 1]!;
  };
  const all = (f: (r: ControlResult) => number, dp = 0) => rs.map((r) => f(r).toFixed(dp)).join(" ");
  const n = rs[0]?.vfs ?? 0;
  return [
    `| control plane, HA pair, ${n} server-mode VFs | median | runs |`,
    "|---|---|---|",
    `| add ${n} VFs one by one over RPC (journaled + keeper acked), s | ${(med((r) => r.addMs) / 1000).toFixed(2)} | ${all((r) => r.addMs / 1000, 2)} |`,
    `| add ${n} VFs from ${ADD_CLIENTS} RPC clients at once, s | ${(med((r) => r.addConcurrentMs) / 1000).toFixed(2)} | ${all((r) => r.addConcurrentMs / 1000, 2)} |`,
    `| kill -9 vfe-vhostd → RPC lists all ${n} again (restart included), s | ${(med((r) => r.restoreMs) / 1000).toFixed(2)} | ${all((r) => r.restoreMs / 1000, 2)} |`,
    `| kill -9 keeper → vfe-vhostd took every VF over, ms | ${med((r) => r.takeoverMs).toFixed(1)} | ${all((r) => r.takeoverMs, 1)} |`,
    `| keeper start → it runs all ${n} again (take-back), s | ${(med((r) => r.keeperRestartMs) / 1000).toFixed(2)} | ${all((r) => r.keeperRestartMs / 1000, 2)} |`,
    `| idle CPU of the pair, % of a core | ${med((r) => r.idleCpuPct).toFixed(2)} | ${all((r) => r.idleCpuPct, 2)} |`,
    `| RSS vfe-vhostd / keeper, MiB | ${med((r) => r.rssVhostdMiB).toFixed(0)} / ${med((r) => r.rssKeeperMiB).toFixed(0)} | |`,
    `| journal / keeper replica on disk, KiB | ${med((r) => r.journalKiB)} / ${med((r) => r.replicaKiB)} | |`,
  ].join("\n");
}
