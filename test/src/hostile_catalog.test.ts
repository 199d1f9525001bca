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
import { HostileWorld } from "./harness/hostile_world.js";
import { blkRequestCases, closeBlkAttacker } from "./hostile/blk_requests.js";
import { CaseFailed, type HostileCase } from "./hostile/case.js";
import { messageCases } from "./hostile/messages.js";
import { closeNetAttacker, netRingCases } from "./hostile/net_rings.js";
import { rpcCases } from "./hostile/rpc.js";

/** The issue asks for at least this many distinct cases. */
const MIN_CASES = 200;
/** Fds the keeper may gain over the run (the attackers' connections come and go). */
const FD_SLACK = 16;

function catalogue(): HostileCase[] {
  const all = [...messageCases(), ...netRingCases(), ...blkRequestCases(), ...rpcCases()];
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
    const fdsBefore = HostileWorld.fdCount(w.keeperPid);
    for (const [i, c] of cases.entries()) {
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
    const end = await w.finish();
    if (end) failures.push(`victims: ${end}`);
    const fdsAfter = HostileWorld.fdCount(w.keeperPid);
    if (fdsAfter > fdsBefore + FD_SLACK) failures.push(`the keeper held ${fdsBefore} fds before the attacks and ${fdsAfter} after`);
    t.log(`victim streams: a->b ${JSON.stringify(w.stream("a->b"))}, b->a ${JSON.stringify(w.stream("b->a"))}; keeper fds ${fdsBefore} -> ${fdsAfter}`);
  } finally {
    await w.stop();
  }
  t.deepEqual(failures, [], `${failures.length} of ${cases.length} cases failed:\n${failures.join("\n")}`);
});
