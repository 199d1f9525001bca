// The latency case: the project's driver sends timestamped 64 B frames from one port to the
// other through our back-end or DPDK's; one-way latency percentiles at the receiver.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { FrontendDriver } from "@vhostd/frontend";
import { sleep, waitFor, type Daemon } from "@vhostd/test/harness/daemon";
import type { Impl } from "./net.js";
import type { Opts } from "./options.js";
import { startOurs, stopOurs } from "./our_daemon.js";
import { Pmd } from "./pmd.js";
import { median } from "./stats.js";
import { loadavg, pin } from "./sys.js";
import { BE_LCORES, FE_CPU, VFS, beVdevs, mac } from "./topology.js";

/** Ours with the engine's default busy-poll time, ours polling LAT_POLL_US, DPDK. */
export type LatencyImpl = Impl | "ours-poll";
export const LAT_POLL_US = 2000;

export interface LatencyResult {
  impl: LatencyImpl;
  count: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  load: string;
}

export const LAT_PPS = 1000;

/**
 * One-way latency at low load: driver port A sends numbered, timestamped 64 B frames to port B
 * at LAT_PPS through the back-end, which B verifies. Drivers listen (like QEMU server=on), the
 * back-end connects; the bench process (the drivers' threads) runs on the front-end CPU.
 */
export async function latencyRun(impl: LatencyImpl, o: Opts): Promise<LatencyResult> {
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

export function latencyTable(rs: LatencyResult[]): string {
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
