// Crash attribution (cc/crash_attr.h): a daemon that dies of a fatal signal leaves, in the
// shared engine file, which device the crashing thread was serving; a SIGKILL leaves nothing.
// Each case runs an engine in a child process that dies, then claims the record from another
// engine on the same file, as the adopting daemon does.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { constants } from "node:os";
import test from "ava";
import { native, type NativeEngine } from "../src/native.js";
import { VNet, frame, waitFor } from "./engine_guest.js";

const A = "52:54:00:00:00:0a";
const B = "52:54:00:00:00:0b";
const MAGIC = "d1e5c0debadf00d5";

function tmpShared(): { dir: string; file: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-crash-"));
  return { dir, file: path.join(dir, "engine-shared") };
}

/** An engine on the shared file, as the adopter would open it. */
function adopter(file: string, role = 1): NativeEngine {
  const fd = fs.openSync(file, "r+");
  try {
    return new native.Engine({ maxDevices: 8, sharedFd: fd, crashRole: role }, () => {});
  } finally {
    fs.closeSync(fd);
  }
}

/** A child with an engine of role 0 (the keeper) on `file`, running `body`. */
function childScript(file: string, body: string): string {
  const nativeJs = fileURLToPath(new URL("../src/native.js", import.meta.url));
  const guestJs = fileURLToPath(new URL("./engine_guest.js", import.meta.url));
  return `
    import fs from "node:fs";
    import { native } from ${JSON.stringify(nativeJs)};
    import { VNet, frame } from ${JSON.stringify(guestJs)};
    const fd = fs.openSync(${JSON.stringify(file)}, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const eng = new native.Engine({ maxDevices: 8, sharedFd: fd, crashRole: 0 }, () => {});
    fs.closeSync(fd);
    eng.addSwitch(1);
    // The ledger's tags (the TS ledger writes them when it creates a device): which VF each id is.
    for (const id of [3, 5]) eng.crash.ledger[4 * id] = 1000 + id;
    ${body}
    console.log("survived");
  `;
}

function runChild(file: string, body: string, env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, ["--input-type=module", "-e", childScript(file, body)], { encoding: "utf8", timeout: 30_000, env: { ...process.env, ...env } });
}

test("a worker that dies on a frame blames the device whose ring it was serving, once", (t) => {
  const { dir, file } = tmpShared();
  try {
    const r = runChild(
      file,
      `
      const a = new VNet(eng, 3, "${A}");
      const b = new VNet(eng, 5, "${B}");
      b.postRx(8);
      a.send(frame("${B}", "${A}", 80, 1));
      const t0 = Date.now();
      while (b.rx.usedIdx() < 1 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
      console.log("first frame delivered", b.rx.usedIdx());
      const poison = frame("${B}", "${A}", 80, 2);
      Buffer.from("${MAGIC}", "hex").copy(poison, 40);
      a.send(poison);
      await new Promise((r) => setTimeout(r, 5000));
    `,
      { VHOSTD_TEST_CRASH_ON_FRAME: MAGIC },
    );
    t.is(r.signal, "SIGABRT", `stdout ${r.stdout} stderr ${r.stderr}`);
    t.regex(String(r.stdout), /first frame delivered 1/);
    t.regex(String(r.stderr), /TEST-ONLY poison frame from device 3/);
    const eng = adopter(file);
    try {
      const got = eng.claimCrashes();
      t.is(got.length, 1, JSON.stringify(got));
      const c = got[0]!;
      t.like(c, { role: 0, sig: constants.signals.SIGABRT, slot: 1, serve: 3, serveTag: 1003, peer: -1, jsException: false, command: false, external: false });
      t.is(c.pid, r.pid);
      t.deepEqual(eng.claimCrashes(), [], "a record is claimed exactly once");
      // The adopter's own attach did not touch the dead keeper's ledger.
      t.is(eng.crash.ledger[4 * 3], 1003);
    } finally {
      eng.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a SIGKILL under traffic leaves no crash record: a kill is not the device's fault", async (t) => {
  const { dir, file } = tmpShared();
  try {
    const script = childScript(
      file,
      `
      const a = new VNet(eng, 3, "${A}");
      const b = new VNet(eng, 5, "${B}");
      console.log("ready");
      // One frame every 2 ms (b has no receive buffers: each is a counted drop), for longer than the test.
      for (let i = 0; i < 20000; i++) {
        a.send(frame("${B}", "${A}", 80, i));
        await new Promise((r) => setTimeout(r, 2));
      }
    `,
    );
    const p = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    t.true(await waitFor(() => out.includes("ready"), 10_000));
    await new Promise((r) => setTimeout(r, 300));
    t.is(p.exitCode, null, "still running when killed");
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await exited;
    const eng = adopter(file);
    try {
      t.deepEqual(eng.claimCrashes(), []);
    } finally {
      eng.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the JS thread's slot: an abort while it handles a VF blames that VF", (t) => {
  const { dir, file } = tmpShared();
  try {
    const r = runChild(file, `eng.crash.jsSlot[0] = 5 + 1; process.abort();`);
    t.is(r.signal, "SIGABRT");
    const eng = adopter(file);
    try {
      const got = eng.claimCrashes();
      t.is(got.length, 1);
      t.like(got[0], { role: 0, slot: 0, serve: 5, serveTag: 1005, peer: -1 });
    } finally {
      eng.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a SIGSEGV goes through Node's own handler first and is still recorded and fatal", (t) => {
  const { dir, file } = tmpShared();
  try {
    const r = runChild(file, `eng.crash.jsSlot[0] = 3 + 1; process.kill(process.pid, "SIGSEGV"); await new Promise((r) => setTimeout(r, 2000));`);
    t.is(r.signal, "SIGSEGV", `stderr ${r.stderr}`);
    const eng = adopter(file);
    try {
      const got = eng.claimCrashes();
      t.is(got.length, 1);
      t.like(got[0], { sig: constants.signals.SIGSEGV, serve: 3 });
    } finally {
      eng.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a fault another handler deals with (a WebAssembly trap) is no crash", (t) => {
  const { dir, file } = tmpShared();
  try {
    // (func (result i32) (i32.load (i32.const 0x100000))) over one 64 KiB page: out of bounds,
    // which V8 catches with its SIGSEGV trap handler (installed before ours) and throws.
    const r = runChild(
      file,
      `
      const wasm = Buffer.from("0061736d010000000105016000017f030201000503010001070501016600000a0c010a00418080c0002802000b", "hex");
      const m = new WebAssembly.Instance(new WebAssembly.Module(wasm));
      eng.crash.jsSlot[0] = 3 + 1;
      try { m.exports.f(); console.log("no trap"); } catch (e) { console.log("trapped", e.constructor.name); }
      eng.crash.jsSlot[0] = 0;
    `,
    );
    t.is(r.status, 0, `stderr ${r.stderr}`);
    t.regex(String(r.stdout), /trapped RuntimeError/);
    const eng = adopter(file);
    try {
      t.deepEqual(eng.claimCrashes(), []);
    } finally {
      eng.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("an uncaught exception noted by the daemon's handler is a crash of the VF it names", (t) => {
  const { dir, file } = tmpShared();
  try {
    const r = runChild(file, `native.noteFatalException(5); process.exit(1);`);
    t.is(r.status, 1);
    const eng = adopter(file);
    try {
      const got = eng.claimCrashes();
      t.is(got.length, 1);
      t.like(got[0], { sig: 0, jsException: true, serve: 5, serveTag: 1005 });
    } finally {
      eng.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a TX progress record that does not fit the ring is ignored: nothing is skipped", async (t) => {
  // The record is shared memory a dead (maybe buggy) process wrote: n beyond the ring's size
  // would complete frames nobody delivered.
  const eng = new native.Engine({ maxDevices: 8 }, () => {});
  eng.addSwitch(1);
  const a = new VNet(eng, 1, A, undefined, { ringSize: 8, start: false });
  const b = new VNet(eng, 2, B);
  try {
    b.postRx(8);
    const progress = (1 * eng.maxQueues + 1) * native.COUNTERS_PER_QUEUE + native.COUNTER_NAMES.indexOf("progress");
    // start 0, n 16 (> ring size 8), every frame "done", active
    eng.counters[progress] = 0n | (16n << 16n) | (0xffffn << 24n) | (1n << 63n);
    a.start();
    a.send(frame(B, A, 80, 7));
    t.true(await waitFor(() => b.rx.usedIdx() === 1), "the frame was delivered, not completed as already done");
    t.is(a.tx.usedIdx(), 1);
  } finally {
    eng.close();
    a.close();
    b.close();
  }
});
