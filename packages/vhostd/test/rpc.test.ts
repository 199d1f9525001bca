import test from "ava";
import { pino } from "pino";
import { createConnection, createServer } from "node:net";
import { spawnSync } from "node:child_process";
import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkResultShape, methodSpec, resultFields, type JsonRpcResponse } from "@vhostd/proto";
import { loadConfig } from "../src/config.js";
import { createHandlers, daemonVersion } from "../src/daemon.js";
import { Inventory } from "../src/inventory.js";
import { Registry } from "../src/registry.js";
import { RpcServer } from "../src/rpc_server.js";
import { FakeHost } from "./registry_fake_host.js";

async function start(opts: { idleTimeoutMs?: number; maxConnections?: number; extra?: Record<string, () => never> } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "vhostd-rpc-"));
  const path = join(dir, "vfe-vhostd.sock");
  const log = pino({ level: "silent" });
  const host = new FakeHost();
  const registry = new Registry({ inventory: new Inventory(loadConfig()), host, log, defaultMode: "client", iface: `${dir}/vf-` });
  const handlers = { ...createHandlers(registry, daemonVersion()), ...(opts.extra ?? {}) };
  const server = new RpcServer({ path, handlers, log, idleTimeoutMs: opts.idleTimeoutMs, maxConnections: opts.maxConnections, lookup: (n) => methodSpec(n) ?? (n in handlers ? methodSpec("version") : undefined) });
  await server.listen();
  return { dir, path, server, registry, host };
}

/** Sends `payload`, collects reply lines until `count` lines or the server closes. */
function exchange(path: string, payload: string | Buffer, opts: { count?: number; end?: boolean; timeoutMs?: number } = {}): Promise<{ lines: string[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const c = createConnection(path);
    let buf = "";
    const lines: string[] = [];
    let settled = false;
    const done = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.destroy();
      resolve({ lines, closed });
    };
    const timer = setTimeout(() => done(false), opts.timeoutMs ?? 3000);
    c.on("connect", () => {
      c.write(payload);
      if (opts.end) c.end();
    });
    c.on("data", (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (opts.count !== undefined && lines.length >= opts.count) done(false);
    });
    c.on("close", () => done(true));
    c.on("error", (e: NodeJS.ErrnoException) => {
      if (settled) return;
      if (e.code === "EPIPE" || e.code === "ECONNRESET") done(true);
      else reject(e);
    });
  });
}

const req = (method: string, params?: unknown, id: unknown = 1) => JSON.stringify({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) }) + "\n";
const parse = (l: string) => JSON.parse(l) as JsonRpcResponse & { result?: Record<string, unknown>; error?: { code: number; data?: { errno: number; errstr: string } } };

async function rpc(path: string, method: string, params?: unknown) {
  const { lines } = await exchange(path, req(method, params), { count: 1 });
  return parse(lines[0]!);
}

test("socket is 0600; a full vfe session has vfe-shaped results", async (t) => {
  const { path, server } = await start();
  t.is(statSync(path).mode & 0o777, 0o600);
  const shape = (m: string, a: string, r: unknown) => t.deepEqual(checkResultShape(resultFields(methodSpec(m)!, a), r), [], `${m} ${a}`);

  const v = await rpc(path, "version");
  t.is(v.result!.errno, 0);
  t.is(v.result!.errstr, "Success");
  t.regex(String(v.result!["vfe-vhostd version"]), /^vhostd \d/);
  shape("version", "", v.result);

  const empty = await rpc(path, "mgmtpf", { list: true });
  t.deepEqual(empty.result, { devices: [], errno: 0, errstr: "Success" });
  t.deepEqual((await rpc(path, "mgmtpf", { add: true, dev: "0000:af:00.2" })).result, { errno: 0, errstr: "Success" });
  const l = await rpc(path, "mgmtpf", { list: true, debug: true });
  shape("mgmtpf", "list", l.result);
  t.like((l.result!.devices as unknown[])[0], { pf: "0000:af:00.2", type: "net", switch_id: 0, vfs: 0, num_vfs: 512, first_vf: "0000:af:04.5", vf_stride: 8 });

  // exactly what vfe's python client sends
  const add = await rpc(path, "vf", { add: true, vfdev: "0000:af:04.5", socket_file: "/tmp/vhost-net0", uuid: null });
  t.is(add.result!.errno, 0);
  shape("vf", "add", add.result);
  const list = await rpc(path, "vf", { list: true, mgmtpf: "0000:af:00.2" });
  shape("vf", "list", list.result);
  t.like((list.result!.devices as unknown[])[0], { vf: "0000:af:04.5", socket_file: "/tmp/vhost-net0", mtu: 1500, queue_num: 2, msix_num: 4, mac: "52:54:00:00:AF:25", vm_uuid: "", probed: true });
  const info = await rpc(path, "vf", { info: true, vfdev: "0000:af:04.5" });
  shape("vf", "info", info.result);

  const dup = await rpc(path, "vf", { add: true, vfdev: "0000:af:04.5" });
  t.like(dup.result, { errno: -1014, errstr: "VF device already add" });
  shape("vf", "add", dup.result);
  t.like((await rpc(path, "mgmtpf", { remove: true, dev: "0000:af:00.2" })).result, { errno: -1013, errstr: "Please remove all VF devices before remove PF" });
  t.like((await rpc(path, "vf", { info: true, vfdev: "0000:af:05.5" })).result, { errno: -1003, errstr: "VF device not found" });
  t.like((await rpc(path, "vf", { list: true, mgmtpf: "0000:af:00.3" })).result, { errno: -1001, errstr: "PF device not found" });
  t.deepEqual((await rpc(path, "vf", { remove: true, vfdev: "0000:af:04.5" })).result, { errno: 0, errstr: "Success" });
  t.deepEqual((await rpc(path, "vf", { list: true, mgmtpf: "0000:af:00.2" })).result, { devices: [], errno: 0, errstr: "Success" });
  await server.close();
});

test("hostile requests get JSON-RPC errors and the connection stays usable", async (t) => {
  const { path, server } = await start();
  const payload = [
    "this is not json",
    "[1,2]",
    "42",
    '{"jsonrpc":"1.0","id":1,"method":"version"}',
    '{"jsonrpc":"2.0","id":{"x":1},"method":"version"}',
    '{"jsonrpc":"2.0","id":7,"method":5}',
    '{"jsonrpc":"2.0","id":8,"method":"shutdown"}',
    '{"jsonrpc":"2.0","id":9,"method":"__proto__"}',
    '{"jsonrpc":"2.0","id":10,"method":"vf","params":{"add":true,"vfdev":123}}',
    '{"jsonrpc":"2.0","id":11,"method":"vf","params":"add"}',
    '{"jsonrpc":"2.0","id":12,"method":"mgmtpf","params":{"add":true,"dev":"0000:af:00.2","evil":"x"}}',
    '{"jsonrpc":"2.0","method":"nosuch"}', // notification: no reply
    '{"jsonrpc":"2.0","id":13,"method":"version"}',
  ].join("\n") + "\n";
  const { lines } = await exchange(path, payload, { count: 12 });
  const r = lines.map(parse);
  t.is(r.length, 12);
  t.is(r[0]!.error!.code, -32700);
  t.is(r[0]!.error!.data!.errno, -22);
  t.is(r[1]!.error!.code, -32600);
  t.is(r[2]!.error!.code, -32600);
  t.is(r[3]!.error!.code, -32600);
  t.is(r[4]!.error!.code, -32600);
  t.is(r[5]!.error!.code, -32600);
  t.is(r[5]!.id, 7);
  t.is(r[6]!.error!.code, -32601);
  t.is(r[7]!.error!.code, -32601);
  t.is(r[8]!.error!.code, -32602);
  t.like(r[8]!.error!.data, { errno: -22, errstr: "Invalid argument" });
  t.is(r[9]!.error!.code, -32602);
  t.is(r[10]!.error!.code, -32602);
  t.is(r[11]!.id, 13);
  t.is(r[11]!.result!.errno, 0);
  await server.close();
});

test("vfe python framing: one bare object without newline, then close", async (t) => {
  const { path, server } = await start();
  const { lines } = await exchange(path, JSON.stringify({ jsonrpc: "2.0", method: "mgmtpf", id: 1, params: { list: true } }), { count: 1 });
  t.deepEqual(parse(lines[0]!).result, { devices: [], errno: 0, errstr: "Success" });
  // split in pieces, and a half-close flushes the last request
  const { lines: l2, closed } = await exchange(path, '{"jsonrpc":"2.0","id":2,"method":"version"}', { end: true });
  t.is(parse(l2[0]!).id, 2);
  t.true(closed);
  await server.close();
});

test("oversized, binary and slow requests are cut off; the server survives", async (t) => {
  const { path, server } = await start({ idleTimeoutMs: 300 });
  const big = await exchange(path, '{"jsonrpc":"2.0","id":1,"method":"version","params":{"x":"' + "a".repeat(70 * 1024));
  t.true(big.closed);
  t.is(parse(big.lines[0]!).error!.code, -32600);
  t.regex((parse(big.lines[0]!).error as { message: string }).message, /larger than 65536/);
  const bigLine = await exchange(path, "x".repeat(100 * 1024) + "\n");
  t.true(bigLine.closed);

  const bin = await exchange(path, Buffer.concat([Buffer.from([0xff, 0xfe, 0x00, 0x80, 0xc3]), Buffer.from("\n")]), { count: 1 });
  t.is(parse(bin.lines[0]!).error!.code, -32700);

  const t0 = Date.now();
  const slow = await exchange(path, '{"jsonrpc":"2.0",', { timeoutMs: 5000 });
  t.true(slow.closed);
  t.true(Date.now() - t0 < 4000);
  t.deepEqual(slow.lines, []);
  t.is((await rpc(path, "version")).result!.errno, 0);
  await server.close();
});

test("a crashing handler is an internal error, not a crash", async (t) => {
  const { path, server } = await start({
    extra: {
      version: () => {
        throw new Error("kaboom");
      },
    },
  });
  const r = await rpc(path, "version");
  t.is(r.error!.code, -32603);
  t.like((await rpc(path, "mgmtpf", { list: true })).result, { errno: 0 });
  await server.close();
});

test("connections beyond the cap are refused; others are served", async (t) => {
  const { path, server } = await start({ maxConnections: 2 });
  const idle = [createConnection(path), createConnection(path)];
  await Promise.all(idle.map((c) => new Promise((r) => c.once("connect", r))));
  await new Promise((r) => setTimeout(r, 50));
  const third = await exchange(path, req("version"), { timeoutMs: 1000 });
  t.true(third.closed);
  t.deepEqual(third.lines, []);
  idle.forEach((c) => c.destroy());
  await new Promise((r) => setTimeout(r, 50));
  t.is((await rpc(path, "version")).result!.errno, 0);
  await server.close();
});

test("stale socket file is replaced, a live one or a regular file is refused", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vhostd-rpc-"));
  const path = join(dir, "s.sock");
  const log = pino({ level: "silent" });
  // a process that dies by SIGKILL leaves its socket file behind
  spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`]);
  t.true(statSync(path).isSocket());
  const s = new RpcServer({ path, handlers: {}, log });
  await s.listen();
  // now it is live: a second server must refuse
  await t.throwsAsync(new RpcServer({ path, handlers: {}, log }).listen(), { message: /already serving/ });
  await s.close();
  t.throws(() => statSync(path));
  const file = join(dir, "file");
  writeFileSync(file, "x");
  await t.throwsAsync(new RpcServer({ path: file, handlers: {}, log }).listen(), { message: /not a socket/ });
});
