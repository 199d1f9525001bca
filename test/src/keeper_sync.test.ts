// The HA state channel over a real ipc endpoint: keeper SyncServer ↔ vhostd HaClient, plus a
// raw zeromq DEALER playing a hostile or buggy vhostd, and child processes killed with -9.
import test from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { pino, type Logger } from "pino";
import { Dealer } from "zeromq";
import {
  HA_SYNC_PROTOCOL_VERSION,
  applyOps,
  decodeSyncMessage,
  emptyState,
  encodeSyncMessage,
  haSyncEndpoint,
  type DeltaMsg,
  type HaState,
  type SnapshotMsg,
  type SyncMessage,
} from "@vhostd/proto";
import { SyncServer } from "@vhostd/ha";
import { HaClient, type HaSyncError } from "@vhostd/vhostd";

// The child processes below load the same modules by name.
const clientUrl = new URL(import.meta.resolve("@vhostd/vhostd"));
const serverUrl = new URL(import.meta.resolve("@vhostd/ha"));

const root = mkdtempSync(path.join(tmpdir(), "vhostd-hasync-"));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const runDir = () => mkdtempSync(path.join(root, `r${n++}-`));

function captureLog(): { log: Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
  return { log, lines };
}

async function until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A keeper whose replica is a plain state; records every delta it applied. */
async function keeper(endpoint: string, extra: { heartbeatMs?: number; peerTimeoutMs?: number } = {}) {
  const { log, lines } = captureLog();
  const state: HaState = emptyState();
  const applied: DeltaMsg[] = [];
  const snapshots: SnapshotMsg[] = [];
  const server = new SyncServer({
    endpoint,
    log,
    version: "test-keeper",
    hasState: () => applied.length > 0 || snapshots.length > 0,
    onDelta: async (d) => {
      applied.push(d);
      applyOps(state, d.ops);
    },
    getSnapshot: () => state,
    onSnapshot: async (s) => {
      snapshots.push(s);
      state.devices = s.state.devices;
      state.sessions = s.state.sessions;
      state.fds = s.state.fds;
    },
    heartbeatMs: extra.heartbeatMs ?? 50,
    peerTimeoutMs: extra.peerTimeoutMs ?? 300,
  });
  await server.start();
  return { server, state, applied, snapshots, lines };
}

/** A raw DEALER for hand-made (hostile) messages. */
async function rawPeer(endpoint: string) {
  const sock = new Dealer({ linger: 0 });
  sock.connect(endpoint);
  const got: SyncMessage[] = [];
  let closed = false;
  void (async () => {
    while (!closed) {
      try {
        const [f] = await sock.receive();
        got.push(decodeSyncMessage(f!));
      } catch {
        return;
      }
    }
  })();
  return {
    got,
    send: (m: SyncMessage | Buffer | Buffer[]) => sock.send(Buffer.isBuffer(m) || Array.isArray(m) ? m : encodeSyncMessage(m)),
    close: () => {
      closed = true;
      sock.close();
    },
  };
}

const put = (key: string, value: unknown) => ({ op: "put" as const, table: "devices" as const, key, value });

test.serial("hello/welcome, socket 0600, 1000 deltas acked in order and applied once; ack round trip", async (t) => {
  const endpoint = haSyncEndpoint(runDir());
  const k = await keeper(endpoint);
  t.is(statSync(endpoint.slice("ipc://".length)).mode & 0o777, 0o600);
  const { log } = captureLog();
  const client = new HaClient({ endpoint, log, epoch: 1, version: "test-vhostd", heartbeatMs: 50, peerTimeoutMs: 300 });
  await client.connect();
  const ups: unknown[] = [];
  client.on("keeper_up", (w) => ups.push(w));
  const welcome = await client.hello();
  t.like(welcome, { type: "welcome", version: "test-keeper", lastEpoch: 0, lastSeq: 0, hasState: false });
  t.is(ups.length, 1);
  t.true(client.keeperUp);
  t.like(k.server.peer, { epoch: 1, pid: process.pid, version: "test-vhostd" });

  // 1000 pipelined deltas: every promise resolves with its seq, in order, each applied once.
  const order: number[] = [];
  const results = await Promise.all(
    Array.from({ length: 1000 }, (_, i) => client.send([put(`d${i}`, { i })]).then((r) => (order.push(r.seq), r))),
  );
  t.deepEqual(results.map((r) => r.seq), Array.from({ length: 1000 }, (_, i) => i + 1));
  t.deepEqual(order, results.map((r) => r.seq), "acks arrive in order");
  t.deepEqual(k.applied.map((d) => d.seq), Array.from({ length: 1000 }, (_, i) => i + 1));
  t.is(Object.keys(k.state.devices).length, 1000);
  t.is(k.server.lastSeq, 1000);
  t.is(client.lastAcked, 1000);

  // Round trip of one delta (send → durable+applied → ack), one at a time.
  const rtt: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const t0 = performance.now();
    await client.send([put("rtt", i)]);
    rtt.push(performance.now() - t0);
  }
  rtt.sort((a, b) => a - b);
  const pct = (p: number) => rtt[Math.min(rtt.length - 1, Math.floor((p / 100) * rtt.length))]!;
  t.log(`delta ack round trip over ipc: p50 ${(pct(50) * 1000).toFixed(0)} µs, p99 ${(pct(99) * 1000).toFixed(0)} µs, max ${(rtt.at(-1)! * 1000).toFixed(0)} µs`);

  // A restarted vhostd (new epoch) takes the state back.
  client.close();
  const next = new HaClient({ endpoint, log, epoch: 2, heartbeatMs: 50, peerTimeoutMs: 300 });
  await next.connect();
  const w2 = await next.hello();
  t.like(w2, { lastEpoch: 1, lastSeq: 3000, hasState: true });
  const snap = await next.requestSnapshot();
  t.is(Object.keys(snap.state.devices).length, 1001);
  t.deepEqual(snap.state.devices.d7, { i: 7 });
  t.deepEqual((await next.send([put("after-restart", 1)])).seq, 1, "a new epoch numbers from 1");
  next.close();
  k.server.close();
});

test.serial("queued deltas are journaled together, then applied and answered one by one; a refused one does not stop the stream", async (t) => {
  const endpoint = haSyncEndpoint(runDir());
  const { log } = captureLog();
  const batches: number[][] = [];
  const applied: number[] = [];
  const server = new SyncServer({
    endpoint,
    log,
    journalDeltas: async (ds) => {
      batches.push(ds.map((d) => d.seq));
      await new Promise((r) => setTimeout(r, 2)); // a disk flush: the next deltas queue meanwhile
      return ds.map((d) => (d.ops.some((op) => op.key.startsWith("bad")) ? Object.assign(new Error("bad key"), { errno: -22 }) : null));
    },
    onDelta: async (d) => {
      if (d.ops.some((op) => op.key.startsWith("fails"))) throw Object.assign(new Error("cannot open"), { errno: 2 }); // either sign: the nack carries it negative
      applied.push(d.seq);
    },
    getSnapshot: () => emptyState(),
    onSnapshot: async () => {},
    heartbeatMs: 50,
    peerTimeoutMs: 300,
  });
  await server.start();
  const client = new HaClient({ endpoint, log, epoch: 1, heartbeatMs: 50, peerTimeoutMs: 300 });
  await client.connect();
  await client.hello();
  // Two deltas on the same key never share a batch (a refused one's take-back would undo the other).
  const keys = Array.from({ length: 200 }, (_, i) => (i === 50 ? "bad50" : i === 120 ? "fails120" : i === 150 ? "d149" : `d${i}`));
  const results = await Promise.allSettled(keys.map((k) => client.send([put(k, 1)])));
  const refused = results.flatMap((r, i) => (r.status === "rejected" ? [[i + 1, r.reason as HaSyncError] as const] : []));
  t.deepEqual(refused.map(([seq]) => seq), [51, 121]);
  t.is(refused[0]![1].errno, -22, "the errno rides in the nack as a number");
  t.regex(refused[0]![1].message, /bad key/);
  t.is(refused[1]![1].errno, -2);
  t.regex(refused[1]![1].message, /cannot open/);
  t.deepEqual(applied, Array.from({ length: 200 }, (_, i) => i + 1).filter((s) => s !== 51 && s !== 121), "all others applied, in order");
  t.deepEqual(batches.flat(), Array.from({ length: 200 }, (_, i) => i + 1), "each delta journaled once, in order");
  t.true(batches.length < 100, `${batches.length} journal writes for 200 deltas`);
  t.true(batches.every((b) => !(b.includes(149) && b.includes(151))), "d149 twice: never in one batch");
  t.is(server.lastSeq, 200, "the refused deltas were handled: no gap, no snapshot needed");
  t.is((await client.send([put("next", 1)])).seq, 201);
  client.close();
  server.close();
});

test.serial("a replayed seq is acked again but not applied; a gap is nacked; stale epochs are rejected", async (t) => {
  const endpoint = haSyncEndpoint(runDir());
  const k = await keeper(endpoint);
  const raw = await rawPeer(endpoint);
  await raw.send({ type: "hello", protocolVersion: HA_SYNC_PROTOCOL_VERSION, epoch: 5, pid: 4242, version: "raw" });
  await until(() => raw.got.some((m) => m.type === "welcome"), "welcome");
  const delta = (seq: number, epoch = 5): SyncMessage => ({ type: "delta", epoch, seq, ops: [put(`k${seq}`, seq)] });
  await raw.send(delta(1));
  await raw.send(delta(2));
  await raw.send(delta(2)); // replay
  await raw.send(delta(1)); // older replay
  await until(() => raw.got.filter((m) => m.type === "ack").length === 4, "4 acks");
  t.deepEqual(
    raw.got.filter((m) => m.type === "ack").map((m) => (m as { seq: number }).seq),
    [1, 2, 2, 1],
  );
  t.deepEqual(k.applied.map((d) => d.seq), [1, 2], "replays were not applied");

  await raw.send(delta(4)); // gap: 3 is missing
  await until(() => raw.got.some((m) => m.type === "nack"), "nack");
  t.like(raw.got.find((m) => m.type === "nack"), { type: "nack", seq: 4, code: "gap", of: "delta" });
  t.is(k.applied.length, 2);
  t.true(k.lines.some((l) => l.level === 40 && /delta refused: delta 4 after 2/.test(l.msg)));

  // Stale epoch, from a different connection: rejected, nothing applied, the sequencer untouched.
  const old = await rawPeer(endpoint);
  await old.send({ type: "hello", protocolVersion: HA_SYNC_PROTOCOL_VERSION, epoch: 4, pid: 1, version: "old" });
  await old.send(delta(3, 4));
  await until(() => old.got.filter((m) => m.type === "reject").length === 2, "2 rejects");
  t.true(old.got.every((m) => m.type === "reject" && m.code === "stale_epoch"));
  t.is(k.applied.length, 2);
  t.is(k.server.epoch, 5);
  t.is(k.server.lastSeq, 2);
  t.like(k.server.peer, { epoch: 5, pid: 4242 });
  t.true(k.lines.some((l) => /message rejected: hello of epoch 4 .* < current epoch 5/.test(l.msg)));
  old.close();
  raw.close();
  k.server.close();
});

test.serial("the client heals a gap with a snapshot; a newer vhostd fences the older one", async (t) => {
  const endpoint = haSyncEndpoint(runDir());
  const k = await keeper(endpoint);
  const { log, lines } = captureLog();
  const mine = emptyState();
  const client = new HaClient({ endpoint, log, epoch: 3, heartbeatMs: 50, peerTimeoutMs: 300, getState: () => mine });
  await client.connect();
  await client.hello();
  const ops1 = [put("a", 1)];
  applyOps(mine, ops1);
  t.is((await client.send(ops1)).seq, 1);

  // Lose delta 2 on the way (as if a send was dropped): the keeper sees 3 after 1.
  (client as unknown as { lastSeq: number }).lastSeq += 1;
  applyOps(mine, [put("b", 2)]);
  const ops3 = [put("c", 3)];
  applyOps(mine, ops3);
  const r3 = await client.send(ops3);
  t.is(r3.seq, 3, "resolved through the snapshot that covers it");
  t.is(k.snapshots.length, 1);
  t.like(k.snapshots[0], { epoch: 3, seq: 3 });
  t.deepEqual(k.state.devices, { a: 1, b: 2, c: 3 });
  t.is(k.server.lastSeq, 3);
  t.true(lines.some((l) => /sending a snapshot/.test(l.msg)));
  // And the stream goes on after it.
  const ops4 = [put("d", 4)];
  applyOps(mine, ops4);
  t.is((await client.send(ops4)).seq, 4);
  t.deepEqual(k.applied.map((d) => d.seq), [1, 4]);

  // A newer vhostd takes over: the old one is fenced and can no longer change anything.
  const fenced: unknown[] = [];
  client.on("fenced", (f) => fenced.push(f));
  const newer = new HaClient({ endpoint, log, epoch: 4, heartbeatMs: 50, peerTimeoutMs: 300 });
  await newer.connect();
  await newer.hello();
  await until(() => fenced.length === 1, "fenced");
  t.like(fenced[0], { code: "replaced" });
  await t.throwsAsync(client.send([put("zombie", 1)]), { message: /fenced/ });
  t.false("zombie" in k.state.devices);
  t.like(k.server.peer, { epoch: 4 });
  newer.close();
  client.close();
  k.server.close();
});

test.serial("garbage, truncated and malformed messages are rejected with a log line and change nothing", async (t) => {
  const endpoint = haSyncEndpoint(runDir());
  const k = await keeper(endpoint);
  const { log } = captureLog();
  const client = new HaClient({ endpoint, log, epoch: 1, heartbeatMs: 50, peerTimeoutMs: 300 });
  await client.connect();
  await client.hello();
  await client.send([put("x", 1)]);

  const raw = await rawPeer(endpoint);
  const good = encodeSyncMessage({ type: "delta", epoch: 1, seq: 2, ops: [put("evil", 1)] });
  const wrongVersion = Buffer.from(good);
  wrongVersion[6] = 9; // the envelope's version byte (fixarray, fixstr "VHHA", then the version)
  const hostile: Buffer[] = [
    Buffer.from("GET / HTTP/1.1\r\n\r\n"),
    Buffer.from([0xc1, 0xff, 0x00]),
    good.subarray(0, good.length - 3),
    Buffer.concat([good, Buffer.from([0x00])]),
    wrongVersion,
    encodeSyncMessage({ type: "ack", epoch: 1, seq: 1, of: "delta" }), // not the vhostd's to send
    Buffer.alloc(0),
  ];
  const rejectedBefore = k.lines.filter((l) => /message rejected/.test(l.msg)).length;
  for (const h of hostile) await raw.send(h);
  await raw.send([good, good]); // two frames in one message
  // A delta from the raw socket without hello: refused too (it is not the followed vhostd).
  await raw.send(good);
  await until(() => raw.got.filter((m) => m.type === "reject").length === hostile.length + 2, "rejects");
  const codes = raw.got.map((m) => (m.type === "reject" ? m.code : m.type));
  t.deepEqual(codes, ["malformed", "malformed", "malformed", "malformed", "bad_version", "malformed", "malformed", "malformed", "no_hello"]);
  t.is(k.lines.filter((l) => /message rejected/.test(l.msg)).length - rejectedBefore, hostile.length + 2, "one log line each");
  t.deepEqual(k.applied.map((d) => d.seq), [1], "nothing applied");
  t.is(k.server.lastSeq, 1);
  t.like(k.server.peer, { epoch: 1, pid: process.pid });
  // The real client is undisturbed.
  t.is((await client.send([put("y", 2)])).seq, 2);
  t.deepEqual(Object.keys(k.state.devices), ["x", "y"]);
  raw.close();
  client.close();
  k.server.close();
});

/** Starts a child process running `code` (an ES module body), resolves when it prints READY. */
function child(code: string): Promise<ChildProcess> {
  const cp = spawn(process.execPath, ["--input-type=module", "-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    let out = "";
    cp.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      if (out.includes("READY")) resolve(cp);
    });
    cp.on("exit", (c) => reject(new Error(`child exited (${c}) before READY: ${out}`)));
  });
}

const pinoUrl = import.meta.resolve("pino");

test.serial("heartbeat timeout: the keeper notices a SIGKILLed vhostd, the client a SIGKILLed keeper", async (t) => {
  // vhostd killed: the keeper reports the peer down within its timeout.
  {
    const endpoint = haSyncEndpoint(runDir());
    const k = await keeper(endpoint, { heartbeatMs: 50, peerTimeoutMs: 300 });
    const ups: unknown[] = [];
    const downs: { reason: string }[] = [];
    k.server.on("peer_up", (p) => ups.push(p));
    k.server.on("peer_down", (d: { reason: string }) => downs.push(d));
    const cp = await child(`
      import { pino } from ${JSON.stringify(pinoUrl)};
      const { HaClient } = await import(${JSON.stringify(clientUrl.href)});
      const c = new HaClient({ endpoint: ${JSON.stringify(endpoint)}, log: pino({ level: "silent" }), epoch: 7, heartbeatMs: 50, peerTimeoutMs: 300 });
      await c.connect(); await c.hello(); console.log("READY");`);
    await until(() => ups.length === 1, "peer up");
    t.like(k.server.peer, { epoch: 7, pid: cp.pid });
    await new Promise((r) => setTimeout(r, 400));
    t.is(downs.length, 0, "heartbeats keep a live peer up");
    const killedAt = performance.now();
    cp.kill("SIGKILL");
    await until(() => downs.length === 1, "peer down");
    const took = performance.now() - killedAt;
    t.is(downs[0]!.reason, "heartbeat timeout");
    t.true(took >= 250 && took < 1000, `detected after ${took.toFixed(0)} ms`);
    t.is(k.server.peer, null);
    t.true(k.lines.some((l) => /vhostd down \(no heartbeat\)/.test(l.msg)));
    k.server.close();
  }
  // keeper killed: the client reports the keeper down, then finds a restarted keeper by itself.
  {
    const endpoint = haSyncEndpoint(runDir());
    const cp = await child(`
      import { pino } from ${JSON.stringify(pinoUrl)};
      const { SyncServer } = await import(${JSON.stringify(serverUrl.href)});
      const s = new SyncServer({ endpoint: ${JSON.stringify(endpoint)}, log: pino({ level: "silent" }), onDelta: async () => {},
        getSnapshot: () => ({ devices: {}, sessions: {}, fds: {} }), onSnapshot: async () => {}, heartbeatMs: 50, peerTimeoutMs: 300 });
      await s.start(); console.log("READY");`);
    const { log, lines } = captureLog();
    const client = new HaClient({ endpoint, log, epoch: 1, heartbeatMs: 50, peerTimeoutMs: 300 });
    const events: string[] = [];
    client.on("keeper_up", () => events.push("up"));
    client.on("keeper_down", () => events.push("down"));
    await client.connect();
    await client.hello();
    await new Promise((r) => setTimeout(r, 400));
    t.deepEqual(events, ["up"], "heartbeats keep a live keeper up");
    t.true(client.heartbeatAgeMs < 200);
    const killedAt = performance.now();
    cp.kill("SIGKILL");
    await until(() => events.length === 2, "keeper down");
    const took = performance.now() - killedAt;
    t.deepEqual(events, ["up", "down"]);
    t.true(took >= 250 && took < 1000, `detected after ${took.toFixed(0)} ms`);
    t.false(client.keeperUp);
    t.true(lines.some((l) => /keeper down \(no heartbeat\)/.test(l.msg)));
    // A keeper restarted on the same endpoint is found again without any call.
    const k2 = await keeper(endpoint);
    await until(() => events.length === 3, "keeper up again");
    t.true(client.keeperUp);
    t.is((await client.send([put("z", 1)])).seq, 1);
    client.close();
    k2.server.close();
  }
});
