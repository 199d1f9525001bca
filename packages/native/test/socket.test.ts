// Unix-socket and fd primitives of the native addon (cc/socket.cc).
import test from "ava";
import { chmodSync, fstatSync, lstatSync, mkdtempSync, readdirSync, readSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { native } from "../src/native.js";
import { OutgoingQueue, SendOverflow } from "../src/send_queue.js";
import { checkPeerCred, closeFds, connectUnix, listenUnix, sendAllBlocking } from "../src/unix_socket.js";

const dir = mkdtempSync(path.join(tmpdir(), "vhostd-sock-"));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const sockPath = () => path.join(dir, `s${seq++}.sock`);

const openFds = () => readdirSync("/proc/self/fd").length;

/** Polls recvWithFds until something (data or EOF) arrives. */
async function recv(fd: number, maxBytes = 4096, maxFds = 8) {
  for (let i = 0; i < 200; i++) {
    const r = native.recvWithFds(fd, maxBytes, maxFds);
    if (r) return r;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error("nothing received");
}

// Runs first and alone (serial tests run before concurrent ones), so the /proc/self/fd
// counts are not disturbed by other tests opening fds.
test.serial("more fds than maxFds: fdsTruncated, extras closed, nothing leaks", (t) => {
  const before = openFds();
  const [a, b] = native.socketPair();
  const sent = [0, 1, 2, 3, 4].map(() => native.eventFd(0));
  // maxFds 3: CMSG_SPACE rounds the buffer up to room for 4, the 4th must be closed.
  for (const maxFds of [3, 0, 1]) {
    native.sendWithFds(a, Buffer.from("x"), sent);
    const r = native.recvWithFds(b, 16, maxFds);
    t.truthy(r);
    t.is(r!.data.toString(), "x");
    t.true(r!.fdsTruncated);
    t.is(r!.fds.length, maxFds);
    closeFds(r!.fds);
  }
  // Exactly maxFds is not truncated.
  native.sendWithFds(a, Buffer.from("y"), sent);
  const r = native.recvWithFds(b, 16, sent.length)!;
  t.false(r.fdsTruncated);
  t.is(r.fds.length, sent.length);
  closeFds(r.fds);
  closeFds([...sent, a, b]);
  t.is(openFds(), before);
});

test("listen, connect, accept, peerCred, socket file mode", (t) => {
  const p = sockPath();
  const lfd = listenUnix(p, { mode: 0o660 });
  t.is(statSync(p).mode & 0o777, 0o660);
  t.true(statSync(p).isSocket());
  t.is(native.unixAccept(lfd), -1, "nothing pending yet");
  const c = connectUnix(p);
  const s = native.unixAccept(lfd);
  t.true(s >= 0);
  t.is(native.unixAccept(lfd), -1);
  const cred = native.peerCred(s);
  t.is(cred.pid, process.pid);
  t.is(cred.uid, process.getuid!());
  t.is(cred.gid, process.getgid!());
  t.is(native.peerCred(c).pid, process.pid);
  t.is(native.sendWithFds(c, Buffer.from("hello"), []), 5);
  t.is(native.recvWithFds(s, 64, 0)!.data.toString(), "hello");
  closeFds([c, s, lfd]);
});

test.serial("unixListen with a mode: the socket file has it whatever the umask; a symlink at the path is neither followed nor replaced", (t) => {
  const old = process.umask(0o077);
  let lfd = -1;
  try {
    const p = sockPath();
    lfd = native.unixListen(p, 4, 0o660);
    t.is(lstatSync(p).mode & 0o777, 0o660, "0660 although the umask would leave 0700");
    t.true(lstatSync(p).isSocket());
    const c = connectUnix(p);
    t.true(native.unixAccept(lfd) >= 0, "connecting through the path works");
    native.closeFd(c);
    t.deepEqual(readdirSync(dir).filter((n) => n.startsWith(".vhostd-bind-")), [], "no private directory left behind");
  } finally {
    process.umask(old);
    if (lfd >= 0) native.closeFd(lfd);
  }
  const target = path.join(dir, `victim-${seq++}`);
  writeFileSync(target, "mine");
  chmodSync(target, 0o644);
  const link = sockPath();
  symlinkSync(target, link);
  const err = t.throws(() => native.unixListen(link, 4, 0o666));
  t.is((err as NodeJS.ErrnoException).code, "EADDRINUSE");
  t.is(statSync(target).mode & 0o777, 0o644, "the symlink's target was not chmodded");
  t.true(lstatSync(link).isSymbolicLink(), "the symlink is still there");
  t.deepEqual(readdirSync(dir).filter((n) => n.startsWith(".vhostd-bind-")), [], "no private directory left behind after a failure");
});

test("bytes and 3 fds (2 eventfds, a memfd) arrive and are usable", async (t) => {
  const [a, b] = native.socketPair();
  const ev1 = native.eventFd(0);
  const ev2 = native.eventFd(5);
  const mem = native.memfdCreate("vhostd-test", 4096);
  t.is(fstatSync(mem).size, 4096);
  writeSync(mem, Buffer.from("guest memory"), 0, 12, 100);

  t.is(native.sendWithFds(a, Buffer.from("payload"), [ev1, ev2, mem]), 7);
  const r = await recv(b);
  t.is(r.data.toString(), "payload");
  t.false(r.fdsTruncated);
  t.is(r.fds.length, 3);
  const [rev1, rev2, rmem] = r.fds;
  t.false([ev1, ev2, mem].includes(rev1!), "received fds are new fds");

  native.eventFdWrite(ev1);
  native.eventFdWrite(ev1);
  t.is(native.eventFdRead(rev1!), 2);
  t.is(native.eventFdRead(rev1!), 0, "reset by the read, 0 when not signalled");
  t.is(native.eventFdRead(rev2!), 5, "initial value");
  native.eventFdWrite(rev2!);
  t.is(native.eventFdRead(ev2), 1, "same eventfd both ways");

  const buf = Buffer.alloc(12);
  readSync(rmem!, buf, 0, 12, 100);
  t.is(buf.toString(), "guest memory");
  t.is(fstatSync(rmem!).size, 4096);
  closeFds([a, b, ev1, ev2, mem, ...r.fds]);
});

test("EOF: empty data once the peer closed; null when nothing is there", async (t) => {
  const [a, b] = native.socketPair();
  t.is(native.recvWithFds(b, 64, 4), null);
  native.sendWithFds(a, Buffer.from("last"), []);
  native.closeFd(a);
  t.is((await recv(b)).data.toString(), "last");
  const eof = await recv(b);
  t.is(eof.data.length, 0);
  t.deepEqual(eof.fds, []);
  native.closeFd(b);
});

test("sendAllBlocking (tools) writes a large send whole while a worker reads it", async (t) => {
  const [a, b] = native.socketPair();
  const size = 8 * 1024 * 1024;
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 11)) & 0xff;
  const ev = native.eventFd(0);

  const addon = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../build/Release/vhostd_native.node");
  const worker = new Worker(
    `const { workerData, parentPort } = require("node:worker_threads");
     const n = require(workerData.addon);
     const chunks = []; let total = 0; let fds = [];
     const sleep = new Int32Array(new SharedArrayBuffer(4));
     while (total < workerData.size) {
       const r = n.recvWithFds(workerData.fd, 65536, 4);
       if (r === null) { Atomics.wait(sleep, 0, 0, 1); continue; }
       if (r.data.length === 0) break;
       fds.push(...r.fds); chunks.push(r.data); total += r.data.length;
     }
     parentPort.postMessage({ data: Buffer.concat(chunks), fds });`,
    { eval: true, workerData: { addon, fd: b, size } },
  );
  const got = new Promise<{ data: Uint8Array; fds: number[] }>((res, rej) => {
    worker.once("message", res);
    worker.once("error", rej);
  });
  t.is(sendAllBlocking(a, data, [ev]), size);
  const { data: received, fds } = await got;
  t.true(Buffer.from(received).equals(data));
  t.is(fds.length, 1, "the fd rode on the first chunk only");
  await worker.terminate();
  closeFds([a, b, ev, ...fds]);
});

test("sendWithFds never waits: it returns what went, then 0 (and no fds) on a full socket", (t) => {
  const [a, b] = native.socketPair();
  const t0 = performance.now();
  const big = Buffer.alloc(16 * 1024 * 1024);
  const first = native.sendWithFds(a, big, []);
  t.true(first > 0 && first < big.length, `a partial send (${first} bytes)`);
  const ev = native.eventFd(0);
  t.is(native.sendWithFds(a, Buffer.from("x"), [ev]), 0, "a full socket takes nothing");
  t.true(performance.now() - t0 < 200, "and nothing waited");
  t.false(native.waitWritable(a, 20), "waitWritable times out on a full socket");
  // Nothing but the bytes of the first send is queued: no fd rode on the refused one.
  let got = 0;
  let fdsGot = 0;
  for (;;) {
    const r = native.recvWithFds(b, 1 << 20, 8);
    if (r === null) break;
    got += r.data.length;
    fdsGot += r.fds.length;
    closeFds(r.fds);
  }
  t.is(got, first);
  t.is(fdsGot, 0);
  t.true(native.waitWritable(a, 1000), "writable once the peer read");
  closeFds([a, b, ev]);
});

test("sendAllBlocking gives up with EAGAIN on a peer that never reads", (t) => {
  const [a, b] = native.socketPair();
  const err = t.throws(() => sendAllBlocking(a, Buffer.alloc(16 * 1024 * 1024), [], 50));
  t.is((err as NodeJS.ErrnoException).code, "EAGAIN");
  closeFds([a, b]);
});

test.serial("OutgoingQueue: queues what a full socket refuses, with duplicated fds, and flushes it in order", (t) => {
  const [a, b] = native.socketPair();
  const blocked: boolean[] = [];
  const q = new OutgoingQueue(a, { maxBytes: 64 << 20, onBlocked: (x) => blocked.push(x) });
  const big = Buffer.alloc(4 << 20, 1);
  t.false(q.push(big), "a large send waits in part");
  t.deepEqual(blocked, [true]);
  const ev = native.eventFd(0);
  const before = openFds();
  t.false(q.push(Buffer.from("tail"), [ev]));
  t.is(openFds(), before + 1, "the queued message holds a duplicate of its fd");
  native.closeFd(ev); // the caller's own fd may go away: the duplicate is what is sent
  let data = Buffer.alloc(0);
  const fds: number[] = [];
  for (let i = 0; i < 10_000 && (q.blocked || data.length < big.length + 4); i++) {
    const r = native.recvWithFds(b, 1 << 20, 8);
    if (r !== null) {
      data = Buffer.concat([data, r.data]);
      fds.push(...r.fds);
    }
    if (q.blocked) q.flush();
  }
  t.deepEqual(blocked, [true, false]);
  t.is(data.length, big.length + 4);
  t.is(data.subarray(big.length).toString(), "tail");
  t.is(fds.length, 1, "the fd arrived, once");
  t.is(openFds(), before + 1 - 1, "the duplicate was closed once sent (the received copy is open)");
  closeFds(fds);
  closeFds([a, b]);
});

test.serial("OutgoingQueue: a peer that does not read hits the cap (SendOverflow), and clear() closes the duplicates", (t) => {
  const [a, b] = native.socketPair();
  const q = new OutgoingQueue(a, { maxBytes: 4 << 20, maxFds: 2, onBlocked: () => undefined });
  t.false(q.push(Buffer.alloc(2 << 20)));
  t.throws(() => q.push(Buffer.alloc(4 << 20)), { instanceOf: SendOverflow });
  const before = openFds();
  const ev = native.eventFd(0);
  q.push(Buffer.from("a"), [ev, ev]);
  t.throws(() => q.push(Buffer.from("b"), [ev]), { instanceOf: SendOverflow }, "the fd cap counts duplicates");
  q.clear();
  native.closeFd(ev);
  t.is(openFds(), before, "no duplicate left open");
  closeFds([a, b]);
});

test("send to a closed peer is EPIPE, not SIGPIPE", (t) => {
  const [a, b] = native.socketPair();
  native.closeFd(b);
  const err = t.throws(() => native.sendWithFds(a, Buffer.from("x"), []));
  t.is((err as NodeJS.ErrnoException).code, "EPIPE");
  native.closeFd(a);
});

test("connect errors carry .code and .errno", (t) => {
  const missing = sockPath();
  const err = t.throws(() => native.unixConnect(missing)) as NodeJS.ErrnoException;
  t.is(err.code, "ENOENT");
  t.is(err.errno, -2);
  t.is(err.syscall, "connect");
  t.is(err.path, missing);

  // A socket file nobody listens on.
  const p = sockPath();
  native.closeFd(native.unixListen(p, 1));
  t.is((t.throws(() => native.unixConnect(p)) as NodeJS.ErrnoException).code, "ECONNREFUSED");
});

test("unixListen replaces a stale socket, refuses a live one and a non-socket", (t) => {
  const p = sockPath();
  native.closeFd(native.unixListen(p, 4)); // leaves a stale socket file behind
  const lfd = native.unixListen(p, 4);
  const c = native.unixConnect(p);
  t.true(native.unixAccept(lfd) >= 0, "the new listener serves the path");

  const live = t.throws(() => native.unixListen(p, 4)) as NodeJS.ErrnoException;
  t.is(live.code, "EADDRINUSE");

  const file = path.join(dir, "plain-file");
  writeFileSync(file, "not a socket");
  t.is((t.throws(() => native.unixListen(file, 4)) as NodeJS.ErrnoException).code, "EADDRINUSE");
  t.is(statSync(file).size, 12, "a regular file is never unlinked");
  closeFds([c, lfd]);
});

test("bad arguments throw TypeError / RangeError", (t) => {
  const n = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  // Never a real fd: should validation let a call through, it must not hit a live fd.
  const notOpen = 1_000_000;
  const typeErrors: [string, unknown[]][] = [
    ["unixListen", [42, 1]],
    ["unixListen", ["/tmp/x", "1"]],
    ["unixListen", []],
    ["unixConnect", [null]],
    ["unixConnect", ["/tmp/a\0b"]],
    ["unixAccept", ["3"]],
    ["recvWithFds", [undefined, 1, 1]],
    ["recvWithFds", [notOpen, 1n, 1]],
    ["sendWithFds", [notOpen, "text", []]],
    ["sendWithFds", [notOpen, Buffer.from("x")]],
    ["sendWithFds", [notOpen, Buffer.from("x"), ["3"]]],
    ["sendWithFds", [notOpen, Buffer.from("x"), [-1]]],
    ["sendWithFds", [notOpen, new Uint16Array(2), []]],
    ["sendWithFds", [notOpen, new DataView(new ArrayBuffer(2)), []]],
    ["peerCred", [{}]],
    ["closeFd", []],
    ["dupFd", [true]],
    ["eventFd", ["0"]],
    ["eventFdWrite", []],
    ["eventFdRead", [null]],
    ["memfdCreate", [1, 1]],
    ["memfdCreate", ["m", "1"]],
  ];
  for (const [fn, args] of typeErrors) {
    t.throws(() => n[fn]!(...args), { instanceOf: TypeError }, `${fn}(${args.map(String).join(", ")})`);
  }
  const rangeErrors: [string, unknown[]][] = [
    ["unixListen", ["", 1]],
    ["unixListen", ["/tmp/" + "x".repeat(200), 1]],
    ["unixListen", ["/tmp/x", -1]],
    ["unixConnect", ["/tmp/" + "x".repeat(103)]],
    ["unixAccept", [-1]],
    ["unixAccept", [1.5]],
    ["unixAccept", [NaN]],
    ["recvWithFds", [notOpen, 0, 1]],
    ["recvWithFds", [notOpen, 1 << 30, 1]],
    ["recvWithFds", [notOpen, 1, 254]],
    ["recvWithFds", [2 ** 32, 1, 1]],
    ["sendWithFds", [notOpen, Buffer.alloc(1), new Array(254).fill(notOpen)]],
    ["sendWithFds", [notOpen, Buffer.alloc(0), [notOpen]]],
    ["eventFd", [-1]],
    ["eventFd", [2 ** 32]],
    ["memfdCreate", ["x".repeat(250), 1]],
    ["memfdCreate", ["m", -1]],
    ["closeFd", [Infinity]],
  ];
  for (const [fn, args] of rangeErrors) {
    t.throws(() => n[fn]!(...args), { instanceOf: RangeError }, `${fn}(${args.map(String).join(", ")})`);
  }
  // Well-typed but wrong fds are system errors, not crashes.
  t.is((t.throws(() => native.closeFd(notOpen)) as NodeJS.ErrnoException).code, "EBADF");
  t.is((t.throws(() => native.recvWithFds(notOpen, 1, 0)) as NodeJS.ErrnoException).code, "EBADF");
  t.is((t.throws(() => native.sendWithFds(notOpen, Buffer.from("x"), [])) as NodeJS.ErrnoException).code, "EBADF");
  t.is((t.throws(() => native.peerCred(notOpen)) as NodeJS.ErrnoException).code, "EBADF");
  t.is((t.throws(() => native.dupFd(notOpen)) as NodeJS.ErrnoException).code, "EBADF");
  const ev = native.eventFd(0);
  t.is((t.throws(() => native.unixAccept(ev)) as NodeJS.ErrnoException).code, "ENOTSOCK");
  t.is((t.throws(() => native.sendWithFds(ev, Buffer.from("x"), [notOpen])) as NodeJS.ErrnoException).code, "ENOTSOCK");
  native.closeFd(ev);
});

test("dupFd gives an independent close-on-exec fd of the same file", (t) => {
  const ev = native.eventFd(0);
  const d = native.dupFd(ev);
  t.not(d, ev);
  native.eventFdWrite(ev);
  native.closeFd(ev);
  t.is(native.eventFdRead(d), 1);
  native.closeFd(d);
});

test("eventFdWrite ignores a saturated counter", (t) => {
  const ev = native.eventFd(0xffffffff);
  // Push the counter to its maximum (2^64 - 2) through a raw write, then signal once more.
  const max = Buffer.alloc(8);
  max.writeBigUInt64LE(0xfffffffffffffffen - 0xffffffffn);
  writeSync(ev, max);
  t.notThrows(() => native.eventFdWrite(ev));
  native.closeFd(ev);
});

test("peer credential check: only our own euid", (t) => {
  t.is(checkPeerCred({ pid: 10, uid: 0, gid: 0 }, 0), null);
  t.regex(checkPeerCred({ pid: 10, uid: 1000, gid: 1000 }, 0) ?? "", /peer uid 1000 \(pid 10\) is not our euid 0/);
  t.regex(checkPeerCred({ pid: 10, uid: 0, gid: 0 }, 1000) ?? "", /not our euid 1000/);
});
