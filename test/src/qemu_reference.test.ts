// Proves the QEMU guest tooling (packages/vhostd/guest/build.sh and init.sh, packages/vhostd/src/guest/qemu.ts)
// against reference back-ends nobody here wrote: DPDK testpmd's net_vhost in icmpecho mode
// and qemu-storage-daemon's vhost-user-blk export. If these fail, the tooling is broken,
// not vfe-vhostd.
import test, { type ExecutionContext } from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { sleep, waitFor } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { Guest, commandOutput, shellCmdArgs, type GuestRun } from "./harness/qemu.js";

/** A reference back-end process whose output goes to a log file. */
class Peer {
  out = "";
  private readonly closed: Promise<void>;
  constructor(
    readonly proc: ChildProcess,
    logFile: string,
  ) {
    const add = (d: Buffer) => {
      this.out += d.toString();
      fs.appendFileSync(logFile, d);
    };
    proc.stdout!.on("data", add);
    proc.stderr!.on("data", add);
    this.closed = new Promise((r) => proc.once("close", () => r()));
  }
  async stop(sig: NodeJS.Signals = "SIGINT"): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(sig);
    const k = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    await this.closed;
    clearTimeout(k);
  }
}

function tmpDir(t: ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-qemu-ref-"));
  t.teardown(() => {
    if (process.env.VHOSTD_KEEP_LOGS !== "1") fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

let prefixSeq = 0;

/** testpmd as a vhost-user net back-end that answers ARP and ping (icmpecho). */
async function startTestpmdVhost(dir: string, opts: { socket: string; client?: boolean; queues?: number }): Promise<Peer & { prefix: string }> {
  const prefix = `vhq${process.pid}_${prefixSeq++}`;
  fs.rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
  const q = opts.queues ?? 1;
  const vdev = `net_vhost0,iface=${opts.socket},queues=${q}${opts.client ? ",client=1" : ""}`;
  const args = ["--lcores", "0@1,1@1", "--no-huge", "-m", "1024", "--no-pci", `--file-prefix=${prefix}`, "--vdev", vdev, "--",
    "--stats-period", "1", "--forward-mode=icmpecho", `--rxq=${q}`, `--txq=${q}`];
  const p = Object.assign(new Peer(spawn("dpdk-testpmd", args, { stdio: ["ignore", "pipe", "pipe"] }), path.join(dir, "testpmd.log")), { prefix });
  // testpmd needs several seconds before it creates (server) or dials (client) the socket.
  if (!opts.client) await waitFor(() => fs.existsSync(opts.socket) || p.proc.exitCode !== null, 30_000, "testpmd to create its socket");
  else await waitFor(() => /Port 0: |Start automatic packet forwarding/.test(p.out) || p.proc.exitCode !== null, 30_000, "testpmd to start");
  if (p.proc.exitCode !== null) throw new Error(`testpmd exited:\n${p.out.slice(-3000)}`);
  return p;
}

/** Stops testpmd and returns its accumulated RX/TX packet counts. */
async function stopTestpmd(p: Peer & { prefix: string }): Promise<{ rx: number; tx: number }> {
  await p.stop("SIGINT");
  fs.rmSync(`/var/run/dpdk/${p.prefix}`, { recursive: true, force: true });
  const acc = p.out.split("Accumulated forward statistics")[1] ?? "";
  return { rx: Number(/RX-packets:\s+(\d+)/.exec(acc)?.[1] ?? NaN), tx: Number(/TX-packets:\s+(\d+)/.exec(acc)?.[1] ?? NaN) };
}

function byTest(run: GuestRun, name: string): Record<string, any> {
  const r = run.results.find((x) => x.test === name);
  if (!r) throw new Error(`no ${name} result; serial tail:\n${run.output.slice(-3000)}`);
  return r;
}

test.serial("guest without devices: shell-cmd runs a base64 command and powers off", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64")) return;
  const dir = tmpDir(t);
  const run = await Guest.boot({ test: "shell-cmd,blkinfo", args: shellCmdArgs("echo hello from $(uname -r); ls /sys/class/net"), logFile: path.join(dir, "guest.log") });
  t.log(`boot ${run.bootMs} ms, total ${run.totalMs} ms`);
  t.is(run.exitCode, 0);
  t.true(byTest(run, "shell-cmd").ok);
  t.regex(commandOutput(run.output) ?? "", /hello from 6\.1\.\S+\nlo\n/);
  // No disk attached: the test must say so rather than pass.
  t.false(byTest(run, "blkinfo").ok);
});

const MAC = "52:54:00:ab:cd:01";

test.serial("net: guest pings through testpmd net_vhost (icmpecho); QEMU connects as client", async (t) => {
  if (!needPeer(t, "dpdk-testpmd") || !needPeer(t, "qemu-system-x86_64")) return;
  const dir = tmpDir(t);
  const socket = path.join(dir, "vf0.sock");
  const tp = await startTestpmdVhost(dir, { socket });
  t.teardown(() => stopTestpmd(tp).then(() => {}));
  const run = await Guest.boot({
    net: [{ socket, server: false, mac: MAC }],
    test: "netinfo,ping",
    // icmpecho answers ARP for any address and echoes any ping: the peer IP is arbitrary.
    args: { ip: "10.0.0.2/24", peer: "10.0.0.77", count: 20, interval: 0.2 },
    logFile: path.join(dir, "guest.log"),
  });
  const totals = await stopTestpmd(tp);
  t.log(`boot ${run.bootMs} ms, total ${run.totalMs} ms, testpmd rx ${totals.rx} tx ${totals.tx}`);
  t.is(run.exitCode, 0);
  const info = byTest(run, "netinfo");
  t.like(info, { ok: true, mac: MAC, carrier: 1, rxQueues: 1, txQueues: 1 });
  const ping = byTest(run, "ping");
  t.like(ping, { ok: true, sent: 20, received: 20 });
  // The back-end's own counters agree: 20 requests + ARP in, 20 replies + ARP out.
  t.true(totals.rx >= 21 && totals.tx >= 21, JSON.stringify(totals));
});

test.serial("net: QEMU listens (server=on), testpmd connects with client=1, 2 queue pairs", async (t) => {
  if (!needPeer(t, "dpdk-testpmd") || !needPeer(t, "qemu-system-x86_64")) return;
  const dir = tmpDir(t);
  const socket = path.join(dir, "vf0.sock");
  const guest = await Guest.start({
    net: [{ socket, server: true, mac: MAC, queues: 2 }],
    test: "netinfo,ping",
    // The link only comes up once testpmd has connected: wait for carrier up to 30 s.
    args: { ip: "10.0.0.2/24", peer: "10.0.0.1", count: 10, interval: 0.2, carrier: 30 },
    logFile: path.join(dir, "guest.log"),
  });
  t.teardown(() => guest.kill());
  await waitFor(() => fs.existsSync(socket), 10_000, "QEMU to create its socket");
  const tp = await startTestpmdVhost(dir, { socket, client: true, queues: 2 });
  t.teardown(() => stopTestpmd(tp).then(() => {}));
  const run = await guest.wait();
  await stopTestpmd(tp);
  t.log(`boot ${run.bootMs} ms, total ${run.totalMs} ms, netinfo ${JSON.stringify(byTest(run, "netinfo"))}`);
  t.is(run.exitCode, 0);
  // One vCPU: Linux enables one of the two queue pairs (curr_queue_pairs = min(max, cpus)).
  t.like(byTest(run, "netinfo"), { ok: true, mac: MAC, carrier: 1 });
  t.like(byTest(run, "ping"), { ok: true, sent: 10, received: 10 });
});

test.serial("blk: blkinfo and blkverify on qemu-storage-daemon's vhost-user-blk export", async (t) => {
  if (!needPeer(t, "qemu-storage-daemon") || !needPeer(t, "qemu-system-x86_64")) return;
  const dir = tmpDir(t);
  const socket = path.join(dir, "vblk.sock");
  const disk = path.join(dir, "disk.raw");
  fs.writeFileSync(disk, "");
  fs.truncateSync(disk, 64 << 20);
  // cache.direct=off: the test directory may be on tmpfs, which has no O_DIRECT.
  const qsd = new Peer(
    spawn("qemu-storage-daemon", [
      "--blockdev", `driver=file,node-name=f0,filename=${disk},cache.direct=off,aio=threads`,
      "--export", `type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=${socket},writable=on`,
    ], { stdio: ["ignore", "pipe", "pipe"] }),
    path.join(dir, "qsd.log"),
  );
  t.teardown(() => qsd.stop("SIGKILL"));
  await waitFor(() => fs.existsSync(socket) || qsd.proc.exitCode !== null, 10_000, "qemu-storage-daemon socket");
  const run = await Guest.boot({
    blk: [{ socket }],
    test: "blkinfo,blkverify",
    args: { mib: 16, rounds: 2, seed: 7 },
    logFile: path.join(dir, "guest.log"),
  });
  await qsd.stop("SIGTERM");
  const v = byTest(run, "blkverify");
  t.log(`boot ${run.bootMs} ms, total ${run.totalMs} ms, blkverify ${JSON.stringify(v)}`);
  t.is(run.exitCode, 0);
  t.like(byTest(run, "blkinfo"), { ok: true, dev: "vda", sectors: 64 * 2048, logicalBlockSize: 512, ro: 0 });
  t.like(v, { ok: true, rounds: 2, failed: 0 });
  t.is(run.results.filter((r) => r.test === "blkverify-round" && r.ok).length, 2);
  // The data really reached the back-end's file: the last round's pattern, MiB 0 and 15.
  const fd = fs.openSync(disk, "r");
  const buf = Buffer.alloc(64);
  fs.readSync(fd, buf, 0, 64, 0);
  t.true(buf.toString().startsWith("vhostd seed=7 round=1 mib=0 "), buf.toString());
  fs.readSync(fd, buf, 0, 64, 15 << 20);
  t.true(buf.toString().startsWith("vhostd seed=7 round=1 mib=15 "), buf.toString());
  fs.closeSync(fd);
});

test.serial("net: reconnect=1 survives a back-end restart (testpmd killed and restarted mid-ping)", async (t) => {
  if (!needPeer(t, "dpdk-testpmd") || !needPeer(t, "qemu-system-x86_64")) return;
  const dir = tmpDir(t);
  const socket = path.join(dir, "vf0.sock");
  let tp = await startTestpmdVhost(dir, { socket });
  t.teardown(() => stopTestpmd(tp).then(() => {}));
  // Two ping runs in one boot: the first spans the outage, the second (which waits for the
  // link to come back up) must be clean.
  const guest = await Guest.start({
    net: [{ socket, server: false, mac: MAC }],
    reconnect: true,
    test: "ping,ping",
    args: { ip: "10.0.0.2/24", peer: "10.0.0.1", count: 30, interval: 0.2, carrier: 30 },
    logFile: path.join(dir, "guest.log"),
  });
  t.teardown(() => guest.kill());
  await guest.waitForOutput(/VHOSTD-BOOTED/);
  await sleep(2000); // let some pings through first
  await tp.stop("SIGKILL");
  fs.rmSync(`/var/run/dpdk/${tp.prefix}`, { recursive: true, force: true });
  fs.rmSync(socket, { force: true });
  tp = await startTestpmdVhost(dir, { socket });
  const run = await guest.wait();
  const pings = run.results.filter((r) => r.test === "ping");
  t.log(`boot ${run.bootMs} ms, total ${run.totalMs} ms, pings ${JSON.stringify(pings)}`);
  t.is(run.exitCode, 0);
  t.is(pings.length, 2);
  t.true(pings[0].received > 0 && pings[0].received < 30, "the first run saw both traffic and the outage");
  t.like(pings[1], { ok: true, sent: 30, received: 30 });
});
