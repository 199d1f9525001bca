#!/usr/bin/env node
// Does a live migration move every byte of guest memory? Moves a guest between two QEMUs
// again and again, starting each destination paused (-S), and compares the source's and the
// destination's RAM page by page before the destination runs: a correct migration leaves
// them identical, so every differing page is memory the move lost. Each differing page is
// named, with the virtqueue ring it holds if any (QEMU's x-query-virtio-queue-status).
//
//   node scripts/migration-memcmp.mjs [--hops N] [--qemu-only] [--burn N] [--kill-vhostd]
//
//   default       the drill's guest: a net and a blk VF on two fresh vhostd pairs (HA)
//   --qemu-only   the same guest and disk loop with QEMU's own virtio-blk: no vhost-user
//                 device and none of our code
//   --burn N      N busy processes for 1.5 s from 50 ms into every hop's pre-copy (contention)
//   --kill-vhostd SIGKILL + restart vfe-vhostd on the source 150 ms into every even hop
//
// Needs root, qemu-system-x86_64, ip, a built tree (pnpm run build). Exit 1 if any page differed.
import { execFileSync, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "packages", "vhostd", "dist", "src");
const { Guest, Qmp, guestCrash, guestDir, sleep, waitFor } = await import(join(dist, "guest", "index.js"));

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const num = (name, dflt) => {
  const i = argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v < 0 || v > 1000) throw new Error(`${name}: an integer 0..1000`);
  return v;
};
const HOPS = num("--hops", 20);
const BURN = num("--burn", 0);
const QEMU_ONLY = flag("--qemu-only");
const KILL = flag("--kill-vhostd");
if (QEMU_ONLY && KILL) throw new Error("--kill-vhostd needs the vhost-user devices (not --qemu-only)");
const MEM_MIB = 256;
const PAGE = 4096;

const dir = mkdtempSync(join(tmpdir(), "vhostd-memcmp-"));
const disk = join(dir, "disk.raw");
const guests = [];
const cleanups = [];

/** Pages that differ between two RAM dumps of equal size. */
function differingPages(a, b) {
  const out = [];
  for (let p = 0; p < a.length / PAGE; p++) if (a.compare(b, p * PAGE, (p + 1) * PAGE, p * PAGE, (p + 1) * PAGE) !== 0) out.push(p);
  return out;
}

/** The rings QEMU knows (guest-physical addresses), to name a differing page that holds one.
 *  Asked of the source only, once it has stopped: on a running vhost-user device this query
 *  sends GET_VRING_BASE, which stops the ring. */
async function rings(qmp) {
  const out = [];
  for (const v of await qmp.execute("x-query-virtio").catch(() => [])) {
    for (let q = 0; q < 3; q++) {
      const s = await qmp.execute("x-query-virtio-queue-status", { path: v.path, queue: q }).catch(() => null);
      if (s) out.push({ name: `${v.name} queue ${q}`, desc: s["vring-desc"], avail: s["vring-avail"], used: s["vring-used"] });
    }
  }
  return out;
}

function describe(page, rs) {
  const hits = rs.flatMap((r) => ["desc", "avail", "used"].filter((k) => Math.floor(r[k] / PAGE) === page).map((k) => `${r.name} ${k}`));
  return `0x${page.toString(16)}${hits.length ? ` (${hits.join(", ")})` : ""}`;
}

function burn(n) {
  for (let i = 0; i < n; i++) spawn(process.execPath, ["-e", "const t=Date.now();while(Date.now()-t<1500){}"], { stdio: "ignore" });
}

let lost = 0;
try {
  const fd = openSync(disk, "w");
  writeSync(fd, Buffer.alloc(1), 0, 1, 64 * 1024 * 1024 - 1);
  closeSync(fd);
  let hosts;
  if (!QEMU_ONLY) hosts = await vhostUserHosts();
  const opts = (name, host, incoming) => ({
    test: "blkloop",
    args: { ...(host ? { ip: "10.0.9.2/24" } : {}), lmib: 2, lslots: 8, lsecs: 3600, lstop: 48 },
    memMb: MEM_MIB,
    logFile: join(dir, `guest-${name}.log`),
    timeoutMs: 3_600_000,
    qmpSocket: join(dir, `qmp-${name}.sock`),
    imageDir: guestDir(),
    ...(host
      ? { net: [{ socket: host.sock("net"), server: true, mac: "52:54:00:12:34:56" }], blk: [{ socket: host.sock("blk"), server: true }] }
      : {}),
    qemuArgs: [...(host ? [] : ["-drive", `file=${disk},if=virtio,format=raw,cache=writeback`]), ...(incoming ? ["-incoming", incoming, "-S"] : [])],
  });
  const names = ["A", "B"];
  let at = 0;
  let guest = await Guest.start(opts("A0", hosts?.[0]));
  guests.push(guest);
  let qmp = await Qmp.connect(guest.opts.qmpSocket);
  await guest.waitForOutput(/VHOSTD-LOOP-START/, 300_000);
  await sleep(2000);
  console.log(`${QEMU_ONLY ? "QEMU alone (its own virtio-blk)" : "net + blk VFs on two vhostd pairs"}, ${MEM_MIB} MiB, ${HOPS} hops${BURN ? `, ${BURN} CPU burners per hop` : ""}${KILL ? ", vfe-vhostd killed on the source in even hops" : ""}`);
  for (let hop = 1; hop <= HOPS; hop++) {
    const to = 1 - at;
    const uri = `unix:${join(dir, `mig-${hop}.sock`)}`;
    const next = await Guest.start(opts(`${names[to]}${hop}`, hosts?.[to], uri));
    guests.push(next);
    const qNext = await Qmp.connect(next.opts.qmpSocket);
    const migrating = qmp.migrate(uri, 600_000);
    migrating.catch(() => undefined);
    if (BURN) {
      await sleep(50);
      burn(BURN);
    }
    if (KILL && hop % 2 === 0) {
      await sleep(150);
      await hosts[at].kill("vhostd");
      await hosts[at].startDaemon("vhostd");
    }
    const m = await migrating;
    await waitFor(async () => (await qNext.execute("query-status")).status === "paused", 30_000, "the destination paused after the move");
    const src = join(dir, "src.ram");
    const dst = join(dir, "dst.ram");
    await qmp.execute("pmemsave", { val: 0, size: MEM_MIB << 20, filename: src });
    await qNext.execute("pmemsave", { val: 0, size: MEM_MIB << 20, filename: dst });
    const diff = differingPages(readFileSync(src), readFileSync(dst));
    const rs = diff.length ? await rings(qmp) : [];
    rmSync(src);
    rmSync(dst);
    await qNext.execute("cont");
    await qmp.execute("quit").catch(() => undefined);
    guest.kill();
    await sleep(3000);
    const crash = guestCrash(next.output);
    lost += diff.length;
    console.log(
      `hop ${hop} ${names[at]} -> ${names[to]}${KILL && hop % 2 === 0 ? " (vfe-vhostd killed on the source)" : ""}: downtime ${m.downtimeMs} ms, ` +
        `${diff.length} page(s) differ${diff.length ? `: ${diff.slice(0, 24).map((p) => describe(p, rs)).join(" ")}${diff.length > 24 ? " ..." : ""}` : ""}` +
        `${crash ? `; the guest then crashed: ${crash}` : ""}`,
    );
    guest = next;
    qmp = qNext;
    at = to;
    if (crash) break;
  }
} finally {
  for (const g of guests) g.kill();
  for (const c of cleanups.reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
}
console.log(lost ? `FAILED: ${lost} page(s) of guest memory lost in the moves` : "every page of guest memory arrived");
process.exit(lost ? 1 : 0);

/** Two fresh HA pairs as two hosts: net PF with a TAP uplink on a private bridge, blk PF, one VF each. */
async function vhostUserHosts() {
  const { Pair } = await import(join(dist, "drill", "pair.js"));
  const { rpc } = await import(join(dist, "drill", "rpc.js"));
  const ip = (...a) => execFileSync("ip", a, { stdio: ["ignore", "pipe", "pipe"] });
  const tag = process.pid % 100000;
  const ns = `vhmc${tag}`;
  ip("netns", "add", ns);
  cleanups.push(async () => ip("netns", "del", ns));
  ip("-n", ns, "link", "add", "br0", "type", "bridge");
  ip("-n", ns, "link", "set", "br0", "up");
  const out = [];
  for (const name of ["a", "b"]) {
    const tap = `vmc${name}${tag}`;
    const pair = new Pair({
      standalone: false,
      keep: false,
      config: { pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35, uplink: { tap } }, { dev: "0000:af:00.3", type: "blk", firstVfOffset: 38 }] },
    });
    cleanups.push(() => pair.cleanup());
    await pair.start();
    await rpc(pair.runDir, ["mgmtpf", "-a", "0000:af:00.2"]);
    await rpc(pair.runDir, ["mgmtpf", "-a", "0000:af:00.3"]);
    ip("link", "set", tap, "netns", ns);
    ip("-n", ns, "link", "set", tap, "master", "br0");
    ip("-n", ns, "link", "set", tap, "up");
    await rpc(pair.runDir, ["vf", "-a", "0000:af:04.5", "-v", pair.sock("net")]);
    await rpc(pair.runDir, ["vf", "-a", "0000:af:05.1", "-v", pair.sock("blk"), "--disk", disk, ...(name === "a" ? ["--disk-size", "64M"] : [])]);
    out.push(pair);
  }
  return out;
}
