// The HA fd channel over a real unix socket: fds arrive usable on the right id, come back on
// request, and hostile frames close the connection with every fd released.
import test from "ava";
import { mkdtempSync, readSync, readdirSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { encodeFdFrameBody, type FdFrame } from "@vhostd/proto";
import { native } from "../src/native.js";
import { closeFds, connectUnix } from "../src/unix_socket.js";
import { FdChannelClient, FdChannelServer, FdStore, checkPeerCred, type FdChannelLog } from "../src/fd_channel.js";

const dir = mkdtempSync(path.join(tmpdir(), "vhostd-fdch-"));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const sockPath = () => path.join(dir, `fds${n++}.sock`);
const openFds = () => readdirSync("/proc/self/fd").length;
// A frame body that does not fit the schema, in raw msgpack: {op:"put", req:1, id:"a"}.
const WRONG_SHAPE = Buffer.from("83a26f70a3707574a372657101a26964a161", "hex");

function captureLog(): FdChannelLog & { lines: string[] } {
  const lines: string[] = [];
  const rec = (level: string) => (obj: object, msg: string) => lines.push(`${level} ${msg} ${JSON.stringify(obj)}`);
  return { lines, info: rec("info"), warn: rec("warn"), debug: rec("debug") };
}

async function until(pred: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function setup(opts: { maxHeldFds?: number } = {}) {
  const log = captureLog();
  const store = new FdStore();
  const p = sockPath();
  const server = new FdChannelServer({ path: p, log, ...store.serverHooks(), maxHeldFds: opts.maxHeldFds });
  server.listen();
  const closed: { reason: string; violation: boolean }[] = [];
  server.on("closed", (c: { reason: string; violation: boolean }) => closed.push(c));
  return { log, store, server, path: p, closed };
}

/** True once the peer has closed: EOF, or ECONNRESET when it closed with our bytes unread. */
function peerClosed(fd: number): boolean {
  try {
    return native.recvWithFds(fd, 16, 0)?.data.length === 0;
  } catch (err) {
    if ((err as { code?: string }).code === "ECONNRESET") return true;
    throw err;
  }
}

/** A raw frame as a hostile client would write it. */
function frame(body: FdFrame | Buffer, lenOverride?: number): Buffer {
  const b = Buffer.isBuffer(body) ? body : encodeFdFrameBody(body);
  const out = Buffer.alloc(4 + b.length);
  out.writeUInt32LE(lenOverride ?? b.length, 0);
  b.copy(out, 4);
  return out;
}

// Serial and first: the /proc/self/fd counts must not see other tests' fds.
test.serial("hostile frames close the connection, release every fd, log, and leak nothing", async (t) => {
  const { log, store, server, path: p, closed } = setup();
  const before = openFds();
  const cases: { name: string; bytes: Buffer; fds: number; close?: boolean; re: RegExp }[] = [
    { name: "count mismatch (names 2, sends 1)", bytes: frame({ op: "put", req: 1, id: "a", kind: "eventfd", count: 2 }), fds: 1, re: /fd count mismatch/ },
    { name: "count mismatch (names 1, sends 3)", bytes: frame({ op: "put", req: 1, id: "a", kind: "eventfd", count: 1 }), fds: 3, re: /fd count mismatch/ },
    { name: "fds on a get", bytes: frame({ op: "get", req: 1, ids: ["a"] }), fds: 1, re: /fd count mismatch/ },
    { name: "garbage body", bytes: frame(Buffer.from("not msgpack at all \xc1\xc1")), fds: 2, re: /bad frame/ },
    { name: "valid msgpack, wrong shape", bytes: frame(WRONG_SHAPE), fds: 1, re: /bad frame/ },
    { name: "zero length", bytes: frame(Buffer.alloc(0)), fds: 1, re: /frame length 0/ },
    { name: "huge length", bytes: frame(Buffer.from([1]), 0x7fffffff), fds: 1, re: /frame length/ },
    { name: "too many fds", bytes: frame({ op: "put", req: 1, id: "a", kind: "eventfd", count: 64 }), fds: 70, re: /more than 64 fds/ },
    { name: "truncated body then EOF", bytes: frame({ op: "put", req: 1, id: "a", kind: "eventfd", count: 1 }).subarray(0, 9), fds: 1, close: true, re: /middle of a frame/ },
    { name: "answer frame from a client", bytes: frame({ op: "done", req: 1, missing: [] }), fds: 0, re: /unexpected done/ },
  ];
  for (const c of cases) {
    const fd = connectUnix(p);
    const mine = Array.from({ length: c.fds }, () => native.eventFd(0));
    const logged = log.lines.length;
    native.sendWithFds(fd, c.bytes, mine);
    closeFds(mine); // the server's copies are its own now
    if (c.close) native.closeFd(fd);
    await until(() => closed.length > 0, c.name);
    const got = closed.shift()!;
    t.true(got.violation, c.name);
    t.regex(got.reason, c.re, c.name);
    t.true(log.lines.slice(logged).some((l) => l.startsWith("warn fd channel connection closed")), c.name);
    if (!c.close) {
      // Our end sees the close: EOF.
      await until(() => peerClosed(fd), `${c.name}: EOF`);
      native.closeFd(fd);
    }
    t.is(store.total, 0, c.name);
  }
  t.is(server.connections, 0);
  t.is(openFds(), before, "every fd the hostile frames carried was closed");
  // The server still serves a well-behaved client afterwards.
  const client = new FdChannelClient({ path: p, log });
  client.connect();
  const e = native.eventFd(0);
  await client.sendFds("ok", "eventfd", [e]);
  t.is(store.total, 1);
  client.close();
  native.closeFd(e);
  store.closeAll();
  server.close();
  await new Promise((r) => setTimeout(r, 20));
  t.is(openFds(), before - 1, "listening socket closed too");
});

test.serial("three fds of different kinds arrive usable and come back on request; nothing leaks", async (t) => {
  const before = openFds();
  const { log, store, server, path: p } = setup();
  t.is(statSync(p).mode & 0o777, 0o600, "socket file mode 0600");
  const client = new FdChannelClient({ path: p, log });
  client.connect();

  const ev = native.eventFd(0);
  const mem = native.memfdCreate("ha-test", 4096);
  const [sa, sb] = native.socketPair();
  await client.sendFds("vf-0/kick0", "eventfd", [ev]);
  await client.sendFds("vf-0/mem0", "memfd", [mem]);
  await client.sendFds("vf-0/conn", "vhost-user", [sa]);
  t.is(store.size, 3);
  t.is(store.total, 3);
  t.deepEqual(store.ids().sort(), ["vf-0/conn", "vf-0/kick0", "vf-0/mem0"]);

  // eventfd: a write through the keeper's dup signals the original.
  native.eventFdWrite(store.get("vf-0/kick0")!.fds[0]!);
  t.is(native.eventFdRead(ev), 1);
  // memfd: the same pages.
  writeSync(store.get("vf-0/mem0")!.fds[0]!, Buffer.from("hello"), 0, 5, 0);
  const b = Buffer.alloc(5);
  readSync(mem, b, 0, 5, 0);
  t.is(b.toString(), "hello");
  t.is(store.get("vf-0/mem0")!.kind, "memfd");
  // socket: bytes written through the keeper's dup reach the other end.
  native.sendWithFds(store.get("vf-0/conn")!.fds[0]!, Buffer.from("x"), []);
  await until(() => native.recvWithFds(sb, 4, 0)?.data.toString() === "x", "socket byte");

  // Multi-fd id in one frame, replacing an older entry (the old fds are closed).
  const e2 = native.eventFd(0);
  const e3 = native.eventFd(0);
  await client.sendFds("vf-0/kick0", "eventfd", [e2, e3]);
  t.is(store.total, 4);

  // Restart case: a new client fetches everything back.
  client.close();
  const again = new FdChannelClient({ path: p, log });
  again.connect();
  const got = await again.requestFds(["vf-0/kick0", "vf-0/mem0", "vf-0/conn", "nope"]);
  t.deepEqual([...got.keys()].sort(), ["vf-0/conn", "vf-0/kick0", "vf-0/mem0"]);
  t.is(got.get("vf-0/kick0")!.fds.length, 2);
  t.is(got.get("vf-0/kick0")!.kind, "eventfd");
  native.eventFdWrite(got.get("vf-0/kick0")!.fds[1]!);
  t.is(native.eventFdRead(e3), 1, "fetched fds are usable and in order");
  const b2 = Buffer.alloc(5);
  readSync(got.get("vf-0/mem0")!.fds[0]!, b2, 0, 5, 0);
  t.is(b2.toString(), "hello");

  // Release.
  await again.releaseFds(["vf-0/conn"]);
  t.is(store.size, 2);
  for (const v of got.values()) closeFds(v.fds);
  again.close();
  closeFds([ev, mem, sa, sb, e2, e3]);
  store.closeAll();
  server.close();
  await new Promise((r) => setTimeout(r, 20));
  t.is(openFds(), before, "no fd leaked on either end");
});

test.serial("held-fd cap: a put beyond it is refused, its fds closed, the connection kept", async (t) => {
  const { log, store, server, path: p } = setup({ maxHeldFds: 2 });
  const client = new FdChannelClient({ path: p, log });
  client.connect();
  const a = native.eventFd(0);
  const b = native.eventFd(0);
  const c = native.eventFd(0);
  await client.sendFds("a", "eventfd", [a, b]);
  const before = openFds();
  await t.throwsAsync(client.sendFds("c", "eventfd", [c]), { message: /exceed the cap of 2/ });
  t.is(openFds(), before, "refused fds were closed by the keeper");
  t.is(store.total, 2);
  t.true(client.connected);
  t.true(log.lines.some((l) => l.includes("put refused")));
  client.close();
  closeFds([a, b, c]);
  store.closeAll();
  server.close();
});

test.serial("a hostile keeper: the client closes, rejects pending requests and releases fds", async (t) => {
  const p = sockPath();
  const lfd = native.unixListen(p, 4);
  const log = captureLog();
  const client = new FdChannelClient({ path: p, log });
  client.connect();
  let sfd = -1;
  await until(() => (sfd = native.unixAccept(lfd)) >= 0, "accept");
  const before = openFds();
  const pending = client.requestFds(["a"]);
  // Answer with an "fds" frame for the request that names 1 fd but carries 2.
  await until(() => (native.recvWithFds(sfd, 4096, 0)?.data.length ?? 0) > 0, "request");
  const x = native.eventFd(0);
  const y = native.eventFd(0);
  native.sendWithFds(sfd, frame({ op: "fds", req: 1, id: "a", kind: "eventfd", count: 1 }), [x, y]);
  await t.throwsAsync(pending, { message: /fd count mismatch/ });
  closeFds([x, y]);
  t.is(openFds(), before - 1, "the client's socket and the received fds are closed");
  t.false(client.connected);
  closeFds([sfd, lfd]);
});

test("peer credential check: only our own euid", (t) => {
  t.is(checkPeerCred({ pid: 10, uid: 0, gid: 0 }, 0), null);
  t.regex(checkPeerCred({ pid: 10, uid: 1000, gid: 1000 }, 0) ?? "", /peer uid 1000 \(pid 10\) is not our euid 0/);
  t.regex(checkPeerCred({ pid: 10, uid: 0, gid: 0 }, 1000) ?? "", /not our euid 1000/);
});

test("a server told to expect another uid refuses us and logs it", async (t) => {
  const log = captureLog();
  const store = new FdStore();
  const p = sockPath();
  const server = new FdChannelServer({ path: p, log, ...store.serverHooks(), euid: 4242 });
  server.listen();
  const fd = connectUnix(p);
  await until(() => peerClosed(fd), "EOF from the server");
  native.closeFd(fd);
  t.true(log.lines.some((l) => /connection refused: peer uid \d+ .* is not our euid 4242/.test(l)));
  t.is(server.connections, 0);
  server.close();
});
