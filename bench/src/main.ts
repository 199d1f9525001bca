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
import { Daemon, sleep, waitFor } from "../../test/dist/src/harness/daemon.js";
import { repoRoot } from "../../test/dist/src/harness/paths.js";
import { FrontendDriver } from "@vhostd/frontend";
import { Pmd, killAllPmds } from "./pmd.js";
import { BLK_DISK_MIB, blkLine, blkNotes, blkRun, blkTable, makeBlkDisk, type BlkImpl, type BlkResult } from "./blk.js";
import { blkHostLine, blkHostNotes, blkHostRun, blkHostTable, warmPageCache, type BlkHostImpl, type BlkHostResult } from "./blk_host.js";
import { ADD_CLIENTS, controlRun, controlTable, type ControlResult } from "./control.js";
import { cpuSeconds, hostTimes, loadavg, machine, pin, rssMiB } from "./sys.js";
import { instrRun, instrTable, valgrindMissing, type InstrResult } from "./instructions.js";
import { BE_CPU, BE_LCORES, FE_CPU, FE_LCORES, PF, VFS, beVdevs, feVdevs, mac } from "./topology.js";

type Impl = "ours" | "dpdk";
type NetCase = "pvp" | "oneway";
const CASES = ["pvp", "oneway", "latency", "idle", "control", "blk", "blkhost", "instr"] as const;

interface Opts {
  quick: boolean;
  runs: number;
  cases: Set<string>;
  sizes: number[];
  qps: number[];
  warmupMs: number;
  windowMs: number;
  idleMs: number;
  write: boolean;
  argv: string[];
}

function usage(): never {
  console.log(`usage: pnpm bench [--quick] [--cases ${CASES.join(",")}] [--runs N] [--sizes 64,1518] [--qps 1,2] [--window S] [--no-write]

  pvp     testpmd front-end, two virtio-user ports in io forwarding (--tx-first) looped through
          two VFs of one PF (ours) or through testpmd net_vhost ports in io forwarding (DPDK)
  oneway  the same two ports in flowgen: each port generates (as txonly) and sinks (as rxonly);
          no loop, so the rate is not bounded by the frames in flight
  latency the project's driver sends 64 B frames at 1000 pps from one port to the other through
          two VFs of one PF (ours) or two net_vhost ports in io forwarding (DPDK); each frame
          carries its send time: one-way latency percentiles at the receiving port
  idle    CPU and RSS of the back-end with 8 connected front-end ports that send nothing
  control the HA pair with 512 VFs (64 with --quick): add time, restore after kill -9 of
          vfe-vhostd, takeover after kill -9 of the keeper, keeper restart, idle CPU, RSS, journal
  blk     one QEMU guest's dd workloads (sequential 1 MiB, 4 KiB at QD 1 and 32, flush) on our
          blk VF and on qemu-storage-daemon's vhost-user-blk export of the same file
  blkhost the project's driver (no guest) keeps 4 KiB random reads / writes in flight at QD 1
          and 32 on our blk VF and on qemu-storage-daemon, same file: IOPS, latency, CPU/request
  instr   instructions per frame of each back-end's datapath, counted by callgrind (valgrind)
          while a one-way front-end saturates it; one run per size (not with --quick)
  cost    (always) CPU seconds per million packets of each back-end, measured in pvp/oneway

  --quick   one short run per case, 64 B, 1 queue pair (CI smoke)
  --runs N  A/B pairs per variant (default 5), alternating which goes first
  --no-write  print only; do not append to docs/benchmarks.md`);
  process.exit(0);
}

function parseOpts(argv: string[]): Opts {
  const o: Opts = { quick: false, runs: 5, cases: new Set(CASES), sizes: [64, 1518], qps: [1, 2], warmupMs: 2000, windowMs: 5000, idleMs: 10_000, write: true, argv };
  let runsSet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--") continue;
    else if (a === "-h" || a === "--help") usage();
    else if (a === "--quick") o.quick = true;
    else if (a === "--no-write") o.write = false;
    else if (a === "--runs") (o.runs = Number(val())), (runsSet = true);
    else if (a === "--window") o.windowMs = Number(val()) * 1000;
    else if (a === "--sizes") o.sizes = val().split(",").map(Number);
    else if (a === "--qps") o.qps = val().split(",").map(Number);
    else if (a === "--cases") {
      const list = val().split(",").filter((c) => c !== "cost");
      for (const c of list) if (!(CASES as readonly string[]).includes(c)) throw new Error(`unknown case ${c} (cases: ${CASES.join(", ")}, cost)`);
      o.cases = new Set(list.length ? list : ["pvp", "oneway"]);
    } else throw new Error(`unknown option ${a} (--help)`);
  }
  if (o.quick) {
    if (!runsSet) o.runs = 1;
    o.sizes = [64];
    o.qps = [1];
    o.warmupMs = 1000;
    o.windowMs = 3000;
    o.idleMs = 3000;
    o.cases.delete("instr"); // minutes of valgrind start-up: not a smoke test
  }
  if (!(o.runs >= 1) || o.sizes.some((s) => !(s >= 60 && s <= 9000)) || o.qps.some((q) => !(q >= 1 && q <= 8)) || !(o.windowMs >= 2000)) throw new Error("bad --runs/--sizes/--qps/--window");
  return o;
}

interface NetResult {
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

interface IdleResult {
  impl: Impl;
  cpuPct: number;
  rssMiB: number;
  otherCores: number;
  load: string;
}

const median = (xs: number[]): number => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

const daemons = new Set<Daemon>();
function killAll(): void {
  killAllPmds();
  for (const d of daemons) if (d.proc && d.proc.exitCode === null) d.proc.kill("SIGKILL");
}
process.once("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });

async function startOurs(env?: NodeJS.ProcessEnv): Promise<Daemon> {
  const d = await Daemon.start({ logLevel: "info", env });
  daemons.add(d);
  pin(d.proc!.pid!, String(BE_CPU));
  await d.ok(["mgmtpf", "-a", PF]);
  return d;
}

async function stopOurs(d: Daemon | undefined, keep: boolean): Promise<void> {
  if (!d) return;
  await d.stop();
  daemons.delete(d);
  if (!keep) d.cleanup();
}

async function vfsRunning(d: Daemon, vfs: string[]): Promise<boolean> {
  for (const vf of vfs) {
    const r = await d.cli(["vf", "-i", vf]);
    if (r.code !== 0 || r.json?.device?.state !== "running") return false;
  }
  return true;
}

async function netRun(impl: Impl, kase: NetCase, size: number, qp: number, o: Opts): Promise<NetResult> {
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

/** Ours with the engine's default busy-poll time, ours polling LAT_POLL_US, DPDK. */
type LatencyImpl = Impl | "ours-poll";
const LAT_POLL_US = 2000;

interface LatencyResult {
  impl: LatencyImpl;
  count: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  load: string;
}

const LAT_PPS = 1000;

/**
 * One-way latency at low load: driver port A sends numbered, timestamped 64 B frames to port B
 * at LAT_PPS through the back-end, which B verifies. Drivers listen (like QEMU server=on), the
 * back-end connects; the bench process (the drivers' threads) runs on the front-end CPU.
 */
async function latencyRun(impl: LatencyImpl, o: Opts): Promise<LatencyResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-bench-"));
  const socks = [path.join(dir, "a.sock"), path.join(dir, "b.sock")];
  const load = loadavg();
  let d: Daemon | undefined;
  let be: Pmd | undefined;
  const drivers: FrontendDriver[] = [];
  let ok = false;
  pin(process.pid, String(FE_CPU));
  try {
    if (impl !== "dpdk") d = await startOurs(impl === "ours-poll" ? { VHOSTD_POLL_US: String(LAT_POLL_US) } : undefined);
    const fo = { connectTimeoutMs: 30_000, mac: undefined as string | undefined };
    const listening = socks.map((s, i) => FrontendDriver.listen(s, { ...fo, mac: mac(i) }));
    if (d) for (let i = 0; i < 2; i++) await d.ok(["vf", "-a", VFS[i], "-v", socks[i]]);
    else be = await Pmd.start({ name: "be", dir, lcores: BE_LCORES, vdevs: beVdevs(socks, 1), args: ["--stats-period", "3600", "--forward-mode=io", "--auto-start", "--total-num-mbufs=32768"] });
    drivers.push(...(await Promise.all(listening)));
    await Promise.all(drivers.map((x) => x.handshake()));
    const [a, b] = drivers as [FrontendDriver, FrontendDriver];
    // B announces itself once so our switch learns its MAC (DPDK's io forwarding needs nothing).
    b.device.startTx(0, { dstMac: mac(0), srcMac: mac(1), frameSize: 64, count: 1, streamId: 9 });
    b.device.startRx(0);
    a.device.startTx(0, { dstMac: mac(1), srcMac: mac(0), frameSize: 64, ratePps: LAT_PPS });
    await waitFor(() => b.device.stats(0).rxPackets > 100, 30_000, "frames at port B");
    await sleep(o.warmupMs);
    b.device.startRx(0); // latency samples from here
    await sleep(o.windowMs);
    const l = b.device.latency(0);
    const st = b.device.stats(0);
    a.device.stopTx(0);
    if (l.count < (LAT_PPS * o.windowMs) / 1000 / 2) throw new Error(`only ${l.count} samples in the window`);
    if (st.rxCorrupted || st.rxDuplicated) throw new Error(`port B saw ${st.rxCorrupted} corrupt and ${st.rxDuplicated} duplicated frames`);
    ok = true;
    return { impl, count: l.count, p50Us: l.p50Us, p99Us: l.p99Us, p999Us: l.p999Us, maxUs: l.maxUs, load };
  } finally {
    for (const x of drivers) x.close();
    await be?.stop().catch(() => be?.kill());
    await stopOurs(d, !ok);
    pin(process.pid, `0-${os.cpus().length - 1}`);
    if (ok) fs.rmSync(dir, { recursive: true, force: true });
    else console.error(`  (logs kept in ${dir}${d ? ` and ${d.dir}` : ""})`);
  }
}

function latencyTable(rs: LatencyResult[]): string {
  type K = "p50Us" | "p99Us" | "p999Us" | "maxUs";
  const col = (impl: LatencyImpl, k: K) => rs.filter((r) => r.impl === impl).map((r) => r[k]);
  const med = (impl: LatencyImpl, k: K) => (col(impl, k).length ? median(col(impl, k)).toFixed(0) : "–");
  const ratio = (impl: LatencyImpl, k: K) => (col(impl, k).length && col("dpdk", k).length ? `**${(median(col(impl, k)) / median(col("dpdk", k))).toFixed(2)}**` : "–");
  const row = (label: string, k: K) =>
    `| ${label} | ${med("ours", k)} | ${med("ours-poll", k)} | ${med("dpdk", k)} | ${ratio("ours", k)} | ${ratio("ours-poll", k)} | ${col("ours", k).map((x) => x.toFixed(0)).join(" ")} / ${col("ours-poll", k).map((x) => x.toFixed(0)).join(" ")} / ${col("dpdk", k).map((x) => x.toFixed(0)).join(" ")} |`;
  return [
    `| one-way latency, 64 B at ${LAT_PPS} pps, µs | ours (median) | ours, VHOSTD_POLL_US=${LAT_POLL_US} | DPDK (median) | ours/DPDK | ours polling/DPDK | runs ours / polling / DPDK |`,
    "|---|---|---|---|---|---|---|",
    row("p50", "p50Us"),
    row("p99", "p99Us"),
    row("p99.9", "p999Us"),
    row("max", "maxUs"),
  ].join("\n");
}

async function idleRun(impl: Impl, n: number, o: Opts): Promise<IdleResult> {
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

/**
 * A run during which processes other than the front-end and back-end used more than this
 * many cores (other people's tests on a shared 2-CPU machine) is marked contended and left
 * out of the medians when the variant has clean runs.
 */
const CONTENDED_CORES = 0.25;

interface Row {
  label: string;
  size: string;
  qp: string;
  ours: NetResult[];
  dpdk: NetResult[];
}

const isClean = (r: NetResult) => !(r.otherCores > CONTENDED_CORES);

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "–");
const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "–");

function netTable(rows: Row[]): string {
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
  if (idle.length) {
    const io = idle.filter((x) => x.impl === "ours"), id = idle.filter((x) => x.impl === "dpdk");
    parts.push(
      [
        "| idle, 8 connected VFs, no traffic | ours | DPDK | runs ours / DPDK (% of a core) |",
        "|---|---|---|---|",
        `| back-end CPU, % of a core (median over ${o.idleMs / 1000} s) | ${f2(median(io.map((x) => x.cpuPct)))} | ${f2(median(id.map((x) => x.cpuPct)))} | ${io.map((x) => f2(x.cpuPct)).join(" ")} / ${id.map((x) => f2(x.cpuPct)).join(" ")} |`,
        `| back-end RSS, MiB (both include front-end memory they touched or mapped populated) | ${median(io.map((x) => x.rssMiB)).toFixed(0)} | ${median(id.map((x) => x.rssMiB)).toFixed(0)} | |`,
      ].join("\n"),
    );
  }
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
