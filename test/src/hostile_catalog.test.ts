// The hostile-input catalogue (issue 17): every case attacks the HA pair through a real socket
// (vhost-user messages, net rings, blk requests, the management RPC, ...), and after each one
// both daemons still have their first pids, RPC answers, and two victim VFs' numbered streams
// have nothing duplicated, corrupted or reordered. At the end every frame a victim missed is a
// drop the engine counted, the victims never reconnected, and the keeper holds no more fds
// than before the attacks (a refused message's fds are closed).
//
// VHOSTD_HOSTILE_ONLY=<regex> runs only the cases whose name matches (the count check is then
// skipped); the log prints how many cases each area has.
import test from "ava";
import { sleep } from "./harness/daemon.js";
import { HostileWorld } from "./harness/hostile_world.js";
import { blkRequestCases, closeBlkAttacker } from "./hostile/blk_requests.js";
import { CaseFailed, type HostileCase } from "./hostile/case.js";
import { messageCases } from "./hostile/messages.js";
import { mirrorCases } from "./hostile/mirror.js";
import { closeNetAttacker, netRingCases } from "./hostile/net_rings.js";
import { rpcCases } from "./hostile/rpc.js";

/** The issue asks for at least this many distinct cases. */
const MIN_CASES = 200;
/** Fds the keeper may gain over the run (the attackers' connections come and go). */
const FD_SLACK = 16;

function catalogue(): HostileCase[] {
  // Mirror cases last: they need the keeper killed (vfe-vhostd then runs every VF).
  const all = [...messageCases(), ...netRingCases(), ...blkRequestCases(), ...rpcCases(), ...mirrorCases()];
  const only = process.env.VHOSTD_HOSTILE_ONLY;
  return only ? all.filter((c) => new RegExp(only).test(c.name)) : all;
}

test.serial("the hostile-input catalogue: no case costs a daemon its pid or a victim VF a frame", async (t) => {
  const cases = catalogue();
  const names = new Set(cases.map((c) => c.name));
  t.is(names.size, cases.length, "case names are distinct");
  if (!process.env.VHOSTD_HOSTILE_ONLY) t.true(cases.length >= MIN_CASES, `${cases.length} cases, at least ${MIN_CASES} wanted`);
  const perArea = new Map<string, number>();
  for (const c of cases) perArea.set(c.area, (perArea.get(c.area) ?? 0) + 1);
  t.log(`${cases.length} cases: ${[...perArea].map(([a, n]) => `${a} ${n}`).join(", ")}`);

  const w = await HostileWorld.start();
  const failures: string[] = [];
  try {
    // Fds of the process the attacks talk to: the keeper (front-end cases), then vfe-vhostd
    // (mirror cases, after it took over; the copies it holds are counted in its fds).
    const fds: Array<{ who: string; pid: number; before: number; after?: number }> = [{ who: "vfe-vhostd-ha", pid: w.keeperPid, before: HostileWorld.fdCount(w.keeperPid) }];
    const fdsNow = () => {
      const f = fds[fds.length - 1]!;
      f.after ??= HostileWorld.fdCount(f.pid);
    };
    for (const [i, c] of cases.entries()) {
      if (c.area === "mirror" && !w.keeperDown) {
        closeNetAttacker();
        closeBlkAttacker();
        await sleep(200); // the keeper closes what the attackers' sessions held
        fdsNow();
        await w.killKeeper();
        fds.push({ who: "vfe-vhostd", pid: w.vhostdPid, before: HostileWorld.fdCount(w.vhostdPid) });
      }
      try {
        await c.run(w);
      } catch (e) {
        failures.push(`${c.name}: ${e instanceof CaseFailed ? "" : "(error) "}${(e as Error).message}`);
      }
      const p = await w.problem(i % 25 === 24);
      if (p) {
        failures.push(`after "${c.name}": ${p}`);
        break; // the world is damaged: later verdicts would mean nothing
      }
    }
    closeNetAttacker();
    closeBlkAttacker();
    await sleep(200);
    fdsNow();
    if (w.keeperDown) await w.restartKeeper();
    const end = await w.finish();
    if (end) failures.push(`victims: ${end}`);
    for (const f of fds) if (f.after! > f.before + FD_SLACK) failures.push(`${f.who} held ${f.before} fds before the attacks and ${f.after} after`);
    t.log(`victim streams: a->b ${JSON.stringify(w.stream("a->b"))}, b->a ${JSON.stringify(w.stream("b->a"))}; fds ${fds.map((f) => `${f.who} ${f.before} -> ${f.after}`).join(", ")}`);
  } finally {
    await w.stop();
  }
  t.deepEqual(failures, [], `${failures.length} of ${cases.length} cases failed:\n${failures.join("\n")}`);
});
