// The blkhost case of `pnpm bench`: our blk VF against qemu-storage-daemon's vhost-user-blk
// export of the same raw file, driven from the host by the project's own front-end driver
// (native BlkDriver: a busy-polling thread keeping QD 4 KiB requests in flight). Unlike the
// blk case there is no TCG guest whose emulated CPU sets the pace: the back-ends are measured.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { sleep } from "@vhostd/test/harness/daemon";
import { Qsd } from "@vhostd/test/harness/qsd";
import { blkCapacity, connectBlk, type BlkFrontend } from "@vhostd/frontend";
import { startOursBlk } from "./blk.js";
import { cpuSeconds, hostTimes, loadavg, pin } from "./sys.js";
import { BE_CPU, FE_CPU } from "./topology.js";

export type BlkHostImpl = "ours" | "qsd";

interface Workload {
  name: string;
  label: string;
  queueDepth: number;
  writePercent: number;
}

const WORKLOADS: Workload[] = [
  { name: "randread1", label: "4 KiB random read, QD 1", queueDepth: 1, writePercent: 0 },
  { name: "randread32", label: "4 KiB random read, QD 32", queueDepth: 32, writePercent: 0 },
  { name: "randwrite1", label: "4 KiB random write, QD 1", queueDepth: 1, writePercent: 100 },
  { name: "randwrite32", label: "4 KiB random write, QD 32", queueDepth: 32, writePercent: 100 },
];

/** --quick: one read and one write workload, one at each queue depth. */
const QUICK = new Set(["randread1", "randwrite32"]);

export interface BlkHostTiming {
  warmupMs: number;
  windowMs: number;
}

export interface BlkHostResult {
  impl: BlkHostImpl;
  workload: string;
  iops: number;
  p50Us: number;
  p99Us: number;
  /** Back-end CPU seconds (whole process, utime+stime) per million completed requests. */
  cpuPerM: number;
  /** Requests completed with a status other than OK, plus ring misbehaviour. */
  errors: number;
  /** CPU used by processes other than the bench and the back-end during the window, in cores. */
  otherCores: number;
  load: string;
}

/** Reads the whole file once so both back-ends start from a page cache holding all of it. */
export function warmPageCache(file: string): void {
  const fd = fs.openSync(file, "r");
  const buf = Buffer.alloc(1 << 20);
  try {
    while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes the previous workload dirtied go to disk now, not during the next window. */
function flushFile(file: string): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

async function drain(fe: BlkFrontend): Promise<void> {
  for (let i = 0; i < 500 && fe.device.stats().inFlight > 0; i++) await sleep(10);
  const s = fe.device.stats();
  if (s.inFlight > 0) throw new Error(`${s.inFlight} requests still in flight 5 s after stopLoad`);
}

async function measure(fe: BlkFrontend, w: Workload, sectors: number, bePid: number, disk: string, t: BlkHostTiming, impl: BlkHostImpl): Promise<BlkHostResult> {
  flushFile(disk);
  const load = loadavg();
  const d = fe.device;
  // The same seed on both back-ends: the same sequence of sectors.
  d.startLoad({ queueDepth: w.queueDepth, writePercent: w.writePercent, sectors, seed: 0x5eed + w.queueDepth + w.writePercent });
  try {
    await sleep(t.warmupMs);
    d.clearStats();
    const c0 = cpuSeconds(bePid), f0 = cpuSeconds(process.pid), h0 = hostTimes(), t0 = performance.now();
    await sleep(t.windowMs);
    const s = d.stats();
    const c1 = cpuSeconds(bePid), f1 = cpuSeconds(process.pid), h1 = hostTimes(), t1 = performance.now();
    if (s.broken) throw new Error(`the back-end broke the ring (${s.ringErrors} ring errors)`);
    if (!(s.completed > 0)) throw new Error(`no request completed in ${w.name}`);
    const wall = (t1 - t0) / 1000;
    return {
      impl, workload: w.name, load,
      iops: s.completed / wall,
      p50Us: s.p50Us,
      p99Us: s.p99Us,
      cpuPerM: (c1 - c0) / (s.completed / 1e6),
      errors: s.errors + s.ringErrors,
      otherCores: Math.max(0, h1.busy - h0.busy - (c1 - c0) - (f1 - f0)) / wall,
    };
  } finally {
    d.stopLoad();
    await drain(fe);
  }
}

/**
 * One back-end, every workload in turn on one connection. The bench process (the driver's
 * thread) runs on FE_CPU, the back-end (every thread) on BE_CPU.
 */
export async function blkHostRun(impl: BlkHostImpl, disk: string, dir: string, t: BlkHostTiming, quick: boolean): Promise<BlkHostResult[]> {
  const sock = path.join(dir, `${impl}-host.sock`);
  let ours: Awaited<ReturnType<typeof startOursBlk>> | undefined;
  let qsd: Qsd | undefined;
  let fe: BlkFrontend | undefined;
  pin(process.pid, String(FE_CPU));
  try {
    if (impl === "ours") ours = await startOursBlk(disk, sock, (d) => pin(d.proc!.pid!, String(BE_CPU)));
    else qsd = await Qsd.start({ disk, socket: sock, logFile: path.join(dir, "qsd-host.log"), cpus: String(BE_CPU) });
    const bePid = ours ? ours.proc!.pid! : qsd!.pid;
    fe = await connectBlk(sock, { connectTimeoutMs: 10_000 });
    await fe.handshake();
    const fileSectors = fs.statSync(disk).size / 512;
    const cap = await blkCapacity(fe);
    if (cap !== undefined && cap !== BigInt(fileSectors)) throw new Error(`${impl} reports ${cap} sectors, the file has ${fileSectors}`);
    const out: BlkHostResult[] = [];
    for (const w of quick ? WORKLOADS.filter((x) => QUICK.has(x.name)) : WORKLOADS) out.push(await measure(fe, w, fileSectors, bePid, disk, t, impl));
    return out;
  } finally {
    fe?.close();
    await qsd?.stop();
    if (ours) {
      await ours.stop();
      ours.cleanup();
    }
    pin(process.pid, `0-${os.cpus().length - 1}`);
  }
}

const median = (xs: number[]): number => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
};

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "–");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "–");

/** One line per back-end run for the console. */
export function blkHostLine(rs: BlkHostResult[]): string {
  return rs.map((r) => `${r.workload} ${f0(r.iops)} IOPS p50 ${f0(r.p50Us)} p99 ${f0(r.p99Us)} µs ${f2(r.cpuPerM)} s/M${r.errors ? ` ${r.errors} ERRORS` : ""}`).join(", ");
}

/** Medians per workload, ratio ours/qsd, latency, back-end CPU per million requests. */
export function blkHostTable(rs: BlkHostResult[]): string {
  const rows = WORKLOADS.filter((w) => rs.some((r) => r.workload === w.name && r.impl === "ours") && rs.some((r) => r.workload === w.name && r.impl === "qsd")).map((w) => {
    const of = (impl: BlkHostImpl) => rs.filter((r) => r.workload === w.name && r.impl === impl);
    const o = of("ours"), q = of("qsd");
    const med = (xs: BlkHostResult[], k: "iops" | "p50Us" | "p99Us" | "cpuPerM") => median(xs.map((r) => r[k]));
    const errs = (xs: BlkHostResult[]) => xs.reduce((a, r) => a + r.errors, 0);
    const mo = med(o, "iops"), mq = med(q, "iops");
    return `| ${w.label} | ${f0(mo)} | ${f0(mq)} | **${f2(mo / mq)}** | ${f0(med(o, "p50Us"))} / ${f0(med(q, "p50Us"))} | ${f0(med(o, "p99Us"))} / ${f0(med(q, "p99Us"))} | ${f2(med(o, "cpuPerM"))} / ${f2(med(q, "cpuPerM"))} | ${errs(o)} / ${errs(q)} | ${o.map((r) => f0(r.iops)).join(" ")} / ${q.map((r) => f0(r.iops)).join(" ")} |`;
  });
  return [
    "| blk from the host (project's driver, random 4 KiB) | ours IOPS (median) | qemu-storage-daemon IOPS (median) | ours/qsd | p50 µs ours / qsd | p99 µs ours / qsd | back-end CPU s per M requests ours / qsd | failed requests ours / qsd | runs ours / qsd (IOPS) |",
    "|---|---|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

export function blkHostNotes(rs: BlkHostResult[], t: BlkHostTiming, diskMiB: number): string {
  const others = rs.map((r) => r.otherCores);
  return [
    `- blkhost: the project's front-end driver (native BlkDriver, a thread on CPU ${FE_CPU} busy-polling the used ring with interrupts suppressed, kicking only when the back-end's EVENT_IDX/NO_NOTIFY asks) keeps QD requests in flight on one virtqueue, each a 3-descriptor chain (out header, 4 KiB buffer, status) at a random 4 KiB-aligned sector of a ${diskMiB} MiB fully allocated raw file that is in the page cache; same xorshift seed for both back-ends. Ours: standalone \`vfe-vhostd\`, \`vf --server --disk FILE\`; qsd: \`--blockdev driver=file,cache.direct=off,aio=threads --export type=vhost-user-blk,num-queues=1\`; both pinned (every thread) to CPU ${BE_CPU}, both write-back through the page cache (no flushes sent). Per workload: fdatasync of the file, ${t.warmupMs / 1000} s warm-up, ${t.windowMs / 1000} s window; IOPS = completions in the window ÷ its length; latency = submit → completion seen, 1 µs buckets; CPU = back-end utime+stime over the window ÷ completions. Runs alternate which back-end goes first.`,
    `- blkhost load (1/5/15 min) before each window: ${rs.length ? `${rs[0]!.load} … ${rs[rs.length - 1]!.load}` : "–"}; CPU of other processes during the windows: median ${f2(median(others))}, max ${f2(Math.max(...others.filter(Number.isFinite), 0))} cores.`,
  ].join("\n");
}
