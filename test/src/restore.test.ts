// Both daemons killed -> every PF and VF comes back by itself from the journal, before RPC is
// served, with the same devIds, MACs, sockets and modes; client-mode VFs reconnect to their
// front-ends on their own and traffic flows again. Also: kill -9 in the middle of a burst of
// changes never loses an acknowledged one and never leaves a VF without its PF.
import test from "ava";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { FrontendDriver } from "@vhostd/frontend";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";
import { repoRoot } from "./harness/paths.js";

const PF = "0000:af:00.2";
const PF2 = "0000:c0:00.2";
const VF_A = "0000:af:04.5";
const VF_B = "0000:af:05.5";
const VF_C = "0000:af:06.5";

/** The fields of `vf -l` that are configuration (the rest is session state). */
const VF_CONFIG = ["vf", "pf", "type", "socket_file", "mode", "mac", "mtu", "queue_pairs", "dev_id", "switch_id", "vm_uuid"] as const;

function config(devs: Array<Record<string, unknown>>): Array<Record<string, unknown>> {
  return devs.map((d) => Object.fromEntries(VF_CONFIG.map((k) => [k, d[k]])));
}

async function killHard(d: Daemon): Promise<void> {
  const p = d.proc!;
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once("exit", r));
  p.kill("SIGKILL");
  await exited;
}

/** Frames from `tx` to `rx` on pair 0 until `count` were received or counted as dropped. */
async function traffic(d: Daemon, tx: FrontendDriver, rx: FrontendDriver, rxVf: string, count: number, streamId: number): Promise<number> {
  const dropsBefore = (await d.ok(["vf", "-i", rxVf])).device.queues[0].drops as number;
  rx.device.startRx(0);
  const before = rx.device.stats(0).rxPackets;
  tx.device.startTx(0, { dstMac: rx.mac, srcMac: tx.mac, frameSize: 256, count, ratePps: 20_000, streamId });
  let got = 0;
  await waitFor(
    async () => {
      got = rx.device.stats(0).rxPackets - before;
      const drops = (await d.ok(["vf", "-i", rxVf])).device.queues[0].drops - dropsBefore;
      return got + drops >= count;
    },
    30_000,
    `${count} frames to ${rxVf}`,
  );
  return got;
}

test.serial("kill -9: PFs and VFs come back from the journal, client VFs reconnect by themselves, traffic flows again", async (t) => {
  const d = await Daemon.start();
  const drivers: FrontendDriver[] = [];
  try {
    const fo = { connectTimeoutMs: 20_000 };
    await d.ok(["mgmtpf", "-a", PF]);
    // A's MAC is the operator's (--mac below): its VM sends with it, or port security drops the frames.
    const aP = FrontendDriver.listen(d.sock("a"), { ...fo, mac: "02:00:00:00:00:0a" });
    const bP = FrontendDriver.listen(d.sock("b"), fo);
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a"), "--mac", "02:00:00:00:00:0a", "-u", "12345678-1234-1234-1234-1234567890ab"]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b"), "--mtu", "9000"]);
    await d.ok(["vf", "-a", VF_C, "-v", d.sock("c"), "--server"]);
    const [a, b] = await Promise.all([aP, bP]);
    drivers.push(a, b);
    await Promise.all([a.handshake(), b.handshake()]);
    const c = await FrontendDriver.connect(d.sock("c"), fo);
    drivers.push(c);
    await c.handshake();
    t.true((await traffic(d, a, b, VF_B, 2000, 1)) > 0, "traffic before the kill");

    const pfsBefore = (await d.ok(["mgmtpf", "-l"])).devices;
    const vfsBefore = (await d.ok(["vf", "-l", PF])).devices;
    t.is(vfsBefore.length, 3);

    await killHard(d);
    // The back-end is gone: every front-end sees its connection close.
    await Promise.all([a.closed, b.closed, c.closed]);

    // While the daemon is down, the journal shows exactly what will come back.
    const dump = await d.cli(["journal", "dump", "--state-dir", d.stateDir]);
    t.is(dump.code, 0, dump.stderr);
    t.deepEqual(dump.json.pfs, pfsBefore.map((p: Record<string, unknown>) => ({ pf: p.pf, type: p.type, switch_id: p.switch_id })));
    t.deepEqual(config(dump.json.vfs), config(vfsBefore));
    const epochBefore = dump.json.epoch as number;

    // The drivers wait for the back-end (server mode, like QEMU server=on) or retry (client).
    const aR = a.reconnect();
    const bR = b.reconnect();
    const t0 = Date.now();
    await d.launch();
    const restored = await d.waitForLog((l) => l.event === "restore_done" && l.epoch === epochBefore + 1);
    t.is(restored.vfs, 3);
    t.is(restored.pfs, 1);
    t.log(`restore: ${restored.ms} ms for ${restored.vfs} VFs; daemon answering ${Date.now() - t0} ms after launch`);
    for (const vf of [VF_A, VF_B, VF_C]) t.truthy(d.logLines().find((l) => l.event === "vf_restored" && l.vf === vf), `one log line for ${vf}`);

    t.deepEqual((await d.ok(["mgmtpf", "-l"])).devices, pfsBefore, "mgmtpf -l is identical");
    t.deepEqual(config((await d.ok(["vf", "-l", PF])).devices), config(vfsBefore), "vf -l: same devIds, MACs, sockets, modes");

    // Nobody told the client-mode VFs to reconnect: they did so on their own.
    await Promise.all([aR, bR]);
    await Promise.all([a.handshake(), b.handshake()]);
    await c.reconnect();
    await c.handshake();
    await waitFor(async () => (await d.ok(["vf", "-l", PF])).devices.every((v: { state: string }) => v.state === "running"), 10_000, "all three VFs running");
    const ab = await traffic(d, a, b, VF_B, 2000, 2);
    const ba = await traffic(d, b, a, VF_A, 2000, 3);
    t.true(ab > 0 && ba > 0, `traffic flows again both ways (${ab}, ${ba} frames)`);
    const ca = await traffic(d, c, a, VF_A, 1000, 4);
    t.true(ca > 0, `and from the server-mode VF (${ca} frames)`);
  } finally {
    for (const f of drivers) f.close();
    await d.stop();
    d.cleanup();
  }
});

interface Op {
  key: string;
  present: boolean;
  code: number;
}

/** Runs CLI calls one after the other until `stop()`; records each call's outcome. */
async function worker(d: Daemon, steps: Array<{ args: string[]; key: string; present: boolean }>, ops: Op[], stopped: () => boolean): Promise<void> {
  for (const s of steps) {
    if (stopped()) return;
    const r = await d.cli(s.args);
    ops.push({ key: s.key, present: s.present, code: r.code });
    if (r.code === 3) return; // daemon gone: everything later would fail the same way
  }
}

/**
 * Expected presence per key: the last acknowledged (exit 0) change decides; a refused one
 * (exit 1, errno) changed nothing; after a call that got no answer (exit 3: killed under
 * it) the key may be either way.
 */
function expectations(ops: Op[], known: Map<string, boolean>): Map<string, boolean | undefined> {
  const m = new Map<string, boolean | undefined>(known);
  for (const o of ops) {
    if (o.code === 0) m.set(o.key, o.present);
    else if (o.code !== 1) m.set(o.key, undefined);
  }
  return m;
}

test.serial("kill -9 during bursts of vf -a / -r and mgmtpf -a / -r (5 times): acknowledged changes survive, no VF without its PF", async (t) => {
  const cfgFile = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "vhostd-restore-cfg-")), "config.json");
  fs.writeFileSync(
    cfgFile,
    JSON.stringify({ pfs: [{ dev: PF, type: "net", firstVfOffset: 35, numVfs: 128 }, { dev: PF2, type: "net", firstVfOffset: 35, numVfs: 16 }] }),
  );
  const d = await Daemon.start({ args: ["--config", cfgFile] });
  let known = new Map<string, boolean>();
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    known.set(`pf/${PF}`, true);
    const vfAddr = (pfBus: number, n: number) => {
      const rid = (pfBus << 8) + 0x25 + 8 * n;
      return `0000:${((rid >> 8) & 0xff).toString(16).padStart(2, "0")}:${((rid >> 3) & 0x1f).toString(16).padStart(2, "0")}.${rid & 7}`;
    };
    let next = 0;
    for (let round = 0; round < 5; round++) {
      // Worker 1: new VFs on PF (server mode, so nothing needs to listen for them).
      const steps1 = Array.from({ length: 40 }, () => {
        const vf = vfAddr(0xaf, next++ % 128);
        return { args: ["vf", "-a", vf, "-v", d.sock(`burst-${vf}`), "--server"], key: `vf/${vf}`, present: true };
      });
      // Worker 2: PF2 in, three VFs in, the VFs out, PF2 out; again and again.
      const steps2: Array<{ args: string[]; key: string; present: boolean }> = [];
      for (let k = 0; k < 6; k++) {
        steps2.push({ args: ["mgmtpf", "-a", PF2], key: `pf/${PF2}`, present: true });
        const vfs = [0, 1, 2].map((i) => vfAddr(0xc0, i));
        for (const vf of vfs) steps2.push({ args: ["vf", "-a", vf, "-v", d.sock(`pf2-${vf}`), "--server"], key: `vf/${vf}`, present: true });
        for (const vf of vfs) steps2.push({ args: ["vf", "-r", vf], key: `vf/${vf}`, present: false });
        steps2.push({ args: ["mgmtpf", "-r", PF2], key: `pf/${PF2}`, present: false });
      }
      const ops1: Op[] = [];
      const ops2: Op[] = [];
      let stop = false;
      const w = Promise.all([worker(d, steps1, ops1, () => stop), worker(d, steps2, ops2, () => stop)]);
      const killAfter = 300 + Math.floor(Math.random() * 1500);
      await sleep(killAfter);
      await killHard(d);
      stop = true;
      await w;

      const exp = expectations([...ops1, ...ops2], known);
      await d.launch({ args: ["--config", cfgFile] });
      const pfs = new Set<string>((await d.ok(["mgmtpf", "-l"])).devices.map((p: { pf: string }) => p.pf));
      const present = new Set<string>([...pfs].map((p) => `pf/${p}`));
      for (const pf of pfs) for (const v of (await d.ok(["vf", "-l", pf])).devices) present.add(`vf/${v.vf}`);
      let checked = 0;
      for (const [key, want] of exp) {
        if (want === undefined) continue;
        t.is(present.has(key), want, `round ${round} (killed ${killAfter} ms in): ${key} should be ${want ? "present" : "absent"}`);
        checked++;
      }
      for (const key of present) t.true(exp.has(key), `round ${round}: ${key} was asked for`);
      // No VF without its PF, in the journal itself (the daemon is up: a read-only reader).
      const dump = await d.cli(["journal", "dump", "--state-dir", d.stateDir]);
      t.is(dump.code, 0, dump.stderr);
      const jpfs = new Set(dump.json.pfs.map((p: { pf: string }) => p.pf));
      for (const v of dump.json.vfs) t.true(jpfs.has(v.pf), `round ${round}: VF ${v.vf} has its PF ${v.pf} in the journal`);
      t.is(dump.json.vfs.length, [...present].filter((k) => k.startsWith("vf/")).length, `round ${round}: the journal and the daemon agree`);
      const failed = d.logLines().filter((l) => l.event === "vf_restore_failed" || l.event === "vf_restore_skipped");
      t.deepEqual(failed, [], `round ${round}: every VF restored`);
      const acked = [...ops1, ...ops2].filter((o) => o.code === 0).length;
      t.log(`round ${round}: killed ${killAfter} ms in; ${acked} acknowledged changes, ${checked} keys checked, ${dump.json.vfs.length} VFs now`);
      known = new Map([...present].map((k) => [k, true]));
      for (const [k, v] of exp) if (v === false && !present.has(k)) known.set(k, false);
    }
  } finally {
    await d.stop();
    d.cleanup();
    fs.rmSync(path.dirname(cfgFile), { recursive: true, force: true });
  }
});

/** Writes `n` server-mode VFs straight into a journal (the daemon must be down). */
function seedJournal(stateDir: string, sockDir: string, n: number): Promise<void> {
  const journalJs = path.join(repoRoot, "packages/vhostd/dist/src/journal.js");
  const code = `
    import { Journal } from ${JSON.stringify(journalJs)};
    const j = Journal.open(${JSON.stringify(path.join(stateDir, "journal"))});
    await j.putPf({ dev: "0000:af:00.2", type: "net", switchId: 0 });
    const h = (x) => x.toString(16).padStart(2, "0");
    const ps = [];
    for (let i = 0; i < ${n}; i++) {
      const rid = 0xaf25 + 8 * i;
      const dev = "0000:" + h((rid >> 8) & 0xff) + ":" + h((rid >> 3) & 0x1f) + "." + (rid & 7);
      ps.push(j.putVf({ dev, pf: "0000:af:00.2", socketPath: ${JSON.stringify(sockDir)} + "/s" + i, mode: "server", mac: "02:00:00:00:" + h(i >> 8) + ":" + h(i & 0xff), mtu: 1500, queuePairs: 1, devId: i }));
    }
    await Promise.all(ps);
    await j.close();`;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ["--input-type=module", "-e", code], (err, _o, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve())),
  );
}

test.serial("restore time: 512 VFs from the journal", async (t) => {
  const d = await Daemon.start();
  try {
    await d.stop();
    const n = 512;
    await seedJournal(d.stateDir, d.dir, n);
    const t0 = Date.now();
    await d.launch();
    const r = await d.waitForLog((l) => l.event === "restore_done" && l.vfs === n);
    t.log(`restored ${r.vfs} VFs in ${r.ms} ms (daemon answering RPC ${Date.now() - t0} ms after spawn)`);
    t.is(r.vfsFailed + r.vfsSkipped, 0);
    t.is((await d.ok(["vf", "-l", PF])).devices.length, n);
    t.is(d.logLines().filter((l) => l.event === "vf_restored").length, n, "one line per restored VF");
    t.true(r.ms < 10_000, `restore took ${r.ms} ms`);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

