// sd_notify readiness, watchdog and stopping, with the test playing systemd: a DGRAM socket in
// $NOTIFY_SOCKET that records each notification and the pid that sent it (the kernel's word,
// as systemd gets it for NotifyAccess=main).
import test from "ava";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { native } from "@vhostd/native";
import { testSupport } from "@vhostd/native/testing";
import { notifyReady, notifyStopping, sdNotify, startWatchdog, watchdogUsec } from "@vhostd/runtime";
import { call } from "../src/cli/client.js";

const PKG = join(dirname(fileURLToPath(import.meta.url)), "..", ".."); // packages/vhostd
const DAEMON = join(PKG, "bin", "vfe-vhostd.js");
const CLI = join(PKG, "bin", "vfe-vhost-cli.js");
const KEEPER = join(PKG, "..", "ha", "bin", "vfe-vhostd-ha.js");

interface Note {
  data: string;
  pid: number;
  at: number;
}

/** systemd's side of NOTIFY_SOCKET. */
class Receiver {
  readonly notes: Note[] = [];
  private readonly fd: number;
  private readonly watcher: { stop(): void };
  private waiters: Array<() => void> = [];
  constructor(readonly name: string) {
    this.fd = testSupport.notifyListen(name);
    this.watcher = new native.FdWatcher(this.fd, () => {
      for (let n = testSupport.notifyRecv(this.fd); n; n = testSupport.notifyRecv(this.fd)) this.notes.push({ ...n, at: performance.now() });
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }
  /** Resolves with the first note (from index `from`) that matches, or rejects after ms. */
  async wait(pred: (n: Note) => boolean, ms = 15_000, from = 0): Promise<Note> {
    const deadline = performance.now() + ms;
    for (;;) {
      const hit = this.notes.slice(from).find(pred);
      if (hit) return hit;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no matching notification within ${ms} ms; got ${JSON.stringify(this.notes.map((n) => n.data))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  close(): void {
    this.watcher.stop();
    native.closeFd(this.fd);
  }
}

const has = (key: string) => (n: Note) => n.data.split("\n").includes(key);

function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

function spawnWithNotify(script: string, args: string[], env: Record<string, string>): { child: ChildProcess; log: () => string } {
  const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let log = "";
  child.stdout!.on("data", (d) => (log += d));
  child.stderr!.on("data", (d) => (log += d));
  return { child, log: () => log };
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once("exit", (code) => r(code)));
}

/* ------------------------------------------------------------------ units */

test("watchdogUsec follows sd_watchdog_enabled: unset, invalid, other pid", (t) => {
  t.is(watchdogUsec({}, 10), undefined);
  t.is(watchdogUsec({ WATCHDOG_USEC: "" }, 10), undefined);
  t.is(watchdogUsec({ WATCHDOG_USEC: "abc" }, 10), undefined);
  t.is(watchdogUsec({ WATCHDOG_USEC: "0" }, 10), undefined);
  t.is(watchdogUsec({ WATCHDOG_USEC: "-5" }, 10), undefined);
  t.is(watchdogUsec({ WATCHDOG_USEC: "20000000" }, 10), 20_000_000);
  t.is(watchdogUsec({ WATCHDOG_USEC: "20000000", WATCHDOG_PID: "10" }, 10), 20_000_000);
  t.is(watchdogUsec({ WATCHDOG_USEC: "20000000", WATCHDOG_PID: "11" }, 10), undefined);
});

test.serial("sdNotify: false without NOTIFY_SOCKET; path and abstract sockets; a bad name throws natively, not in the wrapper", (t) => {
  const saved = process.env.NOTIFY_SOCKET;
  try {
    delete process.env.NOTIFY_SOCKET;
    t.false(native.sdNotify("READY=1"));
    t.false(notifyReady("x"));

    const dir = tmp("vhostd-notify-");
    const path = join(dir, "notify");
    for (const name of [path, `@vhostd-test-${process.pid}`]) {
      const fd = testSupport.notifyListen(name);
      process.env.NOTIFY_SOCKET = name;
      t.true(notifyReady("line one\nline two"));
      t.true(notifyStopping());
      t.deepEqual(testSupport.notifyRecv(fd), { data: "READY=1\nSTATUS=line one line two", pid: process.pid, fds: [] });
      t.deepEqual(testSupport.notifyRecv(fd), { data: "STOPPING=1\nSTATUS=stopping", pid: process.pid, fds: [] });
      t.is(testSupport.notifyRecv(fd), null);
      native.closeFd(fd);
    }
    rmSync(dir, { recursive: true, force: true });

    process.env.NOTIFY_SOCKET = "relative/path";
    t.throws(() => native.sdNotify("READY=1"), { code: "EINVAL" });
    t.false(sdNotify("READY=1")); // logged once, never thrown
    process.env.NOTIFY_SOCKET = join(tmpdir(), `vhostd-no-such-${process.pid}`);
    t.throws(() => native.sdNotify("READY=1"), { code: "ENOENT" });
    t.throws(() => native.sdNotify(""), { instanceOf: RangeError });
  } finally {
    if (saved === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved;
  }
});

test.serial("startWatchdog pings every half period while the loop runs, and not at all without WATCHDOG_USEC", async (t) => {
  t.is(startWatchdog({ env: {} }).intervalMs, 0);
  const name = `@vhostd-wd-${process.pid}`;
  const rx = new Receiver(name);
  const saved = process.env.NOTIFY_SOCKET;
  process.env.NOTIFY_SOCKET = name;
  try {
    const wd = startWatchdog({ env: { WATCHDOG_USEC: "100000" } });
    t.is(wd.intervalMs, 50);
    await new Promise((r) => setTimeout(r, 530));
    wd.stop();
    const total = rx.notes.length;
    t.true(total >= 8 && total <= 12, `pings: ${total}`); // one at start, then one per 50 ms
    t.true(rx.notes.every((n) => n.data === "WATCHDOG=1" && n.pid === process.pid));
    await new Promise((r) => setTimeout(r, 150));
    t.is(rx.notes.length, total, "no ping after stop()");
  } finally {
    rx.close();
    if (saved === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved;
  }
});

/* ------------------------------------------------------------ the daemons */

test.serial("vfe-vhostd: READY=1 only once restored and serving RPC, WATCHDOG=1 periodically, STOPPING=1 on SIGTERM", async (t) => {
  const base = tmp("vhostd-sdnotify-");
  const runDir = join(base, "run");
  const stateDir = join(base, "state");
  const args = ["--run-dir", runDir, "--state-dir", stateDir];
  const sock = join(runDir, "vfe-vhostd.sock");

  // A journal to restore: one PF and one client-mode VF.
  {
    const rx = new Receiver(join(base, "notify0"));
    const d = spawnWithNotify(DAEMON, args, { NOTIFY_SOCKET: rx.name });
    await rx.wait(has("READY=1")).catch((e: Error) => t.fail(`${e.message}\n${d.log()}`));
    const cli = (...a: string[]) => spawnSync(process.execPath, [CLI, "--run-dir", runDir, ...a], { encoding: "utf8" });
    t.is(cli("mgmtpf", "-a", "0000:af:00.2").status, 0);
    t.is(cli("vf", "-a", "0000:af:04.5", "-v", join(base, "vm1.sock")).status, 0);
    d.child.kill("SIGTERM");
    await exited(d.child);
    rx.close();
  }

  const rx = new Receiver(join(base, "notify"));
  const d = spawnWithNotify(DAEMON, args, { NOTIFY_SOCKET: rx.name, WATCHDOG_USEC: "200000" });
  try {
    const ready = await rx.wait(has("READY=1"));
    // At READY=1 the RPC answers at the first attempt and the journal has been restored.
    const resp = (await call(sock, "vf", { list: true, mgmtpf: "0000:af:00.2" }, 2000)) as { result?: { devices?: Array<{ vf: string }> } };
    t.deepEqual(
      resp.result?.devices?.map((x) => x.vf),
      ["0000:af:04.5"],
      JSON.stringify(resp),
    );
    t.is(ready.pid, d.child.pid!, "sent by the main process (NotifyAccess=main)");
    t.regex(ready.data, /STATUS=serving RPC on .*restored 1 PF\(s\), 1 VF\(s\)/);
    t.is(rx.notes.filter(has("READY=1")).length, 1);

    // Watchdog: first ping at start, then every 100 ms.
    const from = rx.notes.indexOf(ready);
    await new Promise((r) => setTimeout(r, 1000));
    const pings = rx.notes.slice(from).filter(has("WATCHDOG=1"));
    t.true(pings.length >= 7, `pings in 1 s: ${pings.length}`);
    t.true(pings.every((p) => p.pid === d.child.pid!));
    const gaps = pings.slice(1).map((p, i) => p.at - pings[i]!.at);
    t.true(Math.max(...gaps) < 200, `largest gap ${Math.max(...gaps)} ms (the watchdog period)`);
    t.true(rx.notes.some((n) => has("WATCHDOG=1")(n) && n.at < ready.at), "pings start before READY (during the restore)");

    d.child.kill("SIGTERM");
    const stopping = await rx.wait(has("STOPPING=1"));
    t.is(stopping.pid, d.child.pid!);
    t.is(await exited(d.child), 0);
  } finally {
    d.child.kill("SIGKILL");
    rx.close();
    rmSync(base, { recursive: true, force: true });
  }
});

test.serial("vfe-vhostd with WATCHDOG_PID of another process does not ping", async (t) => {
  const base = tmp("vhostd-sdnotify-");
  const rx = new Receiver(join(base, "notify"));
  const d = spawnWithNotify(DAEMON, ["--run-dir", join(base, "run"), "--state-dir", join(base, "state")], {
    NOTIFY_SOCKET: rx.name,
    WATCHDOG_USEC: "100000",
    WATCHDOG_PID: "1",
  });
  try {
    await rx.wait(has("READY=1"));
    await new Promise((r) => setTimeout(r, 400));
    t.deepEqual(rx.notes.filter(has("WATCHDOG=1")), []);
  } finally {
    d.child.kill("SIGTERM");
    await exited(d.child);
    rx.close();
    rmSync(base, { recursive: true, force: true });
  }
});

test.serial("vfe-vhostd-ha (the keeper): READY=1 once up, WATCHDOG=1 periodically, STOPPING=1 on SIGTERM", async (t) => {
  const base = tmp("vhostd-sdnotify-ha-");
  const rx = new Receiver(`@vhostd-ha-notify-${process.pid}`);
  const d = spawnWithNotify(KEEPER, ["--run-dir", join(base, "run"), "--state-dir", join(base, "state")], { NOTIFY_SOCKET: rx.name, WATCHDOG_USEC: "200000" });
  try {
    const ready = await rx.wait(has("READY=1")).catch((e: Error) => {
      throw new Error(`${e.message}\n${d.log()}`);
    });
    t.is(ready.pid, d.child.pid!);
    await new Promise((r) => setTimeout(r, 600));
    const pings = rx.notes.filter(has("WATCHDOG=1"));
    t.true(pings.length >= 4, `pings: ${pings.length}`);
    t.true(pings.every((p) => p.pid === d.child.pid!));
    d.child.kill("SIGTERM");
    t.is((await rx.wait(has("STOPPING=1"))).pid, d.child.pid!);
    t.is(await exited(d.child), 0);
  } finally {
    d.child.kill("SIGKILL");
    rx.close();
    rmSync(base, { recursive: true, force: true });
  }
});
