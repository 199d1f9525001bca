// `pnpm fuzz`: builds the sanitizer harnesses, replays the committed corpus and crash inputs
// under ASan+UBSan, then runs the campaign, one target at a time (one fuzzer process: the
// machine is shared). Options:
//   --time=S        seconds per target (default 600, or VHOSTD_FUZZ_SECONDS)
//   --smoke         a few seconds per target (CI): --time=3
//   --replay        replay only, no campaign
//   --targets=a,b   only these targets (native: see *_fuzz.cc; js: js_<name>, see js/targets.mjs)
//   --merge         after the campaign, minimize the grown corpus into corpus/<target> (-merge=1)
//   --cpu=S         a campaign of S CPU-seconds per target, counted from the fuzzer's own CPU
//                   time (not wall time: the machine is shared; run it under `chrt -i 0`), in
//                   rounds of --time seconds. Kept in build-fuzz/campaign/<target>.json with a
//                   hash of the code under test, so a campaign interrupted resumes where it
//                   stopped, and a changed source starts it again from zero.
// Prints per target: execs, coverage (cov/ft), corpus size; writes build-fuzz/summary.json.
// Exit status 1 when a replay or a campaign found a crash, a sanitizer report or a leak
// (the input is kept in build-fuzz/crashes/<target>/ and named in the output).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, "../build-fuzz");
const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
  if (!m) { console.error(`unknown argument ${a}`); process.exit(2); }
  return [m[1], m[2] ?? true];
}));
const smoke = !!args.smoke;
const cpuGoal = args.cpu ? Number(args.cpu) : 0;
const seconds = Number(args.time ?? (smoke ? 3 : process.env.VHOSTD_FUZZ_SECONDS ?? 600));
const nativeTargets = readdirSync(here).filter((f) => f.endsWith("_fuzz.cc")).map((f) => f.replace(/_fuzz\.cc$/, "")).sort();
const { JS_TARGETS } = await import("./js/targets.mjs");
const jsTargets = Object.keys(JS_TARGETS).map((t) => `js_${t}`);
const all = [...nativeTargets, ...jsTargets];
const wanted = args.targets ? String(args.targets).split(",") : all;
for (const t of wanted) if (!all.includes(t)) { console.error(`no target ${t} (have: ${all.join(", ")})`); process.exit(2); }

// Max input sizes: the net and blk inputs carry guest memory images.
const MAX_LEN = { net_tx: 16384, net_rx: 16384, blk: 16384, inflight: 8192, dirty_log: 1024, mem_table: 2048 };

/** Known crashes awaiting a fix elsewhere: "<target>/<file> <skip-token> <why>" per line. */
function known() {
  const f = path.join(here, "crashes/KNOWN");
  if (!existsSync(f)) return [];
  return readFileSync(f, "utf8").split("\n").filter((l) => l.trim() && !l.startsWith("#")).map((l) => {
    const [file, token, ...why] = l.trim().split(/\s+/);
    return { file, token, why: why.join(" ") };
  });
}

function filesOf(dir) {
  return existsSync(dir) ? readdirSync(dir).filter((f) => !f.startsWith(".")).map((f) => path.join(dir, f)) : [];
}

/** CPU seconds of every child this process has waited for (/proc/self/stat cutime + cstime). */
function childCpuSeconds() {
  const f = readFileSync("/proc/self/stat", "utf8");
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[13]) + Number(fields[14])) / 100; // fields 16, 17 of proc(5); USER_HZ is 100 on Linux
}

/** Every file whose code a target runs: a campaign counts only on the code it fuzzed. */
function sourceHash(t, isJs) {
  const h = createHash("sha256");
  const root = path.resolve(here, "../../..");
  const walk = (dir, keep) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) { if (!["corpus", "crashes", "node_modules", "dist"].includes(e.name)) walk(p, keep); }
      else if (keep(e.name, p)) h.update(path.relative(root, p)).update(readFileSync(p));
    }
  };
  if (isJs) {
    // The JS targets import @vhostd/proto and nothing else of ours.
    walk(path.join(root, "packages", "proto", "src"), (n) => n.endsWith(".ts"));
    walk(path.join(here, "js"), (n) => n.endsWith(".mjs"));
  } else {
    // What the Makefile compiles: the .cc files and headers of cc/ without N-API (the harness
    // build has no N-API headers, so nothing it compiles can include one that uses them).
    const cc = path.resolve(here, "../cc");
    walk(cc, (n, p) => path.dirname(p) === cc && /\.(cc|h)$/.test(n) && !readFileSync(p, "utf8").includes("napi.h"));
    // The shared harness and this target's own file; another target's harness is not its code.
    walk(here, (n) => n === `${t}_fuzz.cc` || (/\.(cc|h)$|^Makefile$/.test(n) && !n.endsWith("_fuzz.cc")));
  }
  return h.digest("hex").slice(0, 16);
}

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: "utf8", maxBuffer: 256 << 20, ...opts });
  return { code: r.status ?? 1, signal: r.signal, out: (r.stdout ?? "") + (r.stderr ?? "") };
}

let failed = false;

/** One fuzzer run of `seconds` on the working corpus: its exit and last stats. */
function fuzzOnce(t, isJs, work, found, env, seconds) {
  const r = isJs
    ? run(process.execPath, [path.join(here, "js/fuzz_js.mjs"), "--fuzz", t.slice(3), `--time=${seconds}`, `--corpus=${work}`, `--artifacts=${found}/`], { env })
    : run(path.join(out, "fuzz", t), [`-max_total_time=${seconds}`, "-timeout=20", "-rss_limit_mb=2560", `-max_len=${MAX_LEN[t] ?? 16384}`,
        "-print_final_stats=1", `-artifact_prefix=${found}/`, work], { env });
  const stat = (k) => Number((new RegExp(`${k}:\\s+(\\d+)`).exec(r.out) ?? [])[1] ?? NaN);
  const lines = r.out.split("\n").filter((l) => /\bcov: \d+/.test(l));
  const last = lines[lines.length - 1] ?? "";
  return {
    ...r,
    execs: stat("stat::number_of_executed_units"),
    cov: Number((/cov: (\d+)/.exec(last) ?? [])[1] ?? NaN),
    ft: Number((/ft: (\d+)/.exec(last) ?? [])[1] ?? NaN),
    corpus: (/corp: (\d+)\/(\S+)/.exec(last) ?? []).slice(1).join(" inputs, "),
  };
}

/**
 * libFuzzer's -timeout is wall time: a campaign under `chrt -i 0` (SCHED_IDLE) can be starved
 * for longer than that by the machine's other work. A timeout counts only if its input is slow
 * again when replayed alone at normal priority; otherwise it is set aside, named in the log.
 */
function starvedTimeout(t, r) {
  if (!/libFuzzer: timeout/.test(r.out)) return false;
  const unit = (/Test unit written to (\S+)/.exec(r.out) ?? [])[1];
  if (!unit || !existsSync(unit)) return false;
  const t0 = Date.now();
  const again = run("chrt", ["-o", "0", path.join(out, "fuzz", t), "-runs=1", "-timeout=20", `-max_len=${MAX_LEN[t] ?? 16384}`, unit]);
  if (again.code !== 0) return false;
  const aside = path.join(out, "starved", t);
  mkdirSync(aside, { recursive: true });
  cpSync(unit, path.join(aside, path.basename(unit)));
  rmSync(unit);
  console.log(`${t}: a timeout under starvation (SCHED_IDLE); its input replays alone in ${Date.now() - t0} ms: not a finding (kept in ${aside})`);
  return true;
}

function reportFinding(t, r, found) {
  failed = true;
  console.error(r.out.slice(-8000));
  console.error(`FAIL ${t}: the campaign stopped on a finding; inputs in ${found}: ${filesOf(found).map((f) => path.basename(f)).join(" ")}`);
}

/** Minimizes the grown working corpus back into the committed one. */
function merge(t, isJs, work, corpus, env) {
  const merged = path.join(out, "merged", t);
  rmSync(merged, { recursive: true, force: true });
  mkdirSync(merged, { recursive: true });
  const m = isJs
    ? run(process.execPath, [path.join(here, "js/fuzz_js.mjs"), "--merge", t.slice(3), `--corpus=${work}`, `--into=${merged}`], { env })
    : run(path.join(out, "fuzz", t), ["-merge=1", `-max_len=${MAX_LEN[t] ?? 16384}`, merged, work], { env });
  if (m.code !== 0) { failed = true; console.error(m.out.slice(-4000)); return; }
  rmSync(corpus, { recursive: true, force: true });
  cpSync(merged, corpus, { recursive: true });
  console.log(`${t}: corpus minimized to ${filesOf(corpus).length} inputs`);
}
const summary = {};
const knownList = known();
const skipTokens = knownList.map((k) => k.token).join(",");

if (wanted.some((t) => nativeTargets.includes(t))) {
  console.log("building the sanitizer harnesses (make MODE=fuzz)...");
  // Two campaigns started together (one per CPU) would both link into build-fuzz at once:
  // flock makes the second wait and then find nothing to do.
  mkdirSync(out, { recursive: true });
  const b = run("flock", [path.join(out, "build.lock"), "make", "-C", here, "-j2", "MODE=fuzz"], { stdio: "inherit" });
  if (b.code !== 0) { console.error("build failed"); process.exit(1); }
}

for (const t of wanted) {
  const isJs = t.startsWith("js_");
  const corpus = path.join(here, "corpus", t);
  const crashDir = path.join(here, "crashes", t);
  const found = path.join(out, "crashes", t);
  mkdirSync(found, { recursive: true });
  const knownHere = new Map(knownList.filter((k) => k.file.startsWith(`${t}/`)).map((k) => [path.join(here, "crashes", k.file), k]));

  // 1. Replay under the sanitizer build: the corpus in one run, each crash input alone.
  // The corpus grew while campaigns stepped around the known bugs: it replays the same way;
  // a known crash input replays without that, to tell whether its fix has landed.
  const skipEnv = { ...process.env, VHOSTD_FUZZ_SKIP: skipTokens };
  const replayOne = (inputs, env = process.env) => isJs
    ? run(process.execPath, [path.join(here, "js/fuzz_js.mjs"), "--replay", t.slice(3), ...inputs], { env })
    : run(path.join(out, "fuzz", t), ["-runs=0", `-max_len=${MAX_LEN[t] ?? 16384}`, ...inputs], { env });
  const corpusFiles = filesOf(corpus);
  if (corpusFiles.length) {
    const r = replayOne([corpus], skipEnv);
    if (r.code !== 0) { failed = true; console.error(r.out.slice(-6000)); console.error(`FAIL ${t}: the corpus does not replay cleanly`); }
  }
  for (const f of filesOf(crashDir)) {
    const k = knownHere.get(f);
    const r = replayOne([f], k ? process.env : skipEnv);
    if (k) console.log(`${t}: known crash ${path.basename(f)} ${r.code === 0 ? "did not crash this time (remove it from crashes/KNOWN once its fix is merged)" : "still crashes"} (${k.why})`);
    else if (r.code !== 0) { failed = true; console.error(r.out.slice(-6000)); console.error(`FAIL ${t}: crash input ${f} crashes again`); }
  }
  console.log(`${t}: replayed ${corpusFiles.length} corpus and ${filesOf(crashDir).length} crash inputs`);
  if (args.replay) continue;

  // 2. The campaign, on a working copy of the corpus.
  const work = path.join(out, "work", t);
  mkdirSync(work, { recursive: true });
  for (const f of corpusFiles) cpSync(f, path.join(work, path.basename(f)));
  const env = skipEnv;
  if (cpuGoal) {
    // Rounds until the target had its CPU time; the tally survives an interrupted campaign.
    const stateFile = path.join(out, "campaign", `${t}.json`);
    mkdirSync(path.dirname(stateFile), { recursive: true });
    const hash = sourceHash(t, isJs);
    let st = existsSync(stateFile) ? JSON.parse(readFileSync(stateFile, "utf8")) : null;
    if (!st || st.sourceHash !== hash) st = { target: t, sourceHash: hash, started: new Date().toISOString(), cpuSeconds: 0, wallSeconds: 0, execs: 0, rounds: 0 };
    let found1 = false;
    while (st.cpuSeconds < cpuGoal && !found1) {
      const cpu0 = childCpuSeconds(), wall0 = Date.now();
      const r = fuzzOnce(t, isJs, work, found, env, seconds);
      st.cpuSeconds = Math.round((st.cpuSeconds + childCpuSeconds() - cpu0) * 10) / 10;
      st.wallSeconds += Math.round((Date.now() - wall0) / 1000);
      st.execs += Number.isFinite(r.execs) ? r.execs : 0;
      st.rounds++;
      Object.assign(st, { cov: r.cov, ft: r.ft, corpus: r.corpus, updated: new Date().toISOString() });
      writeFileSync(stateFile, JSON.stringify(st, null, 2));
      console.log(`${t}: round ${st.rounds}: ${st.cpuSeconds}/${cpuGoal} CPU-s (${st.wallSeconds} s wall), ${st.execs} execs, cov ${r.cov}, ft ${r.ft}, corpus ${r.corpus}${r.code ? `, EXIT ${r.code}` : ""}`);
      if (r.code !== 0 && !(!isJs && starvedTimeout(t, r))) {
        reportFinding(t, r, found);
        found1 = true; // this target stops; the next ones still run
      }
    }
    summary[t] = st;
    if (args.merge && !found1) merge(t, isJs, work, corpus, env);
    continue;
  }
  const r = fuzzOnce(t, isJs, work, found, env, seconds);
  summary[t] = { seconds, execs: r.execs, cov: r.cov, ft: r.ft, corpus: r.corpus, exit: r.code };
  console.log(`${t}: ${seconds}s, ${r.execs} execs, cov ${r.cov}, ft ${r.ft}, corpus ${r.corpus}${r.code ? `, EXIT ${r.code}` : ""}`);
  if (r.code !== 0) reportFinding(t, r, found);
  // 3. Minimize the grown corpus back into the committed one.
  else if (args.merge) merge(t, isJs, work, corpus, env);
}
if (!args.replay) writeFileSync(path.join(out, cpuGoal ? "campaign-summary.json" : "summary.json"), JSON.stringify(summary, null, 2));
console.log(failed ? "fuzz: FAILED" : "fuzz: ok");
process.exit(failed ? 1 : 0);
