// processFate: what vfe-vhostd reads in /proc to take over from a keeper whose threads are
// exiting before the kernel has closed its fds.
import test from "ava";
import { spawn } from "node:child_process";
import { processFate } from "../src/ha/process_exit.js";

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
