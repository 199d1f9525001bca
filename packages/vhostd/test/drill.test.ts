// The drill's pure parts: option parsing (a typo must not drill the wrong thing), the promise
// checks, the seeded PRNG, and the CLI dispatch of the local verb. The drill itself runs end to
// end in test/src/drill.test.ts.
import test from "ava";
import { parseDrillArgs, rng, type DrillOptions } from "../src/drill/options.js";
import { judge, type EventMeasure } from "../src/drill/promises.js";
import { run } from "../src/cli/run.js";

function opts(argv: string[], env: NodeJS.ProcessEnv = {}): DrillOptions {
  const o = parseDrillArgs(argv, env);
  if ("kind" in o) throw new Error("help");
  return o;
}

test("defaults, and every option", (t) => {
  const d = opts([]);
  t.like(d, { kill: "vhostd", events: 6, seed: 1, vfs: 4, ratePps: 5000, frameSize: 512, json: false, standalone: false, runDir: "/run/vhostd" });
  t.deepEqual(d.intervalMs, [200, 1000]);
  const o = opts(["--kill", "mix", "--events=3", "--seed", "42", "--vfs", "6", "--rate", "100", "--frame", "60", "--interval-ms", "5-10", "--json", "--keep"]);
  t.like(o, { kill: "mix", events: 3, seed: 42, vfs: 6, ratePps: 100, frameSize: 60, json: true, keep: true });
  t.deepEqual(o.intervalMs, [5, 10]);
  const tg = opts(["--target", "0000:AF:04.5", "--restart", "--wait", "5"], { VHOSTD_RUN_DIR: "/x" });
  t.like(tg, { target: "0000:af:04.5", restart: true, waitS: 5, runDir: "/x" });
  t.is(opts(["--target", "0000:af:04.5", "--run-dir", "/y"]).runDir, "/y");
  t.is((parseDrillArgs(["--target", "0000:af:04.5"], {}, "/global") as DrillOptions).runDir, "/global");
});

test("bad options are usage errors naming the option", (t) => {
  const bad: Array<[string[], RegExp]> = [
    [["--kill", "all"], /--kill: invalid choice "all"/],
    [["--vfs", "3"], /--vfs: must be even/],
    [["--vfs", "1"], /--vfs: 1 is out of range/],
    [["--events", "0"], /--events: 0 is out of range/],
    [["--events", "2x"], /--events: expected an integer/],
    [["--frame", "59"], /--frame: 59 is out of range/],
    [["--interval-ms", "9-1"], /--interval-ms: need A <= B/],
    [["--standalone", "--kill", "keeper"], /no keeper to kill/],
    [["--target", "nope"], /--target: "nope" is not a PCI address/],
    [["--target", "0000:af:04.5", "--vfs", "2"], /--vfs: not with --target/],
    [["--restart"], /--restart: only with --target/],
    [["--events", "1", "--events", "2"], /given twice/],
    [["--json=1"], /takes no value/],
    [["extra"], /unrecognized argument: extra/],
  ];
  for (const [argv, re] of bad) t.throws(() => parseDrillArgs(argv, {}), { message: re }, argv.join(" "));
});

test("the same seed gives the same moments", (t) => {
  const a = rng(7);
  const b = rng(7);
  const xs = Array.from({ length: 5 }, () => a());
  t.deepEqual(xs, Array.from({ length: 5 }, () => b()));
  t.true(xs.every((x) => x >= 0 && x < 1));
  t.notDeepEqual(xs, Array.from({ length: 5 }, rng(8)));
});

const clean: EventMeasure = {
  kind: "vhostd",
  sent: 1000,
  received: 1000,
  lost: 0,
  duplicated: 0,
  corrupted: 0,
  maxGapMs: 10,
  rpcMs: 400,
  trafficMs: 10,
  reconnects: 0,
  configSame: true,
  listSame: true,
  inFlightBound: 8192,
  engineDrops: 0,
};
const J = { standalone: false, maxGapMs: 250 };

test("vfe-vhostd kill: any loss, reconnect or change breaks the promise", (t) => {
  t.deepEqual(judge(clean, J).broken, []);
  t.deepEqual(judge({ ...clean, lost: 2, received: 998 }, J).broken, ["2 lost"]);
  t.deepEqual(judge({ ...clean, reconnects: 1 }, J).broken, ["1 front-end reconnect(s)"]);
  t.deepEqual(judge({ ...clean, listSame: false }, J).broken, ["vf -l changed"]);
  t.deepEqual(judge({ ...clean, rpcMs: undefined, trafficMs: undefined }, J).broken, ["traffic did not resume", "control plane did not answer again"]);
  t.deepEqual(judge({ ...clean, duplicated: 1, corrupted: 2 }, J).broken, ["1 duplicated", "2 corrupted"]);
});

test("keeper kill: reconnects and long pauses break it, bounded loss does not", (t) => {
  const k = { ...clean, kind: "keeper" as const };
  t.deepEqual(judge({ ...k, lost: 4000 }, J).broken, []);
  t.deepEqual(judge({ ...k, lost: 9000 }, J).broken, ["9000 lost > 8192 that can be in flight"]);
  t.deepEqual(judge({ ...k, reconnects: 4, maxGapMs: 300 }, J).broken, ["4 front-end reconnect(s)", "datapath gap 300 ms > 250 ms"]);
  t.is(judge(k, J).row, "vfe-vhostd-ha killed");
  t.deepEqual(judge({ ...k, listSame: false }, J).broken, ["vf -l changed (runtime fields)"]);
});

test("both killed, and standalone vhostd: reconnects and in-flight loss expected, config must come back", (t) => {
  const b = { ...clean, kind: "both" as const, reconnects: 4, lost: 4000, maxGapMs: 400, listSame: false };
  t.deepEqual(judge(b, J).broken, []);
  t.deepEqual(judge({ ...b, configSame: false }, J).broken, ["configuration not restored"]);
  const s = { ...b, kind: "vhostd" as const };
  t.deepEqual(judge(s, { ...J, standalone: true }).broken, []);
  t.regex(judge(s, { ...J, standalone: true }).row, /standalone/);
});

test("vfe-vhost-cli drill: help and usage errors through the CLI", async (t) => {
  const out: string[] = [];
  const err: string[] = [];
  t.is(await run(["drill", "-h"], (s) => out.push(s), (s) => err.push(s), {}), 0);
  t.regex(out.join(""), /Crash-recovery drill/);
  t.is(await run(["drill", "--kill", "x"], (s) => out.push(s), (s) => err.push(s), {}), 2);
  t.regex(err.join(""), /vfe-vhost-cli drill: error: --kill: invalid choice/);
  // --target on a run dir nobody serves: the drill cannot run (3), it is not a verdict.
  t.is(await run(["drill", "--target", "0000:af:04.5", "--run-dir", "/nonexistent-vhostd", "--wait", "1"], () => undefined, (s) => err.push(s), {}), 3);
});

test("--migrate: its own options, and what does not go with it", (t) => {
  const o = opts(["--migrate", "--hops", "2", "--kill", "none", "--guest-dir", "/g", "--keep"]);
  t.like(o, { migrate: true, hops: 2, kill: "none", guestDir: "/g", keep: true });
  t.like(opts(["--migrate"]), { migrate: true, hops: 4, kill: "vhostd" });
  const bad: Array<[string[], RegExp]> = [
    [["--hops", "2"], /--hops: only with --migrate/],
    [["--guest-dir", "/g"], /--guest-dir: only with --migrate/],
    [["--kill", "none"], /--kill none: only with --migrate/],
    [["--migrate", "--kill", "both"], /--kill both: not with --migrate/],
    [["--migrate", "--events", "3"], /--events: not with --migrate/],
    [["--migrate", "--target", "0000:af:04.5"], /--target: not with --migrate/],
    [["--migrate", "--hops", "0"], /--hops: 0 is out of range/],
  ];
  for (const [argv, re] of bad) t.throws(() => parseDrillArgs(argv, {}), { message: re }, argv.join(" "));
});
