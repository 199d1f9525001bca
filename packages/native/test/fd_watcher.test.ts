// FdWatcher (cc/fd_watcher.cc): readability callbacks on the JS thread via libuv.
import test from "ava";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { native } from "../src/native.js";
import { closeFds } from "../src/unix_socket.js";

const addon = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../build/Release/vhostd_native.node");
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** Waits until cond() holds (the watcher fires from the event loop, asynchronously). */
async function until(cond: () => boolean, what: string) {
  for (let i = 0; i < 200 && !cond(); i++) await sleep(5);
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

/** Runs a CommonJS snippet in a fresh node (with gc exposed) with `n` bound to the addon. */
function runNode(code: string) {
  return spawnSync(process.execPath, ["--expose-gc", "-e", `const n = require(${JSON.stringify(addon)});\n${code}`], {
    encoding: "utf8",
    timeout: 20_000,
  });
}

test("fires on data, then on peer close (EOF); stop() stops it", async (t) => {
  const [a, b] = native.socketPair();
  const got: string[] = [];
  let calls = 0;
  const w = new native.FdWatcher(b, () => {
    calls++;
    const r = native.recvWithFds(b, 64, 0);
    if (r === null) return;
    got.push(r.data.length === 0 ? "EOF" : r.data.toString());
    if (r.data.length === 0) w.stop();
  });
  await sleep(20);
  t.is(calls, 0, "quiet while nothing is readable");

  native.sendWithFds(a, Buffer.from("one"), []);
  await until(() => got.length === 1, "data");
  native.sendWithFds(a, Buffer.from("two"), []);
  await until(() => got.length === 2, "more data");
  native.closeFd(a);
  await until(() => got.length === 3, "EOF");
  t.deepEqual(got, ["one", "two", "EOF"]);

  // EOF stays readable forever; a stopped watcher must not fire again.
  const after = calls;
  await sleep(30);
  t.is(calls, after);
  t.notThrows(() => w.stop(), "stop() is idempotent");
  w.ref();
  w.unref();
  native.closeFd(b);
});

test("writable interest: fires when a full socket drains; readable off stops reading events", async (t) => {
  const [a, b] = native.socketPair();
  let readable = 0;
  let writable = 0;
  const w = new native.FdWatcher(a, () => readable++, () => writable++);
  const readOnly = new native.FdWatcher(b, () => undefined);
  t.throws(() => readOnly.setEvents(true, true), { instanceOf: TypeError }, "writable needs a callback");
  readOnly.stop();
  while (native.sendWithFds(a, Buffer.alloc(1 << 16), []) > 0);
  w.setEvents(false, true);
  native.sendWithFds(b, Buffer.from("data for a"), []); // readable, but not watched
  await sleep(30);
  t.is(writable, 0, "a full socket is not writable");
  t.is(readable, 0, "readable interest is off");
  while (native.recvWithFds(b, 1 << 20, 0) !== null);
  await until(() => writable > 0, "writable");
  w.setEvents(true, false);
  const after = writable;
  await until(() => readable > 0, "readable again");
  await sleep(20);
  t.is(writable, after, "writable interest is off");
  w.setEvents(false, false);
  const r = readable;
  await sleep(20);
  t.is(readable, r, "both off: quiet");
  w.stop();
  t.notThrows(() => w.setEvents(true, true), "setEvents after stop() is a no-op");
  closeFds([a, b]);
});

test("stop() before any event: later data does not fire", async (t) => {
  const [a, b] = native.socketPair();
  let calls = 0;
  const w = new native.FdWatcher(b, () => calls++);
  w.stop();
  native.sendWithFds(a, Buffer.from("x"), []);
  await sleep(30);
  t.is(calls, 0);
  closeFds([a, b]);
});

test("fires for an eventfd and again after re-arming; the fd can be watched again after stop", async (t) => {
  const ev = native.eventFd(0);
  let sum = 0;
  const w1 = new native.FdWatcher(ev, () => (sum += native.eventFdRead(ev)));
  native.eventFdWrite(ev);
  await until(() => sum === 1, "first signal");
  native.eventFdWrite(ev);
  await until(() => sum === 2, "second signal");
  // libuv allows one poll handle per fd.
  const dup = t.throws(() => new native.FdWatcher(ev, () => {})) as NodeJS.ErrnoException;
  t.is(dup.code, "EEXIST");
  w1.stop();
  const w2 = new native.FdWatcher(ev, () => (sum += 10 * native.eventFdRead(ev)));
  native.eventFdWrite(ev);
  await until(() => sum === 12, "signal through the new watcher");
  w2.stop();
  native.closeFd(ev);
});

test("bad arguments throw TypeError / RangeError", (t) => {
  const W = native.FdWatcher as unknown as new (...args: unknown[]) => unknown;
  t.throws(() => new W(), { instanceOf: TypeError });
  t.throws(() => new W("3", () => {}), { instanceOf: TypeError });
  t.throws(() => new W(0), { instanceOf: TypeError });
  t.throws(() => new W(0, "not a function"), { instanceOf: TypeError });
  t.throws(() => new W(-1, () => {}), { instanceOf: RangeError });
  t.throws(() => new W(0.5, () => {}), { instanceOf: RangeError });
  t.throws(() => (W as unknown as (...args: unknown[]) => unknown)(0, () => {}), { instanceOf: TypeError });
  t.is((t.throws(() => new W(1_000_000, () => {})) as NodeJS.ErrnoException).code, "EBADF");
});

test("a throwing callback surfaces as an uncaught exception", (t) => {
  const r = runNode(`
    const [a, b] = n.socketPair();
    process.on("uncaughtException", (err) => {
      console.log("caught:" + err.message);
      w.stop(); n.closeFd(a); n.closeFd(b);
    });
    const w = new n.FdWatcher(b, () => { throw new Error("boom"); });
    n.sendWithFds(a, Buffer.from("x"), []);
  `);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), "caught:boom");

  const unhandled = runNode(`
    const [a, b] = n.socketPair();
    new n.FdWatcher(b, () => { throw new Error("boom"); });
    n.sendWithFds(a, Buffer.from("x"), []);
  `);
  t.is(unhandled.status, 1, "exits like any uncaught exception, not abort()");
  t.regex(unhandled.stderr, /Error: boom/);
});

test("ref()/unref() decide whether the watcher keeps the process alive", (t) => {
  const unrefd = runNode(`
    const [a, b] = n.socketPair();
    new n.FdWatcher(b, () => {}).unref();
  `);
  t.is(unrefd.status, 0, unrefd.stderr);
  t.falsy(unrefd.signal);

  const refd = runNode(`
    const [a, b] = n.socketPair();
    const w = new n.FdWatcher(b, () => { n.recvWithFds(b, 8, 0); console.log("fired"); w.stop(); });
    w.unref(); w.ref();
    // Fires only after this tick: the ref'd watcher must keep the process alive until then.
    setImmediate(() => n.sendWithFds(a, Buffer.from("x"), []));
  `);
  t.is(refd.status, 0, refd.stderr);
  t.is(refd.stdout.trim(), "fired");
});

test("an unreferenced, never-stopped watcher keeps firing after GC", (t) => {
  const r = runNode(`
    const [a, b] = n.socketPair();
    let count = 0;
    new n.FdWatcher(b, () => { n.recvWithFds(b, 8, 0); if (++count === 3) { console.log("ok"); process.exit(0); } });
    const tick = () => { global.gc(); n.sendWithFds(a, Buffer.from("x"), []); setTimeout(tick, 10); };
    tick();
  `);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), "ok");
});

test("a worker exiting with an active watcher tears down cleanly", (t) => {
  const r = runNode(`
    const { Worker } = require("node:worker_threads");
    const [a, b] = n.socketPair();
    const w = new Worker(\`
      const n = require(${JSON.stringify(addon)});
      const { parentPort, workerData } = require("node:worker_threads");
      new n.FdWatcher(workerData.b, () => {});
      parentPort.postMessage("watching");
    \`, { eval: true, workerData: { b } });
    w.on("message", async () => { await w.terminate(); console.log("terminated"); });
  `);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), "terminated");
});
