// The pvp and oneway cases: a dpdk-testpmd front-end with two virtio-user ports, through two of
// our VFs or through testpmd's net_vhost ports (DPDK); Mpps and back-end CPU per packet.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { sleep, waitFor, type Daemon } from "@vhostd/test/harness/daemon";
import type { Opts } from "./options.js";
import { startOurs, stopOurs } from "./our_daemon.js";
import { Pmd } from "./pmd.js";
import { f2, f3, median } from "./stats.js";
import { cpuSeconds, hostTimes, loadavg } from "./sys.js";
import { BE_LCORES, FE_LCORES, VFS, beVdevs, feVdevs, mac } from "./topology.js";

export type Impl = "ours" | "dpdk";
export type NetCase = "pvp" | "oneway";

export interface NetResult {
  impl: Impl;
  mpps: number;
  offeredMpps: number;
  /** Back-end CPU in cores during the window. */
  beCores: number;
  /** Back-end CPU seconds per million packets received by the front-end. */
  cost: number;
  /** CPU used by processes other than the front-end and back-end, in cores. */
  otherCores: number;
  stealCores: number;
  load: string;
}

export async function netRun(impl: Impl, kase: NetCase, size: number, qp: number, o: Opts): Promise<NetResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-bench-"));
  const socks = [path.join(dir, "a.sock"), path.join(dir, "b.sock")];
  const load = loadavg();
  let d: Daemon | undefined;
  let fe: Pmd | undefined;
  let be: Pmd | undefined;
  let ok = false;
  try {
    if (impl === "ours") d = await startOurs();
    fe = await Pmd.start({
      name: "fe", dir, lcores: FE_LCORES, vdevs: feVdevs(socks, qp), waitSockets: [socks[0]],
      args: [
        "--stats-period", "1", `--forward-mode=${kase === "pvp" ? "io" : "flowgen"}`, ...(kase === "pvp" ? ["--tx-first"] : []), "--auto-start",
        "--port-topology=paired", `--txpkts=${size}`, `--rxq=${qp}`, `--txq=${qp}`, "--total-num-mbufs=32768", `--eth-peer=0,${mac(1)}`, `--eth-peer=1,${mac(0)}`,
      ],
    });
    // --spoofchk off: testpmd's flowgen sends one fixed source MAC from both ports and io mode
    // reflects the other port's frames, which port security drops on a default VF.
    if (d) for (let i = 0; i < 2; i++) await d.ok(["vf", "-a", VFS[i], "-v", socks[i], "-q", String(qp), "--spoofchk", "off"]);
    else be = await Pmd.start({ name: "be", dir, lcores: BE_LCORES, vdevs: beVdevs(socks, qp), args: ["--stats-period", "3600", "--forward-mode=io", `--rxq=${qp}`, `--txq=${qp}`, "--total-num-mbufs=32768"] });
    const f = fe;
    await waitFor(() => f.rxTotal() > 10_000, 30_000, "frames at the front-end");
    await sleep(o.warmupMs);
    const bePid = d ? d.proc!.pid! : be!.pid;
    const c0 = cpuSeconds(bePid), f0 = cpuSeconds(fe.pid), h0 = hostTimes(), t0 = performance.now();
    await sleep(o.windowMs);
    const c1 = cpuSeconds(bePid), f1 = cpuSeconds(fe.pid), h1 = hostTimes(), t1 = performance.now();
    await sleep(300); // the block printed at the end of the window
    // Each block's pps covers the second before it was printed: keep those inside the window.
    const win = fe.samples.filter((s) => s.t > t0 + 900 && s.t <= t1 + 250);
    const ports = [...new Set(win.map((s) => s.port))];
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const rx = ports.reduce((a, p) => a + mean(win.filter((s) => s.port === p).map((s) => s.rxPps)), 0);
    const tx = ports.reduce((a, p) => a + mean(win.filter((s) => s.port === p).map((s) => s.txPps)), 0);
    if (ports.length !== 2 || !(rx > 0)) throw new Error(`no rate in the window (ports ${ports.join(",")}, rx ${rx})`);
    const wall = (t1 - t0) / 1000;
    const beCpu = c1 - c0;
    ok = true;
    return {
      impl, load,
      mpps: rx / 1e6,
      offeredMpps: tx / 1e6,
      beCores: beCpu / wall,
      cost: beCpu / ((rx * wall) / 1e6),
      otherCores: Math.max(0, h1.busy - h0.busy - beCpu - (f1 - f0)) / wall,
      stealCores: (h1.steal - h0.steal) / wall,
    };
  } finally {
    await fe?.stop().catch(() => fe?.kill());
    await be?.stop().catch(() => be?.kill());
    await stopOurs(d, !ok);
    if (ok) fs.rmSync(dir, { recursive: true, force: true });
    else console.error(`  (logs kept in ${dir}${d ? ` and ${d.dir}` : ""})`);
  }
}

/**
 * A run during which processes other than the front-end and back-end used more than this
 * many cores (other people's tests on a shared 2-CPU machine) is marked contended and left
 * out of the medians when the variant has clean runs.
 */
export const CONTENDED_CORES = 0.25;

export interface Row {
  label: string;
  size: string;
  qp: string;
  ours: NetResult[];
  dpdk: NetResult[];
}

const isClean = (r: NetResult) => !(r.otherCores > CONTENDED_CORES);


export function netTable(rows: Row[]): string {
  const out = [
    "| case | frame | queue pairs | ours Mpps (median) | DPDK Mpps (median) | ours/DPDK | ours CPU s/Mpkt | DPDK CPU s/Mpkt | runs ours / DPDK (Mpps) |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    // Medians of the uncontended runs; a side with none makes the comparison void.
    const co = r.ours.filter(isClean), cd = r.dpdk.filter(isClean);
    const valid = co.length > 0 && cd.length > 0;
    const mo = median(co.map((x) => x.mpps)), md = median(cd.map((x) => x.mpps));
    const raw = (rs: NetResult[]) => rs.map((x) => f2(x.mpps) + (x.otherCores > CONTENDED_CORES ? "\\*" : "")).join(" ");
    out.push(`| ${r.label} | ${r.size} | ${r.qp} | ${f2(mo)} | ${f2(md)} | ${valid ? `**${f2(mo / md)}**` : "– (contended)"} | ${f3(median(co.map((x) => x.cost)))} | ${f3(median(cd.map((x) => x.cost)))} | ${raw(r.ours)} / ${raw(r.dpdk)} |`);
  }
  return out.join("\n");
}
