// Hostile front-end, back-pressure: a front-end that sends requests needing replies and never
// reads them fills its socket. Sends used to wait up to 1 s for it on the event loop, freezing
// the control plane of every VF (and HA heartbeats) once per ~280 unread replies. Now a send
// never waits: the reply waits in a queue, the session stops reading, and a front-end that
// still does not read loses its session with a log line; another VF's RPC stays fast.
import test from "ava";
import { execFile } from "node:child_process";
import { MsgFlag, Req } from "@vhostd/proto";
import { rpc } from "@vhostd/vhostd";
import { Daemon, sleep } from "./harness/daemon.js";

const PF = "0000:af:00.2";
const VF_H = "0000:af:04.5"; // the flooder's VF (server mode)
const VF_V = "0000:af:05.5"; // the victim: its RPC must stay fast

/**
 * Connects to `path` and writes GET_FEATURES requests (each needs a reply) as fast as the socket
 * takes them, never reading, until the daemon hangs up or `limitMs` passes. A child process
 * (plain node:net, not our addon) so nothing of it can stall this test's event loop.
 * Returns how long the daemon took to hang up (undefined: it did not).
 */
function flood(path: string, limitMs: number): Promise<{ hungUpMs?: number; sent: number }> {
  const script = `
    const net = require("node:net");
    const one = Buffer.alloc(12); one.writeUInt32LE(${Req.GET_FEATURES}, 0); one.writeUInt32LE(${MsgFlag.VERSION}, 4);
    const burst = Buffer.concat(Array.from({ length: 1024 }, () => one));
    const t0 = performance.now(); let sent = 0; let done = false;
    const finish = (hungUp) => { if (done) return; done = true; process.stdout.write(JSON.stringify({ sent, ...(hungUp ? { hungUpMs: performance.now() - t0 } : {}) })); process.exit(0); };
    const s = net.createConnection(${JSON.stringify(path)});
    s.on("error", () => finish(true));
    s.on("close", () => finish(true));
    s.pause(); // never read a reply
    const pump = () => { while (!done) { sent += burst.length; if (!s.write(burst)) return; } };
    s.on("drain", pump);
    s.on("connect", pump);
    setTimeout(() => finish(false), ${limitMs});
  `;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["-e", script], { timeout: limitMs + 5000 }, (err, stdout) => {
      if (err) reject(err);
      else resolve(JSON.parse(stdout));
    });
  });
}

test.serial("a front-end that never reads its replies loses its session; another VF's RPC stays fast", async (t) => {
  const d = await Daemon.start();
  try {
    const pid = d.proc!.pid!;
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_H, "-v", d.sock("h"), "--server"]);
    await d.ok(["vf", "-a", VF_V, "-v", d.sock("v"), "--server"]);

    // The victim's RPC, back to back, for the whole flood.
    const latencies: number[] = [];
    let probing = true;
    const probe = (async () => {
      while (probing) {
        const t0 = performance.now();
        await rpc(d.runDir, ["vf", "-i", VF_V], 10_000);
        latencies.push(performance.now() - t0);
        await sleep(5);
      }
    })();

    const rounds: Array<{ hungUpMs?: number; sent: number }> = [];
    try {
      for (let i = 0; i < 3; i++) rounds.push(await flood(d.sock("h"), 8000));
    } finally {
      probing = false;
      await probe;
    }
    const max = Math.max(...latencies);
    const sorted = [...latencies].sort((a, b) => a - b);
    t.log(`${latencies.length} vf -i calls during 3 floods: median ${sorted[sorted.length >> 1]!.toFixed(1)} ms, max ${max.toFixed(1)} ms; rounds ${JSON.stringify(rounds.map((r) => ({ sent: r.sent, hungUpMs: r.hungUpMs && Math.round(r.hungUpMs) })))}`);
    t.true(latencies.length > 10, "the victim's RPC was probed throughout");
    t.true(max < 200, `another VF's vf -i never took 200 ms or more while a front-end did not read (max ${max.toFixed(1)} ms)`);
    for (const [i, r] of rounds.entries()) t.not(r.hungUpMs, undefined, `round ${i}: the flooder's session was closed`);

    const lines = d.logLines().filter((l) => l.vf === VF_H && l.level >= 50 && /did not read its replies/.test(`${l.reason ?? ""} ${l.msg ?? ""}`));
    t.true(lines.length >= 3, `each closed session is logged with the reason (got ${lines.length})`);
    t.is(d.proc!.pid, pid, "same vfe-vhostd");
    t.is((await d.cli(["version"])).code, 0, "the daemon still answers RPC");
    const v = await d.ok(["vf", "-i", VF_V]);
    t.truthy(v, "the victim VF is there");
  } finally {
    await d.stop();
    d.cleanup();
  }
});
