// The blk case of `pnpm bench` (also `pnpm bench:blk`): our blk VF against
// qemu-storage-daemon's vhost-user-blk export, on the same raw file, with the same QEMU guest
// (vhost-user-blk-pci, QEMU the vhost-user client of both) running the same dd workloads.
// The guest runs under TCG (no KVM here), so absolute numbers are bounded by the emulated CPU;
// the ratio is what counts.
import { execFileSync } from "node:child_process";
import path from "node:path";
import { Daemon } from "@vhostd/test/harness/daemon";
import { Guest, commandOutput, shellCmdArgs } from "@vhostd/test/harness/qemu";
import { Qsd } from "@vhostd/test/harness/qsd";
import { loadavg } from "./sys.js";

const PF = "0000:af:00.3";
const VF = "0000:af:05.1";
export const BLK_DISK_MIB = 512;

export type BlkImpl = "ours" | "qsd";

interface Workload {
  name: string;
  label: string;
  /** Shell run in the guest; its wall time is the measurement. */
  cmd: string;
  mib?: number;
  ops?: number;
  /** Requests in flight (for the latency column: QD / IOPS). */
  qd?: number;
}

/**
 * N concurrent dd streams over disjoint 8 MiB areas from `startMiB`: N requests in flight. A
 * loop in the guest, not N literal commands: the script travels on the kernel command line,
 * which x86 cuts at 2048 bytes.
 */
function streams(n: number, dd: string, startMiB: number): string {
  return `j=0; while [ $j -lt ${n} ]; do ${dd.replace("@OFF@", `$(( (${startMiB} + j * 8) * 256 ))`)} & j=$((j+1)); done; wait`;
}

const QD32_OPS = 32 * 250;
const WORKLOADS: Workload[] = [
  { name: "seqw", label: "sequential write 1 MiB, 256 MiB (MiB/s)", cmd: "dd if=/dev/zero of=/dev/vda bs=1M count=256 seek=128 oflag=direct conv=notrunc status=none", mib: 256 },
  { name: "seqr", label: "sequential read 1 MiB, 256 MiB (MiB/s)", cmd: "dd if=/dev/vda of=/dev/null bs=1M count=256 skip=128 iflag=direct status=none", mib: 256 },
  { name: "r4k1", label: "4 KiB read, QD 1, 10000 ops (IOPS)", cmd: "dd if=/dev/vda of=/dev/null bs=4k count=10000 skip=1000 iflag=direct status=none", ops: 10000, qd: 1 },
  { name: "w4k1", label: "4 KiB write, QD 1, 10000 ops (IOPS)", cmd: "dd if=/dev/zero of=/dev/vda bs=4k count=10000 seek=12000 oflag=direct conv=notrunc status=none", ops: 10000, qd: 1 },
  { name: "r4k32", label: "4 KiB read, 32 streams (QD 32), 8000 ops (IOPS)", cmd: streams(32, "dd if=/dev/vda of=/dev/null bs=4k count=250 skip=@OFF@ iflag=direct status=none", 128), ops: QD32_OPS, qd: 32 },
  { name: "w4k32", label: "4 KiB write, 32 streams (QD 32), 8000 ops (IOPS)", cmd: streams(32, "dd if=/dev/zero of=/dev/vda bs=4k count=250 seek=@OFF@ oflag=direct conv=notrunc status=none", 128), ops: QD32_OPS, qd: 32 },
  // Last, because it switches the guest's cache mode: write-through on both, as QEMU 7.2's
  // qemu-storage-daemon export presents by default, so each fsync is one durable write on
  // either side (bench/flush_modes.mjs counts the requests; ours defaults to write-back).
  { name: "flush", label: "4 KiB write + fsync, write-through, 200 times (ops/s)", cmd: "echo \"write through\" > /sys/block/vda/queue/write_cache 2>/dev/null; i=0; while [ $i -lt 200 ]; do dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=$i conv=fsync,notrunc status=none; i=$((i+1)); done", ops: 200 },
];
const QUICK = new Set(["seqw", "r4k1", "r4k32"]);

export interface BlkResult {
  impl: BlkImpl;
  /** Workload name → wall milliseconds in the guest. */
  ms: Record<string, number>;
  /**
   * Workload name → the guest CPU's busy share of that time, % (its /proc/stat idle and
   * iowait ticks). Near 100 % the emulated CPU, not the back-end, sets the pace.
   */
  busy: Record<string, number>;
  load: string;
}

function guestScript(ws: Workload[]): string {
  // m NAME 'CMD': runs CMD and prints NAME=<ms> idle=<ms> (the guest's /proc/uptime and its
  // CPU's idle + iowait ticks from /proc/stat, both 10 ms units).
  const head = "t(){ awk '{printf \"%d\",$1*1000}' /proc/uptime; }; i(){ awk '/^cpu /{print($5+$6)*10}' /proc/stat; }; m(){ a=$(t);b=$(i); eval \"$2\"; echo $1=$(($(t)-a)) idle=$(($(i)-b)); }";
  return [head, ...ws.map((w) => `m ${w.name} '${w.cmd}'`)].join("; ");
}

/** A fully allocated file (not sparse, so neither side gets the cheap hole path). */
export function makeBlkDisk(dir: string): string {
  const disk = path.join(dir, "disk.raw");
  // conv=fsync: its writeback would otherwise run during the first run (ours or qsd, whichever goes first).
  execFileSync("dd", ["if=/dev/urandom", `of=${disk}`, "bs=1M", `count=${BLK_DISK_MIB}`, "conv=fsync", "status=none"]);
  return disk;
}

interface GuestTimes {
  ms: Record<string, number>;
  busy: Record<string, number>;
}

async function runGuest(socket: string, logFile: string, ws: Workload[]): Promise<GuestTimes> {
  const args = shellCmdArgs(guestScript(ws));
  const cmdline = Object.entries(args).map(([k, v]) => `${k}=${v}`).join(" ").length;
  if (cmdline > 1500) throw new Error(`the guest script is ${cmdline} bytes on the kernel command line (x86 keeps 2048 in all)`);
  const run = await Guest.boot({ blk: [{ socket, server: false }], test: "shell-cmd", args, logFile, timeoutMs: 600_000 });
  const out = commandOutput(run.output) ?? "";
  const r: GuestTimes = { ms: {}, busy: {} };
  for (const m of out.matchAll(/^(\w+)=(\d+) idle=(\d+)$/gm)) {
    const ms = Number(m[2]);
    r.ms[m[1]!] = ms;
    r.busy[m[1]!] = ms > 0 ? Math.max(0, Math.min(100, (100 * (ms - Number(m[3]))) / ms)) : NaN;
  }
  for (const w of ws) if (!(w.name in r.ms)) throw new Error(`workload ${w.name} did not report; guest output:\n${run.output.slice(-2000)}`);
  return r;
}

/**
 * A standalone vfe-vhostd with our blk VF listening on `sock` (server mode) for `disk`; the
 * caller stops it. onStarted sees the daemon before any VF exists (e.g. to pin it).
 */
export async function startOursBlk(disk: string, sock: string, onStarted: (d: Daemon) => void = () => {}): Promise<Daemon> {
  const d = await Daemon.start();
  try {
    onStarted(d);
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF, "-v", sock, "--server", "--disk", disk]);
  } catch (e) {
    await d.stop();
    throw e;
  }
  return d;
}

async function runOurs(disk: string, dir: string, ws: Workload[]): Promise<GuestTimes> {
  const sock = path.join(dir, "ours.sock");
  const d = await startOursBlk(disk, sock);
  try {
    return await runGuest(sock, path.join(dir, "guest-ours.log"), ws);
  } finally {
    await d.stop();
  }
}

async function runQsd(disk: string, dir: string, ws: Workload[]): Promise<GuestTimes> {
  const sock = path.join(dir, "qsd.sock");
  // Page cache on both sides (ours opens the file without O_DIRECT unless --direct): cache.direct=off.
  const qsd = await Qsd.start({ disk, socket: sock, logFile: path.join(dir, "qsd.log") });
  try {
    return await runGuest(sock, path.join(dir, "guest-qsd.log"), ws);
  } finally {
    await qsd.stop();
  }
}

export async function blkRun(impl: BlkImpl, disk: string, dir: string, quick: boolean): Promise<BlkResult> {
  const ws = quick ? WORKLOADS.filter((w) => QUICK.has(w.name)) : WORKLOADS;
  const load = loadavg();
  const g = impl === "ours" ? await runOurs(disk, dir, ws) : await runQsd(disk, dir, ws);
  return { impl, ms: g.ms, busy: g.busy, load };
}

function rate(w: Workload, ms: number): number {
  const s = Math.max(ms, 10) / 1000; // /proc/uptime ticks are 10 ms
  return w.mib ? w.mib / s : w.ops! / s;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** One line per run for the console. */
export function blkLine(r: BlkResult): string {
  return WORKLOADS.filter((w) => w.name in r.ms).map((w) => `${w.name} ${rate(w, r.ms[w.name]!).toFixed(0)}`).join(", ");
}

/** Medians, ratio ours/qsd, mean latency where the queue depth is known (µs = QD / IOPS). */
export function blkTable(rs: BlkResult[]): string {
  const ours = rs.filter((r) => r.impl === "ours");
  const qsd = rs.filter((r) => r.impl === "qsd");
  const rows = WORKLOADS.filter((w) => ours.some((r) => w.name in r.ms) && qsd.some((r) => w.name in r.ms)).map((w) => {
    const o = ours.map((r) => rate(w, r.ms[w.name]!));
    const q = qsd.map((r) => rate(w, r.ms[w.name]!));
    const mo = median(o), mq = median(q);
    const lat = w.qd ? `${((w.qd / mo) * 1e6).toFixed(0)} / ${((w.qd / mq) * 1e6).toFixed(0)}` : "–";
    const busy = (xs: BlkResult[]) => median(xs.map((r) => r.busy[w.name]!).filter(Number.isFinite)).toFixed(0);
    return `| ${w.label} | ${mo.toFixed(0)} | ${mq.toFixed(0)} | **${(mo / mq).toFixed(2)}** | ${lat} | ${busy(ours)} / ${busy(qsd)} | ${o.map((x) => x.toFixed(0)).join(" ")} / ${q.map((x) => x.toFixed(0)).join(" ")} |`;
  });
  return [
    "| blk workload (guest dd, O_DIRECT) | ours (median) | qemu-storage-daemon (median) | ours/qsd | mean latency µs ours / qsd | guest CPU busy % ours / qsd | runs ours / qsd |",
    "|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

export function blkNotes(rs: BlkResult[]): string {
  return [
    `- blk: the same ${BLK_DISK_MIB} MiB fully allocated raw file and the same QEMU 7.2 TCG guest (\`vhost-user-blk-pci,num-queues=1\`, QEMU the vhost-user client of both), one boot per run, runs alternating which back-end goes first; ours: standalone \`vfe-vhostd\`, \`vf -a ${VF} --server --disk FILE\`; qsd: \`--blockdev driver=file,cache.direct=off,aio=threads --export type=vhost-user-blk\` (both through the host page cache). Timing from the guest's /proc/uptime (10 ms ticks); guest CPU busy = 100 % minus the guest CPU's idle and iowait share of that time (/proc/stat): near 100 % the emulated CPU (TCG), not the back-end, sets the pace. QD 32 is 32 concurrent dd processes over disjoint 8 MiB areas.`,
    `- blk load (1/5/15 min) before each run: ${rs.length ? `${rs[0]!.load} … ${rs[rs.length - 1]!.load}` : "–"}.`,
  ].join("\n");
}
