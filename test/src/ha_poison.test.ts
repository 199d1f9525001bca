// No poison pill across HA (issue 17), end to end. A hostile front-end sends a frame that
// crashes whichever daemon runs its VF: the TEST-ONLY trigger VHOSTD_TEST_CRASH_ON_FRAME (set
// for both daemons here, never by the units) makes the engine worker abort() when a TX frame
// carries the magic bytes, while it serves the sending device (native/cc/engine_worker.cc). What must
// happen, with the HA traffic of the kill tests running (two driver streams, a default-client
// testpmd that can never reconnect, a testpmd server) and the keeper restarted 250 ms after each
// death as systemd does:
//   1. the keeper dies of the frame (crash 1, attributed to the hostile VF H);
//   2. vfe-vhostd takes every session over in place but holds H (it must not die of H: it holds
//      every VF's fds while the keeper is down);
//   3. the restarted keeper takes everything back, H too, runs H again and dies again (crash 2);
//   4. vfe-vhostd takes over again; H is broken: its connection is closed, it is not resumed;
//   5. the next keeper takes everything back and runs; H stays broken (state "broken" with the
//      reason in vf -i / vf -l) until vf -r and vf -a.
// vfe-vhostd keeps its pid throughout; no victim VF reconnects or loses a frame silently.
import test from "ava";
import { native } from "@vhostd/native";
import { FrontendDriver } from "@vhostd/frontend";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";
import { HaTraffic, PF1, VF_A, VF_B, VF_R, VF_T, vfList } from "./harness/ha_traffic.js";
import { needPeer } from "./harness/peers.js";
import { unsentInRing } from "./harness/testpmd.js";

/** 16 bytes no stream frame carries. */
const MAGIC_HEX = "5ec0de5ec0dec0ffee0ddba115eed000";
const ENV = { VHOSTD_TEST_CRASH_ON_FRAME: MAGIC_HEX };
const VF_H = "0000:af:06.5"; // the hostile VF, on the drivers' PF
const HDR = 12;

/** Restarts the keeper 250 ms after each death, as systemd's Restart=always, RestartSec=250ms does. */
class KeeperSupervisor {
  readonly deaths: Array<{ pid: number; signal: string | null; code: number | null; at: number }> = [];
  private stopped = false;
  private restarting: Promise<void> = Promise.resolve();

  constructor(private readonly d: Daemon) {
    this.watch();
  }

  private watch(): void {
    const k = this.d.keeper!;
    k.once("exit", (code, signal) => {
      this.deaths.push({ pid: k.pid!, signal, code, at: Date.now() });
      if (this.stopped) return;
      this.restarting = sleep(250).then(() => this.restart());
    });
  }

  private async restart(): Promise<void> {
    if (this.stopped) return;
    const starting = this.d.startKeeper(ENV); // spawns before its first await: we watch the new one at once
    this.watch();
    await starting.catch(() => undefined); // died while starting: its exit restarts it again
  }

  get keeperPid(): number | undefined {
    return this.d.keeper?.exitCode === null && this.d.keeper.signalCode === null ? this.d.keeper.pid : undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.restarting;
  }
}

/** Puts one frame carrying the magic on the driver's TX ring (queue 1) by hand and kicks. */
function sendPoison(h: FrontendDriver): void {
  const dev = h.device;
  const ring = dev.ring(1);
  const at = dev.memAddr + BigInt(dev.memSize) - (1n << 20n);
  const frame = Buffer.alloc(HDR + 64);
  frame.fill(0xff, HDR, HDR + 6); // broadcast: it would flood, if it were ever forwarded
  Buffer.from(h.mac.split(":").map((x) => parseInt(x, 16))).copy(frame, HDR + 6);
  frame.writeUInt16BE(0x88b5, HDR + 12);
  Buffer.from(MAGIC_HEX, "hex").copy(frame, HDR + 20);
  dev.writeMem(at, frame);
  const desc = Buffer.alloc(16);
  desc.writeBigUInt64LE(at, 0);
  desc.writeUInt32LE(frame.length, 8);
  dev.writeMem(ring.desc, desc); // descriptor 0, read-only, no next
  dev.writeMem(ring.avail + 4n, Buffer.from([0, 0])); // avail slot 0: head 0
  dev.writeMem(ring.avail + 2n, Buffer.from([1, 0])); // avail idx 1
  native.eventFdWrite(ring.kickFd);
}

test.serial("a front-end whose frame crashes the runner: the keeper dies twice, vfe-vhostd never, the hostile VF is broken, the victims never notice", async (t) => {
  if (!needPeer(t, "dpdk-testpmd")) return;
  const traffic = await HaTraffic.start({ env: ENV });
  const { d, tx } = traffic;
  let sup: KeeperSupervisor | undefined;
  let h: FrontendDriver | undefined;
  try {
    const vhostdPid = d.proc!.pid!;
    const keeperPid0 = d.keeper!.pid!;
    const before = await vfList(d);
    const hOpts = { connectTimeoutMs: 10_000, memSize: 16 << 20 };
    const hP = FrontendDriver.listen(d.sock("h"), hOpts);
    await d.ok(["vf", "-a", VF_H, "-v", d.sock("h")]);
    h = await hP;
    await h.handshake();
    await waitFor(async () => (await d.ok(["vf", "-i", VF_H])).device.state === "running", 5000, "H running");
    sup = new KeeperSupervisor(d);
    const frames0 = traffic.framesReceived();
    const tx0 = tx.nicStats().txPackets;
    const logAt = d.log().length;
    const keeperLogAt = d.keeperLog().length;

    sendPoison(h);

    // Crash 1, the hold, the take-back, crash 2, the break, and a keeper that stays up.
    await waitFor(() => sup!.deaths.length >= 2, 20_000, "the keeper died twice");
    await waitFor(async () => (await d.keeperCall({ method: "runtime", dev: VF_H }).catch(() => null))?.state === "broken", 20_000, "a running keeper reports H broken");
    await sleep(2000); // and nothing dies after that
    const vlog = d.log().slice(logAt);
    const klog = d.keeperLog().slice(keeperLogAt);
    const lines = (s: string) => s.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, any>);
    const vlines = lines(vlog);
    const klines = lines(klog);
    t.log({ deaths: sup.deaths.map((x) => ({ signal: x.signal, code: x.code, at: new Date(x.at).toISOString() })), takeovers: vlines.filter((l) => l.event === "takeover_done").map((l) => ({ ms: l.ms, vfs: l.vfs, held: l.held })) });

    // Both daemons: vfe-vhostd kept its pid; the keeper died exactly twice, of SIGABRT, and runs.
    t.is(d.proc!.pid, vhostdPid, "vfe-vhostd kept its pid");
    t.is(d.proc!.exitCode, null, "vfe-vhostd runs");
    t.is(d.proc!.signalCode, null);
    t.deepEqual(sup.deaths.map((x) => x.signal), ["SIGABRT", "SIGABRT"], "the keeper died twice of the poison frame, no more");
    t.is(sup.deaths[0]!.pid, keeperPid0);
    t.truthy(sup.keeperPid, "a keeper runs");
    t.true(klines.some((l) => /TEST-ONLY poison frame from device/.test(String(l.msg))) || /TEST-ONLY poison frame from device/.test(klog), "the keeper's worker aborted on the frame");

    // The verdicts, in vfe-vhostd's log: held at the 1st takeover, broken at the 2nd, each with
    // the VF and its socket, the break at error level.
    const held = vlines.find((l) => l.event === "takeover_held");
    t.like(held, { vf: VF_H, socket: d.sock("h") });
    const attributed = vlines.filter((l) => l.event === "crash_attributed" && l.vf === VF_H);
    t.deepEqual(attributed.map((l) => [l.count, l.broken, l.crashed, l.signal, l.how]), [
      [1, false, "vfe-vhostd-ha", "SIGABRT", "serving"],
      [2, true, "vfe-vhostd-ha", "SIGABRT", "serving"],
    ]);
    const broke = vlines.find((l) => l.event === "vf_broken" && l.vf === VF_H);
    t.like(broke, { level: 50, socket: d.sock("h") });
    t.true(klines.some((l) => l.event === "crash_suspect_resumed" && l.vf === VF_H), "the restarted keeper ran H again (its second chance)");
    t.false(vlines.some((l) => l.event === "crash_attributed" && l.vf !== VF_H), "no other VF was ever implicated");

    // H: broken, with the reason, in vf -i and vf -l; its front-end was disconnected.
    const hi = await d.ok(["vf", "-i", VF_H]);
    t.is(hi.device.state, "broken");
    t.regex(hi.device.last_error, /^broken: implicated in 2 crashes in a row \(last: vfe-vhostd-ha died of SIGABRT while serving it/);
    const hl = (await d.ok(["vf", "-l", PF1])).devices.find((x: { vf: string }) => x.vf === VF_H);
    t.is(hl?.state, "broken");
    t.regex(hl?.last_error ?? "", /^broken: /);
    t.false(h.connected, "H's front-end saw its connection closed");

    // The victims: traffic went on, nobody reconnected, nothing lost silently.
    await waitFor(() => traffic.framesReceived() > frames0 + 2000, 5000, "streams still flowing");
    await tx.waitForTraffic("txPackets", tx0, 5000);
    const after = await vfList(d);
    const r = await traffic.finish();
    t.log({ streamA: r.streams[0], streamB: r.streams[1], testpmdTx: r.testpmdTx, testpmdRx: r.testpmdRx, reconnects: r.reconnects });
    for (const [vf, n] of Object.entries(r.reconnects)) t.is(n, 0, `${vf}: never reconnected`);
    for (const [what, s] of [["A->B", r.streams[0]], ["B->A", r.streams[1]]] as const) {
      t.is(s.lost, s.drops, `${what}: every lost frame is an engine-counted RX drop`);
      t.is(s.dup, 0, `${what}: nothing duplicated`);
      t.is(s.corrupt, 0, `${what}: nothing corrupted`);
      t.is(s.reordered, 0, `${what}: nothing reordered`);
      t.true(s.maxGapUs < 1_000_000, `${what}: the longest gap (${s.maxGapUs} µs) stays under a second`);
    }
    t.true(unsentInRing(r.testpmdTx.sent, r.testpmdTx.tookByEngine, 1), "the engine took every frame the default-client testpmd sent");
    t.is(r.testpmdRx.received, r.testpmdRx.delivered, "the rxonly testpmd received what the engine delivered");
    const strip = (l: Record<string, unknown>[]) => l.filter((x) => x.vf !== VF_H);
    t.deepEqual(strip(after), strip(before), "the victims' vf -l is unchanged");
    for (const vf of [VF_A, VF_B, VF_T, VF_R]) t.not((await d.ok(["vf", "-i", vf])).device.state, "broken");

    // The operator clears it: vf -r, vf -a; the front-end connects again and H runs.
    await d.ok(["vf", "-r", VF_H]);
    await d.ok(["vf", "-a", VF_H, "-v", d.sock("h")]);
    await h.reconnect();
    await h.handshake();
    await waitFor(async () => (await d.ok(["vf", "-i", VF_H])).device.state === "running", 5000, "H runs again after vf -r / vf -a");
    t.is(sup.deaths.length, 2, "no further death");
  } finally {
    await sup?.stop();
    h?.close();
    await traffic.close();
  }
});
