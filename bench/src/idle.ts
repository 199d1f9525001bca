// The idle case: CPU and RSS of each back-end with 8 connected front-end ports sending nothing.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { sleep, waitFor, type Daemon } from "@vhostd/test/harness/daemon";
import type { Impl } from "./net.js";
import type { Opts } from "./options.js";
import { startOurs, stopOurs, vfsRunning } from "./our_daemon.js";
import { Pmd } from "./pmd.js";
import { f2, median } from "./stats.js";
import { cpuSeconds, hostTimes, loadavg, rssMiB } from "./sys.js";
import { BE_LCORES, FE_LCORES, VFS, beVdevs, feVdevs } from "./topology.js";

export interface IdleResult {
  impl: Impl;
  cpuPct: number;
  rssMiB: number;
  otherCores: number;
  load: string;
}

export async function idleRun(impl: Impl, n: number, o: Opts): Promise<IdleResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-bench-"));
  const socks = Array.from({ length: n }, (_, i) => path.join(dir, `vf${i}.sock`));
  const load = loadavg();
  let d: Daemon | undefined;
  let fe: Pmd | undefined;
  let be: Pmd | undefined;
  let ok = false;
  try {
    if (impl === "ours") d = await startOurs();
    // Interactive and never told to start: its ports are up, nothing is sent or polled.
    fe = await Pmd.start({ name: "fe", dir, lcores: FE_LCORES, vdevs: feVdevs(socks, 1), waitSockets: [socks[0]], interactive: true, args: ["--total-num-mbufs=32768"] });
    if (d) {
      const dd = d;
      for (let i = 0; i < n; i++) await dd.ok(["vf", "-a", VFS[i], "-v", socks[i]]);
      await waitFor(() => vfsRunning(dd, VFS.slice(0, n)), 30_000, "every VF running");
    } else {
      be = await Pmd.start({ name: "be", dir, lcores: BE_LCORES, vdevs: beVdevs(socks, 1), args: ["--stats-period", "3600", "--forward-mode=io", "--total-num-mbufs=32768"] });
      await sleep(2000);
    }
    await sleep(1000);
    const pid = d ? d.proc!.pid! : be!.pid;
    const c0 = cpuSeconds(pid), f0 = cpuSeconds(fe.pid), h0 = hostTimes(), t0 = performance.now();
    await sleep(o.idleMs);
    const c1 = cpuSeconds(pid), f1 = cpuSeconds(fe.pid), h1 = hostTimes(), t1 = performance.now();
    const wall = (t1 - t0) / 1000;
    ok = true;
    return { impl, load, cpuPct: ((c1 - c0) / wall) * 100, rssMiB: rssMiB(pid), otherCores: Math.max(0, h1.busy - h0.busy - (c1 - c0) - (f1 - f0)) / wall };
  } finally {
    await fe?.stop().catch(() => fe?.kill());
    await be?.stop().catch(() => be?.kill());
    await stopOurs(d, !ok);
    if (ok) fs.rmSync(dir, { recursive: true, force: true });
    else console.error(`  (logs kept in ${dir}${d ? ` and ${d.dir}` : ""})`);
  }
}

export function idleTable(idle: IdleResult[], idleMs: number): string {
  const io = idle.filter((x) => x.impl === "ours"), id = idle.filter((x) => x.impl === "dpdk");
  return [
    "| idle, 8 connected VFs, no traffic | ours | DPDK | runs ours / DPDK (% of a core) |",
    "|---|---|---|---|",
    `| back-end CPU, % of a core (median over ${idleMs / 1000} s) | ${f2(median(io.map((x) => x.cpuPct)))} | ${f2(median(id.map((x) => x.cpuPct)))} | ${io.map((x) => f2(x.cpuPct)).join(" ")} / ${id.map((x) => f2(x.cpuPct)).join(" ")} |`,
    `| back-end RSS, MiB (both include front-end memory they touched or mapped populated) | ${median(io.map((x) => x.rssMiB)).toFixed(0)} | ${median(id.map((x) => x.rssMiB)).toFixed(0)} | |`,
  ].join("\n");
}
