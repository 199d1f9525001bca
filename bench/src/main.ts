// pnpm bench [--quick] [--cases pvp,oneway,idle] [--runs N] [--sizes 64,1518] [--qps 1,2]
//            [--window S] [--no-write]
//
// Net benchmarks of our engine against DPDK's vhost PMD (testpmd net_vhost) as the reference
// back-end, with the same dpdk-testpmd front-end, interleaved A/B runs and medians. Prints a
// table and appends a dated section to docs/benchmarks.md. See docs/benchmarks.md for the
// method.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { repoRoot } from "@vhostd/test/harness/paths";
import { BLK_DISK_MIB, blkLine, blkNotes, blkRun, blkTable, makeBlkDisk, type BlkImpl, type BlkResult } from "./blk.js";
import { blkHostLine, blkHostNotes, blkHostRun, blkHostTable, warmPageCache, type BlkHostImpl, type BlkHostResult } from "./blk_host.js";
import { ADD_CLIENTS, controlRun, controlTable, type ControlResult } from "./control.js";
import { idleRun, idleTable, type IdleResult } from "./idle.js";
import { instrRun, instrTable, valgrindMissing, type InstrResult } from "./instructions.js";
import { LAT_POLL_US, LAT_PPS, latencyRun, latencyTable, type LatencyImpl, type LatencyResult } from "./latency.js";
import { CONTENDED_CORES, netRun, netTable, type Impl, type NetCase, type NetResult, type Row } from "./net.js";
import { parseOpts } from "./options.js";
import { killAll } from "./our_daemon.js";
import { f2, f3, median } from "./stats.js";
import { machine } from "./sys.js";
import { BE_CPU, BE_LCORES, FE_CPU, FE_LCORES } from "./topology.js";

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  try {
    execFileSync("sh", ["-c", "command -v dpdk-testpmd"], { stdio: "ignore" });
  } catch {
    throw new Error("dpdk-testpmd not found: run `bash scripts/install-peers.sh` first");
  }
  if (os.cpus().length < 2) throw new Error("needs 2 CPUs (front-end on CPU 0, back-end on CPU 1)");
  const m = machine(repoRoot);
  console.log(`vhostd bench: ${m.date}, commit ${m.commit}, ${m.nproc} CPU ${m.model}, kernel ${m.kernel}, node ${m.node}, dpdk ${m.testpmd}`);
  console.log(`front-end on CPU ${FE_CPU}, back-end on CPU ${BE_CPU}; ${o.runs} A/B pair(s) per variant, ${o.windowMs / 1000} s window after ${o.warmupMs / 1000} s warm-up\n`);

  const rows: Row[] = [];
  const allNet: NetResult[] = [];
  const idle: IdleResult[] = [];
  const failures: string[] = [];

  const variants: Array<{ kase: NetCase; size: number; qp: number }> = [];
  if (o.cases.has("pvp")) for (const qp of o.qps) for (const size of o.sizes) variants.push({ kase: "pvp", size, qp });
  if (o.cases.has("oneway")) for (const size of o.sizes) variants.push({ kase: "oneway", size, qp: 1 });

  for (const v of variants) {
    const row: Row = { label: v.kase === "pvp" ? "PVP loop (io, --tx-first)" : "one-way (flowgen → sink, both ports)", size: `${v.size} B`, qp: String(v.qp), ours: [], dpdk: [] };
    for (let r = 0; r < o.runs; r++) {
      const order: Impl[] = r % 2 === 0 ? ["ours", "dpdk"] : ["dpdk", "ours"];
      for (const impl of order) {
        const tag = `${v.kase} ${v.size}B qp${v.qp} run ${r + 1}/${o.runs} ${impl}`;
        try {
          const res = await netRun(impl, v.kase, v.size, v.qp, o);
          allNet.push(res);
          (impl === "ours" ? row.ours : row.dpdk).push(res);
          console.log(`${tag.padEnd(34)} ${f2(res.mpps).padStart(6)} Mpps (offered ${f2(res.offeredMpps)}), back-end ${f2(res.beCores)} cores, ${f3(res.cost)} CPU s/Mpkt, others ${f2(res.otherCores)} cores, steal ${f2(res.stealCores)}, load ${res.load}`);
        } catch (e) {
          failures.push(`${tag}: ${(e as Error).message.split("\n")[0]}`);
          console.log(`${tag.padEnd(34)} FAILED: ${(e as Error).message.split("\n")[0]}`);
        }
      }
    }
    rows.push(row);
  }

  const latency: LatencyResult[] = [];
  if (o.cases.has("latency")) {
    for (let r = 0; r < o.runs; r++) {
      const order: LatencyImpl[] = r % 2 === 0 ? ["ours", "ours-poll", "dpdk"] : ["dpdk", "ours-poll", "ours"];
      for (const impl of order) {
        const tag = `latency 64B run ${r + 1}/${o.runs} ${impl}`;
        try {
          const res = await latencyRun(impl, o);
          latency.push(res);
          console.log(`${tag.padEnd(34)} p50 ${res.p50Us.toFixed(0)} µs, p99 ${res.p99Us.toFixed(0)} µs, p99.9 ${res.p999Us.toFixed(0)} µs, max ${res.maxUs.toFixed(0)} µs (${res.count} frames), load ${res.load}`);
        } catch (e) {
          failures.push(`${tag}: ${(e as Error).message.split("\n")[0]}`);
          console.log(`${tag.padEnd(34)} FAILED: ${(e as Error).message.split("\n")[0]}`);
        }
      }
    }
  }

  if (o.cases.has("idle")) {
    for (let r = 0; r < o.runs; r++) {
      const order: Impl[] = r % 2 === 0 ? ["ours", "dpdk"] : ["dpdk", "ours"];
      for (const impl of order) {
        const tag = `idle 8 VFs run ${r + 1}/${o.runs} ${impl}`;
        try {
          const res = await idleRun(impl, 8, o);
          idle.push(res);
          console.log(`${tag.padEnd(34)} ${f2(res.cpuPct).padStart(6)} % of a core, RSS ${res.rssMiB.toFixed(0)} MiB, others ${f2(res.otherCores)} cores, load ${res.load}`);
        } catch (e) {
          failures.push(`${tag}: ${(e as Error).message.split("\n")[0]}`);
          console.log(`${tag.padEnd(34)} FAILED: ${(e as Error).message.split("\n")[0]}`);
        }
      }
    }
  }

  const control: ControlResult[] = [];
  if (o.cases.has("control")) {
    const n = o.quick ? 64 : 512;
    for (let r = 0; r < (o.quick ? 1 : Math.min(o.runs, 3)); r++) {
      try {
        const res = await controlRun(n, o.quick ? 2000 : 10_000);
        control.push(res);
        console.log(`control ${n} VFs run ${r + 1}: add ${(res.addMs / 1000).toFixed(2)} s, restore ${(res.restoreMs / 1000).toFixed(2)} s, takeover ${res.takeoverMs} ms, keeper restart ${(res.keeperRestartMs / 1000).toFixed(2)} s, idle ${res.idleCpuPct.toFixed(2)} %`);
      } catch (e) {
        failures.push(`control run ${r + 1}: ${(e as Error).message.split("\n")[0]}`);
        console.log(`control run ${r + 1} FAILED: ${(e as Error).message.split("\n")[0]}`);
      }
    }
  }

  const blk: BlkResult[] = [];
  if (o.cases.has("blk")) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-bench-blk-"));
    const disk = makeBlkDisk(dir);
    for (let r = 0; r < (o.quick ? 1 : Math.min(o.runs, 3)); r++) {
      const order: BlkImpl[] = r % 2 === 0 ? ["ours", "qsd"] : ["qsd", "ours"];
      for (const impl of order) {
        const tag = `blk run ${r + 1} ${impl}`;
        try {
          const res = await blkRun(impl, disk, dir, o.quick);
          blk.push(res);
          console.log(`${tag.padEnd(34)} ${blkLine(res)}, load ${res.load}`);
        } catch (e) {
          failures.push(`${tag}: ${(e as Error).message.split("\n")[0]}`);
          console.log(`${tag.padEnd(34)} FAILED: ${(e as Error).message.split("\n")[0]}`);
        }
      }
    }
    if (!failures.some((f) => f.startsWith("blk"))) fs.rmSync(dir, { recursive: true, force: true });
  }

  const blkHost: BlkHostResult[] = [];
  if (o.cases.has("blkhost")) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-bench-blkhost-"));
    const disk = makeBlkDisk(dir);
    warmPageCache(disk);
    const timing = { warmupMs: o.warmupMs, windowMs: o.windowMs };
    let failed = false;
    for (let r = 0; r < o.runs; r++) {
      const order: BlkHostImpl[] = r % 2 === 0 ? ["ours", "qsd"] : ["qsd", "ours"];
      for (const impl of order) {
        const tag = `blkhost run ${r + 1}/${o.runs} ${impl}`;
        try {
          const res = await blkHostRun(impl, disk, dir, timing, o.quick);
          blkHost.push(...res);
          console.log(`${tag.padEnd(34)} ${blkHostLine(res)}`);
        } catch (e) {
          failed = true;
          failures.push(`${tag}: ${(e as Error).message.split("\n")[0]}`);
          console.log(`${tag.padEnd(34)} FAILED: ${(e as Error).message.split("\n")[0]}`);
        }
      }
    }
    if (!failed) fs.rmSync(dir, { recursive: true, force: true });
    else console.error(`  (blkhost logs kept in ${dir})`);
  }

  const instr: InstrResult[] = [];
  if (o.cases.has("instr")) {
    if (valgrindMissing()) throw new Error("valgrind not found: run `bash scripts/install-peers.sh` first");
    for (const size of o.sizes)
      for (const impl of ["ours", "dpdk"] as const) {
        const tag = `instr ${size}B ${impl}`;
        try {
          const res = await instrRun(impl, size, 10_000);
          instr.push(res);
          console.log(`${tag.padEnd(34)} ${res.perFrame.toFixed(0).padStart(6)} instructions per frame (${res.frames.toFixed(0)} frames); ${res.top.map((t) => `${t.fn} ${t.perFrame.toFixed(0)}`).join(", ")}`);
        } catch (e) {
          failures.push(`${tag}: ${(e as Error).message.split("\n")[0]}`);
          console.log(`${tag.padEnd(34)} FAILED: ${(e as Error).message.split("\n")[0]}`);
        }
      }
  }

  const parts: string[] = [];
  if (rows.length) parts.push(netTable(rows));
  if (latency.some((x) => x.impl === "ours") && latency.some((x) => x.impl === "dpdk")) parts.push(latencyTable(latency));
  if (blk.length) parts.push(blkTable(blk));
  if (blkHost.length) parts.push(blkHostTable(blkHost));
  if (instr.length) parts.push(instrTable(instr));
  if (control.length) parts.push(controlTable(control));
  if (idle.length) parts.push(idleTable(idle, o.idleMs));
  const others = [...allNet.map((x) => x.otherCores), ...idle.map((x) => x.otherCores)];
  const steal = allNet.map((x) => x.stealCores);
  const loads = [...allNet.map((x) => x.load), ...idle.map((x) => x.load)];
  const netNotes = rows.length > 0 || idle.length > 0 || latency.length > 0;
  const notes = [
    ...(control.length ? [`- Control plane: \`Daemon.start({ ha: true })\` (keeper + vfe-vhostd --ha, info logging as installed), ${control[0]!.vfs} server-mode VFs without front-ends added by sequential RPC calls, removed again one by one, and added again by ${ADD_CLIENTS} RPC clients at once (each takes the next VF); idle CPU is both daemons' utime+stime over ${o.quick ? 2 : 10} s; restore and take-back times include starting the process; the restore is polled on the RPC socket every 5 ms.`] : []),
    ...(blk.length ? [blkNotes(blk)] : []),
    ...(blkHost.length ? [blkHostNotes(blkHost, { warmupMs: o.warmupMs, windowMs: o.windowMs }, BLK_DISK_MIB)] : []),
    ...(latency.length ? [`- Latency: the project's front-end driver on both ports (it listens, the back-end connects; its thread on CPU ${FE_CPU}, back-ends pinned as below); our engine busy-polls 200 µs after its last work before it sleeps on the kick eventfds (at ${LAT_PPS} pps a frame comes every 1000 µs, so each one wakes it), or ${LAT_POLL_US} µs with VHOSTD_POLL_US=${LAT_POLL_US} (it never sleeps at this rate: DPDK's way, a whole core); every frame carries its CLOCK_MONOTONIC send time, taken per burst, and the receiving port takes the time when it finds the frame in its used ring, so the figure includes both back-ends' reaction to a kick and the driver's wake-up on the call eventfd. Percentiles from 1 µs buckets over a ${o.windowMs / 1000} s window after ${o.warmupMs / 1000} s of warm-up.`] : []),
    ...(netNotes ? [] : failures.length ? [`- Failed runs (excluded): ${failures.join("; ")}`] : []),
  ];
  if (netNotes) notes.push(
    `- Pinning: front-end dpdk-testpmd \`--lcores ${FE_LCORES}\` (main and forwarding lcore on CPU ${FE_CPU}); back-end on CPU ${BE_CPU}: vfe-vhostd \`taskset -a -p -c ${BE_CPU}\` (every thread, the engine worker included), DPDK testpmd net_vhost \`--lcores ${BE_LCORES}\`.`,
    `- \\* = contended run: other processes used more than ${CONTENDED_CORES} cores during its window; left out of the medians; a variant with no uncontended run on either side gets no ratio.`,
    `- Rate: sum over the front-end's two ports of testpmd's Rx-pps, averaged over a ${o.windowMs / 1000} s window after ${o.warmupMs / 1000} s of warm-up; cost: back-end utime+stime (/proc/PID/stat, whole process) over the window ÷ packets received by the front-end in it.`,
    `- Load (1/5/15 min loadavg) before each run: ${loads.length ? `${loads[0]} … ${loads[loads.length - 1]}` : "–"}; CPU used by other processes during the windows: median ${f2(median(others))}, max ${f2(Math.max(...others.filter(Number.isFinite), 0))} cores${steal.length ? `; steal median ${f2(median(steal))}, max ${f2(Math.max(...steal.filter(Number.isFinite), 0))} cores` : ""}.`,
    ...(failures.length ? [`- Failed runs (excluded): ${failures.join("; ")}`] : []),
  );
  const table = parts.join("\n\n");
  console.log(`\n${table}\n\n${notes.join("\n")}`);

  if (o.write) {
    const doc = path.join(repoRoot, "docs/benchmarks.md");
    if (!fs.existsSync(doc)) fs.writeFileSync(doc, "# Benchmarks\n\nSections below are appended by `pnpm bench`.\n");
    const section = [
      "",
      `### ${m.date} · commit ${m.commit}${o.quick ? " · quick" : ""}`,
      "",
      `\`pnpm bench${o.argv.length ? " " + o.argv.filter((a) => a !== "--").join(" ") : ""}\` — ${m.nproc} vCPU ${m.model}, kernel ${m.kernel}, Node ${m.node}, DPDK ${m.testpmd}; ${o.runs} interleaved A/B pair(s) per variant.`,
      "",
      table,
      "",
      ...notes,
      "",
    ].join("\n");
    fs.appendFileSync(doc, section);
    console.log(`\nappended to ${path.relative(process.cwd(), doc) || doc}`);
  }
  if (failures.length) process.exitCode = 1;
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).stack ?? e}`);
  killAll();
  process.exit(1);
});
