// The migration drill (`drill --migrate`): two fresh pairs stand for two hosts. Each has a net
// PF whose TAP uplink joins a Linux bridge in a network namespace of the drill's own (the
// "switch" between the hosts, whose address is the guest's peer) and a blk PF; both blk VFs
// serve one disk file (shared storage). A QEMU guest with a net and a blk VF on A writes and
// verifies its disk in a loop while the host pings it from the bridge; QEMU migrates it A -> B
// -> A ... with vfe-vhostd or the keeper SIGKILLed on the source during pre-copy or on the
// destination right after switch-over, and each hop is measured where the network sees it.
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Guest, Qmp, guestCrash, guestDir, sleep, waitFor, type GuestOptions } from "../guest/index.js";
import type { DrillOptions, EventKind } from "./options.js";
import { rng } from "./options.js";
import { Pair, type Daemon } from "./pair.js";
import { Pinger } from "./pinger.js";
import type { FreshHooks } from "./fresh.js";
import { rpc } from "./rpc.js";
import { probeStall, type StallSample } from "./stall_probe.js";
import { renderTable } from "./report.js";

const NET_PF = "0000:af:00.2";
const BLK_PF = "0000:af:00.3";
const NET_VF = "0000:af:04.5";
const BLK_VF = "0000:af:05.1";
const GUEST_MAC = "52:54:00:12:34:56";
const PEER_CIDR = "10.0.9.1/24";
const GUEST_IP = "10.0.9.2";
const PING_MS = 20;
/** The guest's disk loop: 8 slots of 2 MiB from the start; the host's stop marker at MiB 48. */
const DISK_MIB = 64;
const STOP_MIB = 48;
/** Pings must flow this long after a hop before the next one starts. */
const SETTLE_MS = 1000;
/** Losses allowed beyond the downtime's own: the switch and the bridge relearning the MAC. */
const SLACK_PINGS = 3;

export type HopKill = "none" | `${EventKind} on source during pre-copy` | `${EventKind} on destination after switch-over`;

export interface HopRecord {
  hop: number;
  from: "A" | "B";
  to: "A" | "B";
  kill: HopKill;
  /** QEMU's migration status when the kill landed (pre-copy kills: must be "active"). */
  statusAtKill?: string;
  /** QEMU's own figures: the guest was stopped for downtimeMs; the whole migration took totalMs. */
  downtimeMs: number;
  totalMs: number;
  pingsSent: number;
  pingsLost: number;
  allowedLost: number;
  /** Longest silence between two ping replies across the hop: the downtime a peer saw. */
  longestGapMs: number;
  /** Samples of the destination while pings were silent for over a second after the move (why?). */
  stallProbe?: StallSample[];
  broken: string[];
}

export interface MigrateReport {
  mode: "migrate";
  date: string;
  options: { hops: number; kill: DrillOptions["kill"]; seed: number; maxGapMs: number; pingIntervalMs: number };
  hops: HopRecord[];
  disk: { rounds: number; failed: number; ioErrors: number; finalMismatches: number; kernelIoErrors: number } | null;
  pings: { sent: number; lost: number; longestGapMs: number };
  broken: string[];
  ok: boolean;
  stopped?: string;
  /** Kept directories (--keep): the drill's own (guest logs, disk) and each pair's. */
  dirs?: string[];
}

function need(cmd: string): void {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
  } catch {
    throw new Error(`--migrate needs ${cmd} on the PATH`);
  }
}

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });

/** The hop's kill: hop 1 none; then source pre-copy and destination after switch-over in turn. */
function hopKill(hop: number, o: DrillOptions, rand: () => number): HopKill {
  if (o.kill === "none" || hop === 1) return "none";
  const what: EventKind = o.kill === "mix" ? (rand() < 0.5 ? "vhostd" : "keeper") : (o.kill as EventKind);
  return hop % 2 === 0 ? `${what} on source during pre-copy` : `${what} on destination after switch-over`;
}

const daemonName = (d: Daemon) => (d === "vhostd" ? "vfe-vhostd" : "vfe-vhostd-ha");

const crashOf = (g: Guest): string | null => guestCrash(g.output);

export async function runMigrate(o: DrillOptions, h: FreshHooks): Promise<MigrateReport> {
  if (process.getuid?.() !== 0) throw new Error("--migrate needs root (a network namespace, TAP uplinks)");
  for (const c of ["qemu-system-x86_64", "ip", "ping"]) need(c);
  const tag = process.pid % 100000;
  const ns = `vhdrill${tag}`;
  const dir = mkdtempSync(join(tmpdir(), "vhostd-drill-mig-"));
  const disk = join(dir, "disk.raw");
  const pairs = {
    A: new Pair({ standalone: false, keep: o.keep, config: hostConfig(`vhda${tag}`) }),
    B: new Pair({ standalone: false, keep: o.keep, config: hostConfig(`vhdb${tag}`) }),
  };
  const guests: Guest[] = [];
  const qmps: Qmp[] = [];
  let pinger: Pinger | undefined;
  let nsMade = false;
  const dropNs = () => {
    if (!nsMade) return;
    nsMade = false;
    try {
      ip("netns", "del", ns);
    } catch {
      // gone already
    }
  };
  const killNow = () => {
    pinger?.kill();
    for (const q of qmps) q.close();
    for (const g of guests) g.kill();
  };
  h.onCleanup(
    async () => {
      killNow();
      await pairs.A.cleanup();
      await pairs.B.cleanup();
      dropNs();
      if (!o.keep) rmSync(dir, { recursive: true, force: true });
    },
    () => {
      killNow();
      pairs.A.killAllNow();
      pairs.B.killAllNow();
      dropNs();
      if (!o.keep) rmSync(dir, { recursive: true, force: true });
    },
  );
  const report: MigrateReport = {
    mode: "migrate",
    date: new Date().toISOString(),
    options: { hops: o.hops, kill: o.kill, seed: o.seed, maxGapMs: o.maxGapMs, pingIntervalMs: PING_MS },
    hops: [],
    disk: null,
    pings: { sent: 0, lost: 0, longestGapMs: 0 },
    broken: [],
    ok: false,
    ...(o.keep ? { dirs: [dir, pairs.A.dir, pairs.B.dir] } : {}),
  };

  // --- two hosts and the switch between them ---------------------------------------------
  h.err(`drill: migrate: host A in ${pairs.A.dir}, host B in ${pairs.B.dir}, guest and disk in ${dir}\n`);
  ip("netns", "add", ns);
  nsMade = true;
  ip("-n", ns, "link", "add", "br0", "type", "bridge");
  ip("-n", ns, "addr", "add", PEER_CIDR, "dev", "br0");
  ip("-n", ns, "link", "set", "br0", "up");
  for (const [name, pair] of Object.entries(pairs)) {
    await pair.start();
    await rpc(pair.runDir, ["mgmtpf", "-a", NET_PF]);
    await rpc(pair.runDir, ["mgmtpf", "-a", BLK_PF]);
    // The pair created its uplink TAP with the net PF: it joins the bridge like a host's NIC.
    const tap = `vhd${name.toLowerCase()}${tag}`;
    ip("link", "set", tap, "netns", ns);
    ip("-n", ns, "link", "set", tap, "master", "br0");
    ip("-n", ns, "link", "set", tap, "up");
    await rpc(pair.runDir, ["vf", "-a", NET_VF, "-v", pair.sock("net")]);
    await rpc(pair.runDir, ["vf", "-a", BLK_VF, "-v", pair.sock("blk"), "--disk", disk, ...(name === "A" ? ["--disk-size", `${DISK_MIB}M`] : [])]);
  }

  const imageDir = o.guestDir ?? guestDir();
  const guestOpts = (pair: Pair, name: string, incoming?: string): GuestOptions => ({
    net: [{ socket: pair.sock("net"), server: true, mac: GUEST_MAC }],
    blk: [{ socket: pair.sock("blk"), server: true }],
    test: "blkloop",
    args: { ip: `${GUEST_IP}/24`, lmib: 2, lslots: 8, lsecs: 3600, lstop: STOP_MIB },
    memMb: 256,
    logFile: join(dir, `guest-${name}.log`),
    timeoutMs: 3_600_000,
    qmpSocket: join(dir, `qmp-${name}.sock`),
    imageDir,
    ...(incoming ? { qemuArgs: ["-incoming", incoming] } : {}),
  });
  const connected = async (pair: Pair) => {
    for (const vf of [NET_VF, BLK_VF]) if ((await rpc(pair.runDir, ["vf", "-i", vf]).catch(() => undefined))?.device?.connected !== true) return false;
    return true;
  };
  const dirtyLogsSet = (pair: Pair) => ["vhostd", "keeper"].map((d) => (existsSync(pair.logFile(d as Daemon)) ? readFileSync(pair.logFile(d as Daemon), "utf8").split("dirty log set").length - 1 : 0)).reduce((a, b) => a + b, 0);
  const restart = async (pair: Pair, d: Daemon) => {
    await pair.kill(d);
    await pair.startDaemon(d);
  };

  // --- boot on A, start the loop and the pings ---------------------------------------------
  h.err(`drill: migrate: booting the guest on A (image ${imageDir}; built on first use)\n`);
  let guest = await Guest.start(guestOpts(pairs.A, "A0"));
  guests.push(guest);
  let qmp = await Qmp.connect(guest.opts.qmpSocket!);
  qmps.push(qmp);
  await guest.waitForOutput(/VHOSTD-LOOP-START/, 300_000);
  pinger = new Pinger(ns, GUEST_IP, PING_MS);
  await waitFor(() => pinger!.replies.length > 10 || !pinger!.running, 60_000, "the guest answering pings from the bridge").catch((e: Error) => {
    throw new Error(`${e.message}${pinger!.errors ? `: ${pinger!.errors}` : ""}`);
  });

  // --- the hops ----------------------------------------------------------------------------
  const rand = rng(o.seed);
  let at: "A" | "B" = "A";
  for (let hop = 1; hop <= o.hops && !h.interrupted(); hop++) {
    const to: "A" | "B" = at === "A" ? "B" : "A";
    const kill = hopKill(hop, o, rand);
    const src = pairs[at];
    const dst = pairs[to];
    const uri = `unix:${join(dir, `mig-${hop}.sock`)}`;
    const next = await Guest.start(guestOpts(dst, `${to}${hop}`, uri));
    guests.push(next);
    const qNext = await Qmp.connect(next.opts.qmpSocket!);
    qmps.push(qNext);
    await waitFor(() => connected(dst), 60_000, `host ${to}'s VFs connected to the destination QEMU`);

    const rec: HopRecord = { hop, from: at, to, kill, downtimeMs: 0, totalMs: 0, pingsSent: 0, pingsLost: 0, allowedLost: 0, longestGapMs: 0, broken: [] };
    const victim: Daemon = kill.startsWith("keeper") ? "keeper" : "vhostd";
    const t0 = Date.now();
    const logsBefore = dirtyLogsSet(src);
    const migrating = qmp.migrate(uri, 600_000);
    migrating.catch(() => undefined);
    if (kill.endsWith("pre-copy")) {
      // Into pre-copy: the source's dirty log is set (the message burst that starts a migration
      // is over) and QEMU is copying RAM.
      await waitFor(() => dirtyLogsSet(src) > logsBefore, 30_000, "the source's dirty log set");
      await sleep(100);
      rec.statusAtKill = (await qmp.execute("query-migrate")).status;
      if (rec.statusAtKill !== "active") rec.broken.push(`the kill landed with the migration ${rec.statusAtKill}, not in pre-copy`);
      await restart(src, victim);
    }
    const m = await migrating;
    rec.downtimeMs = m.downtimeMs;
    rec.totalMs = m.totalMs;
    if (kill.endsWith("switch-over")) await restart(dst, victim);
    await qmp.execute("quit").catch(() => undefined);
    guest.kill();
    const done = Date.now();
    let settled = false;
    const probing = probeStall(qNext, next.proc.pid, dst.runDir, NET_VF, pinger, done, () => settled).catch(() => [] as StallSample[]);
    const flowing = await waitFor(() => pinger!.lastReplyMs() > done + SETTLE_MS || crashOf(next) !== null, 30_000, "pings answered again")
      .then(() => crashOf(next) === null)
      .catch(() => false);
    settled = true;
    const stall = await probing;
    if (stall.length) rec.stallProbe = stall;
    const crash = crashOf(next);
    if (crash) rec.broken.push(`the guest kernel crashed after the move: ${crash}`);
    const w = pinger.window(t0, Date.now());
    Object.assign(rec, { pingsSent: w.sent, pingsLost: w.lost, longestGapMs: w.longestGapMs });
    rec.allowedLost = Math.ceil((rec.downtimeMs + (victim === "keeper" && kill !== "none" ? o.maxGapMs : 0)) / PING_MS) + SLACK_PINGS;
    if (!flowing && !crash) rec.broken.push(`pings not answered within 30 s of the switch-over`);
    if (rec.pingsLost > rec.allowedLost) rec.broken.push(`lost ${rec.pingsLost} pings, the ${rec.downtimeMs} ms downtime explains ${rec.allowedLost}`);
    report.hops.push(rec);
    h.err(
      `drill: hop ${hop}/${o.hops} ${at} -> ${to}${kill === "none" ? "" : `, ${daemonName(victim)} killed ${kill.replace(/^\w+ /, "")}`}: ` +
        `downtime ${rec.downtimeMs} ms (total ${rec.totalMs} ms), pings ${rec.pingsSent} lost ${rec.pingsLost}, longest gap ${rec.longestGapMs} ms` +
        `${rec.broken.length ? ` BROKEN: ${rec.broken.join("; ")}` : ""}\n`,
    );
    guest = next;
    qmp = qNext;
    at = to;
    if (!flowing) {
      report.stopped = `hop ${hop}: ${crash ? "the guest crashed" : "the guest did not answer pings"} on host ${to}; the disk is not verified`;
      break;
    }
  }

  // --- stop the loop, verify every block ------------------------------------------------
  if (report.stopped) {
    pinger.stop();
    report.pings = pinger.totals();
    for (const r of report.hops) report.broken.push(...r.broken.map((b) => `hop ${r.hop}: ${b}`));
    report.broken.push(report.stopped);
    return report;
  }
  const fd = openSync(disk, "r+");
  writeSync(fd, Buffer.from("VHOSTD-STOP"), 0, 11, STOP_MIB * 1024 * 1024);
  closeSync(fd);
  h.err(`drill: migrate: disk loop told to stop; the guest verifies every slot\n`);
  await guest.waitForOutput(/VHOSTD-RESULT \{"test":"blkloop",.*\}\n/, 300_000).catch((e: Error) => report.broken.push(`disk loop: ${e.message.split("\n")[0]}`));
  pinger.stop();
  const loop = guests.flatMap((g) => g.results).find((r) => r.test === "blkloop");
  const kernelIoErrors = guests.reduce((n, g) => n + (g.output.match(/I\/O error|blk_update_request|critical (target|medium) error/gi)?.length ?? 0), 0);
  const badRounds = guests.flatMap((g) => g.results).filter((r) => r.test === "blkloop-round");
  if (loop) {
    report.disk = { rounds: loop.rounds, failed: loop.failed, ioErrors: loop.ioErrors, finalMismatches: loop.finalMismatches, kernelIoErrors };
    if (!loop.ok || loop.failed || loop.ioErrors || loop.finalMismatches) report.broken.push(`disk: ${loop.failed} round(s) read back wrong, ${loop.ioErrors} I/O error(s), ${loop.finalMismatches} slot(s) wrong at the end`);
    if (badRounds.length) report.broken.push(`disk: first bad round ${JSON.stringify(badRounds[0])}`);
  } else report.broken.push("disk: the guest reported no loop result");
  if (kernelIoErrors) report.broken.push(`disk: the guest kernel logged ${kernelIoErrors} I/O error(s)`);
  report.pings = pinger.totals();
  for (const r of report.hops) report.broken.push(...r.broken.map((b) => `hop ${r.hop}: ${b}`));
  if (report.stopped) report.broken.push(report.stopped);
  report.ok = report.broken.length === 0 && report.hops.length === o.hops;
  return report;
}

function hostConfig(tap: string): unknown {
  return {
    pfs: [
      { dev: NET_PF, type: "net", firstVfOffset: 35, uplink: { tap } },
      { dev: BLK_PF, type: "blk", firstVfOffset: 38 },
    ],
  };
}

export function renderMigrateTable(r: MigrateReport): string {
  const rows = r.hops.map((x) => ({
    hop: x.hop,
    move: `${x.from} -> ${x.to}`,
    kill: x.kill,
    downtime_ms: x.downtimeMs,
    total_ms: x.totalMs,
    pings: x.pingsSent,
    lost: x.pingsLost,
    allowed: x.allowedLost,
    longest_gap_ms: x.longestGapMs,
    verdict: x.broken.length ? `BROKEN: ${x.broken.join("; ")}` : "kept",
  }));
  const d = r.disk;
  const lines = [
    renderTable(rows),
    `pings: ${r.pings.sent} sent, ${r.pings.lost} lost, longest gap ${r.pings.longestGapMs} ms (every ${r.options.pingIntervalMs} ms from the bridge)`,
    d ? `disk: ${d.rounds} write-verify rounds, ${d.failed} wrong, ${d.ioErrors} I/O errors, ${d.finalMismatches} slots wrong at the end, ${d.kernelIoErrors} kernel I/O errors` : "disk: no result",
    r.ok ? "verdict: every promise kept" : `verdict: BROKEN\n  ${r.broken.join("\n  ")}`,
  ];
  return lines.join("\n") + "\n";
}
