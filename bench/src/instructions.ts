// Instructions per packet, ours against DPDK's vhost library, counted by callgrind. This VM
// has no hardware counters (`perf stat -e instructions` is "not supported"), and its rates
// swing 2x between runs; an instruction count does not. Each back-end runs under
// `valgrind --tool=callgrind` with collection switched on only inside its datapath functions,
// while the one-way front-end (flowgen on both ports) keeps it saturated; instructions
// counted over a window, divided by the frames the front-end received in it.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Daemon, sleep, waitFor } from "@vhostd/test/harness/daemon";
import { Pmd, type PortSample } from "./pmd.js";
import { pin } from "./sys.js";
import { BE_CPU, BE_LCORES, FE_LCORES, PF, VFS, beVdevs, feVdevs, flowgenArgs } from "./topology.js";

export type InstrImpl = "ours" | "dpdk";

/** The last run's callgrind dumps stay here for `callgrind_annotate` (kcachegrind reads them too). */
export const KEEP_DIR = path.join(os.tmpdir(), "vhostd-bench-callgrind");

/**
 * Where each back-end's per-frame work starts; callgrind counts everything these call.
 * Ours: a TX burst off the sender's ring, the switch's forward (lookup and delivery into the
 * receiver's ring: netDeliver), and the sender's used-ring publish. DPDK: its vhost library's
 * dequeue and enqueue bursts; testpmd's io loop and the PMD's thin wrappers around them are
 * not counted (a few instructions per burst of 32).
 */
const TOGGLES: Record<InstrImpl, string[]> = {
  ours: ["vhd::netTxBurst*", "vhd::L2Switch::forward*", "vhd::netTxFinish*"],
  dpdk: ["rte_vhost_dequeue_burst", "rte_vhost_enqueue_burst"],
};

export interface InstrResult {
  impl: InstrImpl;
  size: number;
  /** Frames the front-end received during the counted window. */
  frames: number;
  instructions: number;
  perFrame: number;
  /** The functions with the most instructions of their own (callgrind_annotate), per frame. */
  top: Array<{ fn: string; perFrame: number }>;
}

export function valgrindMissing(): boolean {
  try {
    execFileSync("sh", ["-c", "command -v valgrind && command -v callgrind_control && command -v callgrind_annotate"], { stdio: "ignore" });
    return false;
  } catch {
    return true;
  }
}

function callgrind(out: string, impl: InstrImpl): string[] {
  return [
    "valgrind", "--tool=callgrind", "--collect-atstart=no", ...TOGGLES[impl].map((f) => `--toggle-collect=${f}`),
    `--callgrind-out-file=${out}`,
    // Busy-polling threads would otherwise starve the ones that answer vhost-user and RPC.
    "--fair-sched=yes",
    // V8 writes code it then runs; valgrind must see those writes (harmless for testpmd).
    "--smc-check=all-non-file",
  ];
}

/** Cumulative frames received by the front-end (both ports) at time t, interpolated between its once-a-second blocks. */
function rxAt(samples: PortSample[], t: number): number {
  let total = 0;
  for (const port of new Set(samples.map((s) => s.port))) {
    const ss = samples.filter((s) => s.port === port);
    const after = ss.findIndex((s) => s.t >= t);
    if (after <= 0) throw new Error(`no front-end sample around t=${t.toFixed(0)} on port ${port}`);
    const a = ss[after - 1], b = ss[after];
    total += a.rxPackets + ((b.rxPackets - a.rxPackets) * (t - a.t)) / (b.t - a.t);
  }
  return total;
}

function control(pid: number, flag: "-z" | "-d"): void {
  execFileSync("callgrind_control", [flag, String(pid)], { stdio: "ignore", timeout: 60_000 });
}

/**
 * `summary:` of a callgrind dump and its functions by self count. Parsed here because
 * callgrind_annotate 3.19 charges a dump taken after `callgrind_control -z` wholly to `clone`.
 * Format: `fn=`/`cfn=` name a function (`(id) name` once, `(id)` after); a cost line is
 * "position Ir"; the line after `calls=` is the inclusive cost of that call, not self cost.
 */
function readDump(file: string): { total: number; top: Array<{ fn: string; ir: number }> } {
  const names = new Map<string, string>();
  const self = new Map<string, number>();
  let total = NaN, fn = "?", afterCalls = false;
  const name = (v: string): string => {
    const m = /^\((\d+)\)(?:\s+(.*))?$/.exec(v);
    if (!m) return v;
    if (m[2] !== undefined) names.set(m[1], m[2]);
    return names.get(m[1]) ?? v;
  };
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (line.startsWith("summary:")) total = Number(line.slice(8));
    else if (line.startsWith("fn=")) fn = name(line.slice(3));
    else if (line.startsWith("cfn=")) name(line.slice(4));
    else if (line.startsWith("calls=")) afterCalls = true;
    else if (/^[+\-*\d]/.test(line)) {
      const ir = Number(line.split(" ")[1] ?? 0);
      if (!afterCalls) self.set(fn, (self.get(fn) ?? 0) + ir);
      afterCalls = false;
    }
  }
  if (!(total > 0)) throw new Error(`no summary in ${file}`);
  const top = [...self.entries()].sort((x, y) => y[1] - x[1]).slice(0, 20).map(([f, ir]) => ({ fn: f.replace(/\(.*$/, ""), ir }));
  return { total, top };
}

export async function instrRun(impl: InstrImpl, size: number, windowMs: number): Promise<InstrResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-bench-cg-"));
  const socks = [path.join(dir, "a.sock"), path.join(dir, "b.sock")];
  const out = path.join(dir, "callgrind.out");
  let d: Daemon | undefined;
  let fe: Pmd | undefined;
  let be: Pmd | undefined;
  let ok = false;
  try {
    if (impl === "ours") {
      d = await Daemon.start({ logLevel: "info", wrap: callgrind(out, impl), startTimeoutMs: 180_000 });
      pin(d.proc!.pid!, String(BE_CPU));
      await d.ok(["mgmtpf", "-a", PF]);
    }
    fe = await Pmd.start({ name: "fe", dir, lcores: FE_LCORES, vdevs: feVdevs(socks, 1), waitSockets: [socks[0]], args: flowgenArgs(size, 1) });
    // --spoofchk off: flowgen sends one fixed source MAC from both ports (see main.ts).
    if (d) for (let i = 0; i < 2; i++) await d.ok(["vf", "-a", VFS[i], "-v", socks[i], "--spoofchk", "off"]);
    else be = await Pmd.start({ name: "be", dir, lcores: BE_LCORES, vdevs: beVdevs(socks, 1), wrap: callgrind(out, impl), startTimeoutMs: 180_000, args: ["--stats-period", "3600", "--forward-mode=io", "--auto-start", "--total-num-mbufs=32768"] });
    const f = fe;
    await waitFor(() => f.rxTotal() > 10_000, 180_000, "frames at the front-end");
    await sleep(3000);
    const pid = d ? d.proc!.pid! : be!.pid;
    control(pid, "-z");
    const t0 = performance.now();
    await sleep(windowMs);
    const before = fs.readdirSync(dir).filter((n) => n.startsWith("callgrind.out"));
    control(pid, "-d");
    const t1 = performance.now();
    await waitFor(() => fe!.samples.some((s) => s.t > t1 + 100), 10_000, "a front-end sample after the window");
    const frames = rxAt(fe.samples, t1) - rxAt(fe.samples, t0);
    const dump = fs.readdirSync(dir).filter((n) => n.startsWith("callgrind.out") && !before.includes(n));
    if (dump.length !== 1) throw new Error(`expected one new callgrind dump, found ${dump.join(", ") || "none"}`);
    const kept = path.join(KEEP_DIR, `callgrind.${impl}.${size}B.out`);
    fs.mkdirSync(KEEP_DIR, { recursive: true });
    fs.copyFileSync(path.join(dir, dump[0]), kept);
    const r = readDump(kept);
    if (!(frames > 0) || !(r.total > 0)) throw new Error(`nothing counted (frames ${frames}, instructions ${r.total})`);
    ok = true;
    return { impl, size, frames, instructions: r.total, perFrame: r.total / frames, top: r.top.map((x) => ({ fn: x.fn, perFrame: x.ir / frames })) };
  } finally {
    await fe?.stop().catch(() => fe?.kill());
    await be?.stop().catch(() => be?.kill());
    if (d) {
      await d.stop().catch(() => d!.proc?.kill("SIGKILL"));
      if (ok) d.cleanup();
    }
    if (ok) fs.rmSync(dir, { recursive: true, force: true });
    else console.error(`  (logs kept in ${dir}${d ? ` and ${d.dir}` : ""})`);
  }
}

export function instrTable(rs: InstrResult[]): string {
  const sizes = [...new Set(rs.map((r) => r.size))];
  const lines = [
    "| instructions per frame (callgrind, one-way, saturated) | ours | DPDK | ours/DPDK |",
    "|---|---|---|---|",
  ];
  for (const size of sizes) {
    const o = rs.find((r) => r.size === size && r.impl === "ours"), p = rs.find((r) => r.size === size && r.impl === "dpdk");
    const ratio = o && p ? (o.perFrame / p.perFrame).toFixed(2) : "–";
    lines.push(`| ${size} B | ${o ? o.perFrame.toFixed(0) : "–"} | ${p ? p.perFrame.toFixed(0) : "–"} | ${ratio} |`);
  }
  for (const r of rs)
    lines.push("", `${r.impl === "ours" ? "ours" : "DPDK"}, ${r.size} B (${r.frames.toFixed(0)} frames counted), instructions per frame by function (self): ${r.top.map((t) => `\`${t.fn}\` ${t.perFrame.toFixed(0)}`).join(", ")}`);
  return lines.join("\n");
}
