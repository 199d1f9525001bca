// processFate: what vfe-vhostd reads in /proc to take over from a keeper whose threads are
// exiting before the kernel has closed its fds.
import test from "ava";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { processFate } from "../src/mirror/process_exit.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("a running process is alive, a zombie is exiting, a reaped one is gone", async (t) => {
  t.is(processFate(process.pid), "alive", "this multi-threaded process");
  // `sleep 0.1` becomes the child of a process that never waits for it: a zombie until that ends.
  const parent = spawn("sh", ["-c", "sleep 0.1 & echo $!; exec sleep 5"], { stdio: ["ignore", "pipe", "ignore"] });
  const zombie = await new Promise<number>((resolve) => parent.stdout!.once("data", (d: Buffer) => resolve(Number(String(d).trim()))));
  t.is(processFate(zombie), "alive");
  await sleep(400);
  t.is(processFate(zombie), "exiting", "a zombie will never run again");
  parent.kill("SIGKILL");
  await new Promise((r) => parent.once("exit", r));
  // A child we reaped ourselves is gone.
  const done = spawn("true");
  await new Promise((r) => done.once("exit", r));
  t.is(processFate(done.pid!), "gone");
  t.is(processFate(0x3fffffff), "gone", "a pid that cannot exist");
});

test("ExitProbe: its eventfd turns readable once the process is killed, and not before", async (t) => {
  const { native } = await import("@vhostd/native");
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  const probe = new native.ExitProbe(child.pid!, 20);
  let firedAt = 0;
  const watcher = new native.FdWatcher(probe.fd, () => {
    firedAt ||= performance.now();
  });
  try {
    await sleep(200);
    t.is(firedAt, 0, "a live process: nothing");
    t.is(probe.fate(), "alive");
    const killedAt = performance.now();
    child.kill("SIGKILL");
    for (let i = 0; i < 100 && !firedAt; i++) await sleep(20);
    t.true(firedAt > 0, "the probe fired after the kill");
    t.true(firedAt - killedAt < 1000, `within a second (${(firedAt - killedAt).toFixed(0)} ms)`);
    t.not(probe.fate(), "alive");
  } finally {
    watcher.stop();
    probe.close();
    probe.close(); // twice is harmless
  }
  t.throws(() => new native.ExitProbe(0, 20), { message: /pid must be an integer >= 1/ });
  t.throws(() => new native.ExitProbe(process.pid, 0), { message: /intervalMs must be 1..60000/ });
});

/** A child process that arms its exit beacon at `path` and then idles; resolves once armed. */
async function beaconChild(path: string) {
  const nativeUrl = import.meta.resolve("@vhostd/native");
  const child = spawn(process.execPath, ["--input-type=module", "-e", `const { native } = await import(${JSON.stringify(nativeUrl)}); native.armExitBeacon(${JSON.stringify(path)}); console.log("ARMED"); setInterval(() => {}, 1000);`], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => String(d).includes("ARMED") && resolve());
    child.once("exit", (code) => reject(new Error(`beacon child exited (${code})`)));
  });
  return child;
}

function threadWakeups(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${process.pid}/task`)) {
    try {
      out.set(tid, Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${process.pid}/task/${tid}/status`, "utf8"))![1]));
    } catch {
      // that thread ended
    }
  }
  return out;
}

test.serial("ExitProbe with the keeper's exit beacon: no wake-up while it lives, fires at once on kill -9", async (t) => {
  const { native } = await import("@vhostd/native");
  const dir = mkdtempSync(path.join(tmpdir(), "vhostd-beacon-"));
  const file = path.join(dir, "keeper.beacon");
  const child = await beaconChild(file);
  t.is(statSync(file).mode & 0o777, 0o600);
  const before = threadWakeups();
  const probe = new native.ExitProbe(child.pid!, 20, file);
  t.is(probe.mode, "beacon", probe.beaconError);
  let firedAt = 0;
  const watcher = new native.FdWatcher(probe.fd, () => {
    firedAt ||= performance.now();
  });
  try {
    await sleep(500);
    t.is(firedAt, 0, "a live keeper: nothing");
    // The probe's thread is new; a polling one would have woken ~25 times by now.
    const fresh = [...threadWakeups()].filter(([tid]) => !before.has(tid));
    t.true(fresh.length >= 1, "the probe thread is there");
    t.true(fresh.every(([, n]) => n <= 3), `no wake-ups while the keeper lives: ${JSON.stringify(fresh)}`);
    const killedAt = performance.now();
    child.kill("SIGKILL");
    for (let i = 0; i < 200 && !firedAt; i++) await sleep(5);
    t.true(firedAt > 0, "the probe fired after the kill");
    t.log(`kill -9 to the probe firing: ${(firedAt - killedAt).toFixed(1)} ms`);
    t.true(firedAt - killedAt < 200, `within 200 ms (${(firedAt - killedAt).toFixed(1)} ms)`);
    t.not(probe.fate(), "alive");
  } finally {
    watcher.stop();
    probe.close();
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial("ExitProbe falls back to polling /proc when the beacon does not check out; close() never hangs", async (t) => {
  const { native } = await import("@vhostd/native");
  const dir = mkdtempSync(path.join(tmpdir(), "vhostd-beacon-"));
  const file = path.join(dir, "keeper.beacon");
  const child = await beaconChild(file);
  const other = spawn("sleep", ["30"], { stdio: "ignore" });
  const probes: Array<InstanceType<typeof native.ExitProbe>> = [];
  try {
    const cases: Array<[string, RegExp]> = [];
    probes.push(new native.ExitProbe(other.pid!, 20, file));
    cases.push(["another pid's beacon", /the beacon of pid \d+, not \d+/]);
    probes.push(new native.ExitProbe(child.pid!, 20, path.join(dir, "missing")));
    cases.push(["no file", /open: No such file/]);
    for (const [name, bytes] of [["garbage", randomBytes(64)], ["short", Buffer.from("VHBEACON")], ["zero owner", Buffer.concat([Buffer.from("VHBEACON"), Buffer.from([1, 0, 0, 0]), Buffer.alloc(52)])]] as const) {
      const f = path.join(dir, name.replace(" ", "_"));
      writeFileSync(f, bytes, { mode: 0o600 });
      probes.push(new native.ExitProbe(child.pid!, 20, f));
      cases.push([name, name === "short" ? /size 8 is not 64/ : name === "garbage" ? /not a beacon of this version/ : /the beacon of pid 0/]);
    }
    symlinkSync(file, path.join(dir, "link"));
    probes.push(new native.ExitProbe(child.pid!, 20, path.join(dir, "link")));
    cases.push(["a symlink", /open: Too many levels of symbolic links/]);
    probes.forEach((p, i) => {
      t.is(p.mode, "poll", cases[i]![0]);
      t.regex(p.beaconError, cases[i]![1], cases[i]![0]);
    });
    // The beacon mode's close() wakes its sleeping thread at once, however often it is done.
    for (let i = 0; i < 50; i++) {
      const p = new native.ExitProbe(child.pid!, 20, file);
      t.is(p.mode, "beacon");
      const t0 = performance.now();
      p.close();
      t.true(performance.now() - t0 < 100, "close() returns promptly");
    }
    t.throws(() => native.armExitBeacon("keeper.beacon"), { message: /path must be absolute/ });
    t.is(native.armExitBeacon(path.join(dir, "mine")) > 0, true, "this worker arms its own (a thread that sleeps until it exits)");
    t.throws(() => native.armExitBeacon(path.join(dir, "again")), { message: /armed its beacon already/ });
  } finally {
    for (const p of probes) p.close();
    child.kill("SIGKILL");
    other.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
