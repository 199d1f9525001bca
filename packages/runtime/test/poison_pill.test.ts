// No poison pill across HA (issue 17). The crash ledger's verdicts on synthetic crash records,
// then vfe-vhostd's mirror holder against a "keeper" that really dies of a VF (a child process
// with an engine on the shared file, aborting while its JS thread handles that VF): the VF is
// held, not run, at the first takeover and broken at the second; the other VF is adopted in
// place both times. And records that pass the decoder but not the engine fail their VF only.
import test from "ava";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { FramedFdConnection, connectUnix, native, type CrashRecord, type NativeEngine } from "@vhostd/native";
import type { MirrorFrame, MirrorVf } from "@vhostd/proto";
import { CrashLedger, MIRROR_CODEC, MirrorHolder, vfTag, type VfSpec } from "../src/index.js";

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split("\n")) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

const tick = (ms = 30) => new Promise((r) => setTimeout(r, ms));

function spec(dev: string, devId: number, dir = "/tmp"): VfSpec {
  return { dev, pf: "0000:af:00.2", kind: "net", devId, switchId: 0, socketPath: `${dir}/${dev.replace(/[:.]/g, "_")}.sock`, mode: "client", mac: `52:54:00:dd:bb:0${devId}`, mtu: 1500, queuePairs: 1 };
}

/* ------------------------------------------------------------------ the ledger alone */

function record(r: Partial<CrashRecord>): CrashRecord {
  return { role: 0, pid: 4242, tid: 4243, sig: 6, code: -6, slot: 1, serve: -1, peer: -1, serveTag: 0, peerTag: 0, atMs: Date.now(), jsException: false, command: false, external: false, ...r };
}

function fakeLedger(): { ledger: CrashLedger; push(r: CrashRecord): void; slot: Uint32Array; lines: Array<Record<string, unknown>> } {
  const pending: CrashRecord[] = [];
  const slot = new Uint32Array(2);
  const engine = { crash: { jsSlot: slot, ledger: new Uint32Array(4 * 16), role: 1 }, claimCrashes: () => pending.splice(0) } as unknown as NativeEngine;
  const { log, lines } = capture();
  return { ledger: new CrashLedger(engine, log), push: (r) => pending.push(r), slot, lines };
}

test("two crashes in a row break the VF being served; a clean interval starts it from zero; vf -r forgets it", (t) => {
  const { ledger, push, lines } = fakeLedger();
  const x = spec("0000:af:04.5", 3);
  const y = spec("0000:af:05.5", 4);
  ledger.register(x);
  ledger.register(y);
  const lookup = (id: number) => [x, y].find((s) => s.devId === id);
  push(record({ serve: 3, serveTag: vfTag(x) }));
  const v1 = ledger.claim(lookup);
  t.like(v1[0]!.implicated[0], { vf: x.dev, socket: x.socketPath, how: "serving", count: 1, broken: false });
  t.like(ledger.state(x), { count: 1, broken: false });
  t.regex(ledger.state(x).reason!, /vfe-vhostd-ha died of SIGABRT while serving it/);
  t.like(ledger.state(y), { count: 0, broken: false });
  push(record({ serve: 3, serveTag: vfTag(x) }));
  ledger.claim(lookup);
  const st = ledger.state(x);
  t.like(st, { count: 2, broken: true });
  t.regex(st.reason!, /^broken: implicated in 2 crashes in a row .*vf -r, then vf -a/);
  const err = lines.find((l) => l.event === "crash_attributed" && l.broken === true);
  t.is(err?.level, 50, "an error-level line");
  t.is(err?.vf, x.dev);
  t.is(err?.socket, x.socketPath);
  t.false(ledger.clean(x), "a broken VF is not cleared by running (it does not run)");

  push(record({ serve: 4, serveTag: vfTag(y), slot: 0 }));
  ledger.claim(lookup);
  t.like(ledger.state(y), { count: 1 });
  t.regex(ledger.state(y).reason!, /while handling it/, "the JS thread's crash: the VF it handled");
  t.true(ledger.clean(y));
  push(record({ serve: 4, serveTag: vfTag(y) }));
  ledger.claim(lookup);
  t.like(ledger.state(y), { count: 1, broken: false }, "not in a row: a clean interval was between");

  ledger.forget(x);
  t.like(ledger.state(x), { count: 0, broken: false });
  ledger.register(x);
  t.like(ledger.state(x), { count: 0, broken: false }, "re-added: clean");
});

test("a crash while delivering counts sender and receiver; at two, the sender is broken, the receiver only when another crash names it", (t) => {
  const { ledger, push } = fakeLedger();
  const x = spec("0000:af:04.5", 1);
  const y = spec("0000:af:05.5", 2);
  const z = spec("0000:af:06.5", 5);
  for (const s of [x, y, z]) ledger.register(s);
  for (let i = 0; i < 2; i++) {
    push(record({ serve: 1, serveTag: vfTag(x), peer: 2, peerTag: vfTag(y) }));
    ledger.claim();
  }
  t.like(ledger.state(x), { count: 2, broken: true });
  t.like(ledger.state(y), { count: 2, broken: false });
  t.regex(ledger.state(y).reason!, /while delivering frames to it/);
  push(record({ serve: 5, serveTag: vfTag(z), peer: 2, peerTag: vfTag(y) }));
  ledger.claim();
  t.like(ledger.state(z), { count: 1, broken: false });
  t.like(ledger.state(y), { count: 3, broken: true });
});

test("a record naming a device id that another VF uses now, or no device, holds nothing against anyone", (t) => {
  const { ledger, push, lines } = fakeLedger();
  const x = spec("0000:af:04.5", 3);
  ledger.register(x);
  push(record({ serve: 3, serveTag: 12345 }));
  push(record({ serve: 9, serveTag: 0 }));
  push(record({ slot: -1 }));
  ledger.claim();
  t.like(ledger.state(x), { count: 0, broken: false });
  t.is(lines.filter((l) => /not counted/.test(String(l.msg))).length, 2);
  t.true(lines.some((l) => /serving no device/.test(String(l.msg))));
  // Another VF taking the id drops the old VF's record.
  push(record({ serve: 3, serveTag: vfTag(x) }));
  ledger.claim();
  t.like(ledger.state(x), { count: 1 });
  const other = { ...spec("0000:af:07.5", 3) };
  ledger.register(other);
  t.like(ledger.state(other), { count: 0 });
  t.like(ledger.state(x), { count: 0 }, "the tag no longer matches x");
});

test("within() names the VF on the JS thread's slot for exactly as long as it runs, nested or thrown through", (t) => {
  const { ledger, slot } = fakeLedger();
  t.is(slot[0], 0);
  ledger.within(3, () => {
    t.is(slot[0], 4);
    ledger.within(7, () => t.is(slot[0], 8));
    t.is(slot[0], 4);
    t.throws(() => ledger.within(9, () => {
      throw new Error("boom");
    }));
    t.is(slot[0], 4);
  });
  t.is(slot[0], 0);
});

/* ------------------------------------------------------------- the mirror holder */

/** A "keeper" that dies: an engine of role 0 on the run dir's shared file aborts while its JS thread handles `vf`. */
function keeperDiesOf(dir: string, vf: VfSpec): void {
  const nativeJs = fileURLToPath(import.meta.resolve("@vhostd/native"));
  const script = `
    import fs from "node:fs";
    import { native } from ${JSON.stringify(nativeJs)};
    const fd = fs.openSync(${JSON.stringify(path.join(dir, "engine-shared"))}, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const eng = new native.Engine({ crashRole: 0, sharedFd: fd }, () => {});
    eng.crash.ledger[4 * ${vf.devId}] = ${vfTag(vf)}; // the keeper registered it when it opened it
    eng.crash.jsSlot[0] = ${vf.devId + 1};
    process.abort();
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
  if (r.signal !== "SIGABRT") throw new Error(`the keeper stand-in did not abort: ${r.status} ${r.signal} ${r.stderr}`);
}

function setup(t: import("ava").ExecutionContext, specs: VfSpec[]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-poison-"));
  const { log, lines } = capture();
  const holder = new MirrorHolder({ runDir: dir, log, specOf: (dev) => specs.find((s) => s.dev === dev), pfSwitchOf: (dev) => (dev === "0000:af:00.2" ? 0 : undefined), lockWaitMs: 50 });
  holder.listen();
  t.teardown(async () => {
    await holder.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const keeper = () => new FramedFdConnection<MirrorFrame>(connectUnix(path.join(dir, "ha-mirror.sock")), MIRROR_CODEC, { onFrame: (f, fds) => frames.push({ f, fds }), onClose: () => undefined });
  const frames: Array<{ f: MirrorFrame; fds: number[] }> = [];
  return { dir, holder, lines, keeper, frames };
}

/** A session that negotiated nothing yet: just its connection (fd 0). */
const bare = (reconnects = 0): MirrorVf => ({ conn: 0, listen: -1, reconnects, session: { features: "0x0", protocolFeatures: "0x0", status: 0, owner: true, regions: [], vrings: [] } });

test.serial("a VF that crashed the keeper is held, not run, by vfe-vhostd, handed back, and broken when it crashes the keeper again; the other VF is adopted in place each time", async (t) => {
  const x = spec("0000:af:04.5", 1);
  const y = spec("0000:af:05.5", 2);
  const { dir, holder, lines, keeper, frames } = setup(t, [x, y]);
  const [xOurs, xFront] = native.socketPair();
  const [yOurs, yFront] = native.socketPair();
  t.teardown(() => [xFront, yFront].forEach((fd) => native.closeFd(fd)));

  const k1 = keeper();
  await tick();
  k1.send({ op: "pf", dev: "0000:af:00.2", switchId: 0, count: 0 });
  k1.send({ op: "vf", dev: x.dev, rec: bare(), count: 1 }, [xOurs]);
  k1.send({ op: "vf", dev: y.dev, rec: bare(5), count: 1 }, [yOurs]);
  native.closeFd(xOurs);
  native.closeFd(yOurs);
  await tick();
  t.is(holder.status().copies, 2);

  // 1st crash: the keeper dies of x.
  keeperDiesOf(dir, x);
  k1.close("keeper died", false);
  await tick(300);
  t.deepEqual(holder.status().held, [x.dev], "x is held");
  t.true(holder.runs(y.dev), "y is adopted");
  t.is(holder.runtime(y.dev)?.reconnects, 5);
  t.like(holder.runtime(x.dev), { state: "held" });
  t.regex(holder.runtime(x.dev)!.lastError!, /implicated in 1 crash\(es\) in a row/);
  t.true(lines.some((l) => l.event === "takeover_held" && l.vf === x.dev && l.socket === x.socketPath));
  t.is(native.recvWithFds(xFront, 16, 0), null, "x's front-end is not disconnected: it waits for the keeper");
  t.is(native.recvWithFds(yFront, 16, 0), null);

  // The keeper comes back and takes everything back, x too (its second chance).
  const k2 = keeper();
  await tick();
  k2.send({ op: "take", req: 7 });
  await tick(100);
  const offered = frames.find((f) => f.f.op === "offered");
  t.truthy(offered, "offered");
  t.deepEqual((offered!.f as { devs: string[] }).devs.sort(), [x.dev, y.dev].sort(), "x is offered with y");
  k2.send({ op: "ready", req: 7 });
  await tick(100);
  t.true(frames.some((f) => f.f.op === "released"));
  for (const f of frames.splice(0)) for (const fd of f.fds) native.closeFd(fd); // the "keeper" keeps no dups
  t.deepEqual(holder.status().held, [], "copies again");
  t.is(holder.status().copies, 2);

  // 2nd crash of the keeper, again x's: x is broken, y adopted again.
  keeperDiesOf(dir, x);
  k2.close("keeper died again", false);
  await tick(300);
  t.true(holder.runs(y.dev));
  t.like(holder.runtime(x.dev), { state: "broken" });
  t.regex(holder.runtime(x.dev)!.lastError!, /^broken: implicated in 2 crashes in a row/);
  const r = native.recvWithFds(xFront, 16, 0);
  t.is(r?.data.length, 0, "x's front-end sees its connection closed");
  t.is(native.recvWithFds(yFront, 16, 0), null, "y's front-end still connected");
  const broke = lines.find((l) => l.event === "vf_broken" && l.vf === x.dev);
  t.is(broke?.level, 50);
  t.is(broke?.socket, x.socketPath);

  // vf -r forgets the record: added again, x starts clean.
  await holder.closeVf(x.dev);
  t.false(holder.runs(x.dev));
});

test.serial("adopted records that pass the decoder but not the engine (a ring outside its memory, a garbled reply) fail their VF only", async (t) => {
  const x = spec("0000:af:04.5", 1);
  const y = spec("0000:af:05.5", 2);
  const z = spec("0000:af:06.5", 3);
  const { holder, lines, keeper } = setup(t, [x, y, z]);
  const k = keeper();
  await tick();
  const [xOurs, xFront] = native.socketPair();
  const [yOurs, yFront] = native.socketPair();
  const [zOurs, zFront] = native.socketPair();
  t.teardown(() => [xFront, yFront, zFront].forEach((fd) => native.closeFd(fd)));
  const mem = native.memfdCreate("poison-test-guest", 1 << 20);
  const kick = native.eventFd(0);
  // y: one region of 1 MiB at user address 0x7f0000000000, ring 0 "running" at addresses beyond it.
  const yRec: MirrorVf = {
    conn: 0,
    listen: -1,
    reconnects: 0,
    session: {
      features: "0x0",
      protocolFeatures: "0x0",
      status: 0,
      owner: true,
      regions: [{ guestAddr: "0x0", size: "0x100000", userAddr: "0x7f0000000000", mmapOffset: "0x0", fd: 1 }],
      vrings: [
        { index: 0, num: 256, addr: { flags: 0, desc: "0x7f0000400000", used: "0x7f0000401000", avail: "0x7f0000402000", log: "0x0" }, base: 0, kick: 2, call: -1, err: -1, kicked: true, enabled: true, started: true },
      ],
    },
  };
  // z: a pending "reply" that is no vhost-user reply.
  const zRec: MirrorVf = { ...bare(), reply: "deadbeef".repeat(8) };
  k.send({ op: "pf", dev: "0000:af:00.2", switchId: 0, count: 0 });
  k.send({ op: "vf", dev: x.dev, rec: bare(), count: 1 }, [xOurs]);
  k.send({ op: "vf", dev: y.dev, rec: yRec, count: 3 }, [yOurs, mem, kick]);
  k.send({ op: "vf", dev: z.dev, rec: zRec, count: 1 }, [zOurs]);
  for (const fd of [xOurs, yOurs, zOurs, mem, kick]) native.closeFd(fd);
  await tick();
  k.close("keeper killed", false); // no crash record: a kill
  await tick(300);
  t.true(lines.some((l) => l.event === "takeover_done"));
  t.deepEqual(holder.status().held, [], "a kill holds nothing against anyone");
  t.is(native.recvWithFds(xFront, 16, 0), null, "x adopted in place");
  t.is(holder.runtime(x.dev)?.state, "negotiating");
  t.is(native.recvWithFds(yFront, 16, 0)?.data.length, 0, "y's front-end disconnected: its ring cannot start");
  t.true(lines.some((l) => /resuming the adopted session failed/.test(String(l.msg)) && /outside mapped memory/.test(JSON.stringify(l))));
  t.is(native.recvWithFds(zFront, 16, 0)?.data.length, 0, "z's front-end disconnected, not sent the garbage");
  t.true(lines.some((l) => /mirrored reply/.test(JSON.stringify(l))));
  t.regex(holder.runtime(y.dev)?.lastError ?? "", /outside mapped memory/);
});
