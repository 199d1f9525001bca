// The keeper (HA phase 1) in-process with a recording VfHost, driven over the real sync
// channel by vhostd's HaClient: idempotent deltas, close+open on a changed spec, snapshot
// reconciliation, hostile ops, refused opens taken back out of the replica, and a restart
// that brings every VF back from the replica journal before the sync socket is served.
import test from "ava";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { haSyncEndpoint, pfKey, pfRecordValue as pfValue, vfKey, vfRecordValue as vfValue, type DeviceKind, type HaOp } from "@vhostd/proto";
import { Keeper } from "@vhostd/ha";
import type { VfHost, VfRuntime, VfSpec } from "@vhostd/runtime";
import { HaClient, HaSyncError } from "@vhostd/vhostd";

const root = mkdtempSync(path.join(tmpdir(), "vhostd-keeper-"));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const log = pino({ level: "silent" });

class FakeHost implements VfHost {
  calls: string[] = [];
  running = new Map<string, VfSpec>();
  failSockets = new Set<string>();
  open(vf: VfSpec): void {
    if (this.failSockets.has(vf.socketPath)) {
      const e = new Error(`cannot serve ${vf.socketPath}: bind ENOENT`) as Error & { errno: number };
      e.errno = -2;
      throw e;
    }
    this.calls.push(`open ${vf.dev}`);
    this.running.set(vf.dev, vf);
  }
  async close(dev: string): Promise<void> {
    this.calls.push(`close ${dev}`);
    this.running.delete(dev);
  }
  runtime(dev: string): VfRuntime | undefined {
    return this.running.has(dev) ? { state: "waiting", connected: false, features: "0x0", protocolFeatures: "0x0", reconnects: 0, queues: [] } : undefined;
  }
  addPf(pf: string, switchId: number, _kind: DeviceKind): void {
    this.calls.push(`addPf ${pf} ${switchId}`);
  }
  removePf(pf: string): void {
    this.calls.push(`removePf ${pf}`);
  }
  async shutdown(): Promise<void> {
    this.calls.push("shutdown");
  }
}

const PF = "0000:af:00.2";
function spec(i: number, dir: string, over: Partial<VfSpec> = {}): VfSpec {
  const dev = `0000:af:0${4 + i}.5`;
  return { dev, pf: PF, kind: "net", devId: i, switchId: 0, socketPath: path.join(dir, `vf${i}.sock`), mode: "server", mac: `52:54:00:00:af:${(0x25 + 8 * i).toString(16)}`, mtu: 1500, queuePairs: 1, ...over };
}
const putPf = (): HaOp => ({ op: "put", table: "devices", key: pfKey(PF), value: pfValue(PF, 0, "net") });
const putVf = (s: VfSpec): HaOp => ({ op: "put", table: "devices", key: vfKey(s.dev), value: vfValue(s) });
const delVf = (dev: string): HaOp => ({ op: "del", table: "devices", key: vfKey(dev) });

async function setup(dir = mkdtempSync(path.join(root, `k${n++}-`)), host = new FakeHost()) {
  const keeper = await Keeper.start({ runDir: dir, stateDir: dir, log, host, heartbeatMs: 50, peerTimeoutMs: 1000 });
  return { dir, host, keeper };
}

async function client(dir: string, epoch: number): Promise<HaClient> {
  const c = new HaClient({ endpoint: haSyncEndpoint(dir), log, epoch, heartbeatMs: 50, peerTimeoutMs: 1000, requestTimeoutMs: 3000 });
  await c.connect();
  await c.hello();
  return c;
}

test.serial("deltas open and close; an identical put is a no-op; a changed spec is close + open", async (t) => {
  const { dir, host, keeper } = await setup();
  const c = await client(dir, 1);
  try {
    const s0 = spec(0, dir);
    await c.send([putPf()]);
    await c.send([putVf(s0)]);
    t.deepEqual(host.calls, [`addPf ${PF} 0`, `open ${s0.dev}`]);
    await c.send([putVf(s0)]);
    await c.send([putPf()]);
    t.deepEqual(host.calls.length, 2, "identical puts change nothing");
    await c.send([putVf({ ...s0, mtu: 9000 })]);
    t.deepEqual(host.calls.slice(2), [`close ${s0.dev}`, `open ${s0.dev}`]);
    t.is(host.running.get(s0.dev)!.mtu, 9000);
    await c.send([delVf(s0.dev)]);
    t.deepEqual(keeper.list().vfs, []);
  } finally {
    c.close();
    await keeper.stop();
  }
});

test.serial("hostile and refused deltas change nothing and are nacked with the host's errno", async (t) => {
  const { dir, host, keeper } = await setup();
  const c = await client(dir, 1);
  try {
    await c.send([putPf()]);
    const bad: HaOp[][] = [
      [{ op: "put", table: "devices", key: "vf/0000:af:04.5", value: { dev: "0000:af:04.5" } }],
      [{ op: "put", table: "devices", key: "vf/0000:af:04.5", value: { ...vfValue(spec(0, dir)), dev: "0000:af:05.5" } }],
      [{ op: "put", table: "devices", key: "zz/1", value: 1 }],
      [{ op: "put", table: "sessions", key: "s", value: 1 }],
      [putVf(spec(0, dir)), { op: "put", table: "devices", key: "vf/0000:af:05.5", value: { ...vfValue(spec(1, dir)), mac: "ff:ff:ff:ff:ff:ff" } }],
    ];
    for (const ops of bad) {
      const err = await t.throwsAsync(c.send(ops), { instanceOf: HaSyncError });
      t.is(err!.errno, -22, err!.message);
    }
    t.deepEqual(keeper.list().vfs, [], "nothing opened by a delta with a bad op");
    const s = spec(0, dir);
    host.failSockets.add(s.socketPath);
    const err = await t.throwsAsync(c.send([putVf(s)]), { instanceOf: HaSyncError });
    t.is(err!.errno, -2, err!.message);
    t.regex(err!.message, /bind ENOENT/);
    t.deepEqual(keeper.list().vfs, []);
    // A refused delta is handled, not missing: the next one applies without a snapshot.
    host.failSockets.clear();
    await c.send([putVf(s)]);
    t.deepEqual(keeper.list().vfs, [s.dev]);
  } finally {
    c.close();
    await keeper.stop();
  }
});

test.serial("a snapshot reconciles: identical VFs untouched, unknown ones closed, missing ones opened", async (t) => {
  const { dir, host, keeper } = await setup();
  const c1 = await client(dir, 1);
  const [s0, s1, s2] = [spec(0, dir), spec(1, dir), spec(2, dir)];
  await c1.send([putPf(), putVf(s0), putVf(s1)]);
  c1.close();
  // A restarted vhostd (newer epoch) never acknowledged s1 and wants s2.
  const c2 = await client(dir, 2);
  try {
    host.calls = [];
    await c2.sendSnapshot({ devices: { [pfKey(PF)]: pfValue(PF, 0, "net"), [vfKey(s0.dev)]: vfValue(s0), [vfKey(s2.dev)]: vfValue(s2) }, sessions: {}, fds: {} });
    t.deepEqual(host.calls, [`close ${s1.dev}`, `open ${s2.dev}`], "s0 untouched");
    t.deepEqual(keeper.list().vfs.sort(), [s0.dev, s2.dev].sort());
  } finally {
    c2.close();
    await keeper.stop();
  }
});

test.serial("a restarted keeper brings every VF back from its replica journal before serving the sync socket", async (t) => {
  const first = await setup();
  const c = await client(first.dir, 1);
  const specs = [0, 1, 2, 3].map((i) => spec(i, first.dir));
  await c.send([putPf()]);
  for (const s of specs) await c.send([putVf(s)]);
  await c.send([delVf(specs[3]!.dev)]);
  c.close();
  await first.keeper.stop();
  const host = new FakeHost();
  const again = await setup(first.dir, host);
  try {
    t.deepEqual(host.calls, [`addPf ${PF} 0`, ...specs.slice(0, 3).map((s) => `open ${s.dev}`)]);
    for (const s of specs.slice(0, 3)) t.deepEqual(host.running.get(s.dev), s, "same spec as journaled");
    const c2 = await client(first.dir, 2);
    const snap = await c2.requestSnapshot();
    t.deepEqual(Object.keys(snap.state.devices).sort(), [pfKey(PF), ...specs.slice(0, 3).map((s) => vfKey(s.dev))].sort());
    c2.close();
  } finally {
    await again.keeper.stop();
  }
});

test.serial("pipelined deltas: one that fails to open is taken back, the others run and are in the replica", async (t) => {
  const first = await setup();
  const c = await client(first.dir, 1);
  const specs = Array.from({ length: 24 }, (_, i) => spec(i, first.dir, { dev: `0000:b0:${(i + 1).toString(16).padStart(2, "0")}.1` }));
  first.host.failSockets.add(specs[9]!.socketPath);
  await c.send([putPf()]);
  const results = await Promise.allSettled(specs.map((s) => c.send([putVf(s)])));
  t.deepEqual(results.flatMap((r, i) => (r.status === "rejected" ? [i] : [])), [9]);
  const ok = specs.filter((_, i) => i !== 9).map((s) => s.dev);
  t.deepEqual(first.keeper.list().vfs.sort(), [...ok].sort());
  c.close();
  await first.keeper.stop();
  const host = new FakeHost();
  const again = await setup(first.dir, host);
  try {
    t.deepEqual([...host.running.keys()].sort(), [...ok].sort(), "the replica holds what ran, not the refused VF");
  } finally {
    await again.keeper.stop();
  }
});

test.serial("a second keeper on the same run dir refuses to start", async (t) => {
  const { dir, keeper } = await setup();
  try {
    await t.throwsAsync(setup(dir), { message: /another vfe-vhostd-ha/ });
  } finally {
    await keeper.stop();
  }
});
