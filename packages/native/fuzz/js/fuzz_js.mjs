// A coverage-guided fuzzer for the TypeScript decoders (js/targets.mjs), on V8's own precise
// block coverage (node:inspector, Profiler.startPreciseCoverage with call counts): no source
// instrumentation, the compiled dist/ code runs exactly as in the daemons.
//
// Why our own: Jazzer.js, the npm fuzzer for Node, ships its libFuzzer addon prebuilt for
// glibc >= 2.38 (its 4.x; Debian 12 has 2.36) and its 2.x builds from source by downloading
// LLVM sources at install time, which this project's machines cannot; jsfuzz instruments
// CommonJS only (our packages are ESM). The loop below is libFuzzer's idea in small: keep an
// input when it reaches a new (block, hit-count bucket) feature of the decoder modules;
// mutate kept inputs by bit/byte/width edits, splices, crossover and dictionary tokens.
//
//   node fuzz_js.mjs --fuzz TARGET --time=S --corpus=DIR --artifacts=DIR/  (grows DIR)
//   node fuzz_js.mjs --replay TARGET FILE|DIR...                          (exit 1 on a finding)
//   node fuzz_js.mjs --merge TARGET --corpus=DIR --into=DIR               (minimal set, same features)
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import inspector from "node:inspector";
import path from "node:path";

import { DICTIONARY, JS_TARGETS } from "./targets.mjs";

const argv = process.argv.slice(2);
const mode = argv[0]?.replace(/^--/, "");
const name = argv[1];
const opt = Object.fromEntries(argv.slice(2).filter((a) => a.startsWith("--")).map((a) => a.slice(2).split("=")));
const files = argv.slice(2).filter((a) => !a.startsWith("--"));
const target = JS_TARGETS[name];
if (!target || !["fuzz", "replay", "merge"].includes(mode)) {
  console.error(`usage: fuzz_js.mjs --fuzz|--replay|--merge TARGET (${Object.keys(JS_TARGETS).join(", ")}) ...`);
  process.exit(2);
}
const MAX_LEN = Number(opt.max_len ?? 4096);

function inputsOf(p) {
  if (!existsSync(p)) return [];
  if (!statSync(p).isDirectory()) return [p];
  return readdirSync(p).filter((f) => !f.startsWith(".")).sort().map((f) => path.join(p, f));
}

// ---- coverage ------------------------------------------------------------------------------
const session = new inspector.Session();
session.connect();
function post(method, params) {
  let out, err, done = false;
  session.post(method, params, (e, r) => { err = e; out = r; done = true; });
  if (!done) throw new Error(`inspector ${method} did not answer synchronously`);
  if (err) throw err;
  return out;
}
post("Profiler.enable");
post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
const ranges = new Set();  // distinct blocks reached ("cov"; features add the count bucket)
const isOurs = (url) => url.includes("/packages/proto/dist/") || url.includes("/msgpackr/");

// V8 reports, per called function, its range and the blocks whose count differs from the
// enclosing range's (a block run as often as its parent is not listed; one never run is, with
// 0). So a block's count is that of the innermost listed range around it, and the blocks of a
// function are all the ranges ever listed for it: remembered here across runs.
const blocksOf = new Map();  // function id -> Map(block id -> [start, end])

/** Features of one run: (block, log2 bucket of its count) for each block that ran. */
function features() {
  const { result } = post("Profiler.takePreciseCoverage");  // also resets the counts
  const fs = [];
  for (const s of result) {
    if (!isOurs(s.url)) continue;
    const sid = Number(s.scriptId) * 2 ** 21;
    for (const fn of s.functions) {
      const rs = fn.ranges;
      if (rs.length === 0 || rs[0].count === 0) continue;
      const fid = sid + rs[0].startOffset;
      let blocks = blocksOf.get(fid);
      if (!blocks) blocksOf.set(fid, (blocks = new Map()));
      for (const r of rs) blocks.set(r.startOffset * 2 ** 21 + r.endOffset, [r.startOffset, r.endOffset]);
      for (const [bid, [b0, b1]] of blocks) {
        let count = 0, span = Infinity;
        for (const r of rs)
          if (r.startOffset <= b0 && b1 <= r.endOffset && r.endOffset - r.startOffset < span) { span = r.endOffset - r.startOffset; count = r.count; }
        if (count === 0) continue;
        const block = (fid * 1000003 + bid) % 2 ** 48;  // a hash: collisions are rare enough
        ranges.add(block);
        fs.push(block * 16 + (count >= 128 ? 8 : 32 - Math.clz32(count)));
      }
    }
  }
  return fs;
}

/** Runs one input; returns its features, or throws the finding. (The counts were reset by
 *  the previous run's takePreciseCoverage; nothing else runs in between.) */
function execute(buf) {
  target(buf);
  return features();
}

function report(e, buf, artifacts) {
  console.error(`FINDING in ${name}: ${e?.stack ?? e}`);
  console.error(`input (${buf.length} bytes, base64): ${buf.toString("base64")}`);
  if (artifacts) {
    const f = `${artifacts}crash-${createHash("sha1").update(buf).digest("hex")}`;
    mkdirSync(path.dirname(f), { recursive: true });
    writeFileSync(f, buf);
    console.error(`written to ${f}`);
  }
}

// ---- replay --------------------------------------------------------------------------------
if (mode === "replay") {
  let n = 0;
  for (const p of files)
    for (const f of inputsOf(p)) {
      const buf = readFileSync(f);
      try { target(buf); } catch (e) { report(e, buf); console.error(`in ${f}`); process.exit(1); }
      n++;
    }
  console.log(`replayed ${n} inputs`);
  process.exit(0);
}

// ---- merge ---------------------------------------------------------------------------------
if (mode === "merge") {
  const seen = new Set();
  features();
  const all = inputsOf(opt.corpus).map((f) => readFileSync(f)).sort((a, b) => a.length - b.length);
  mkdirSync(opt.into, { recursive: true });
  let kept = 0;
  for (const buf of all) {
    const fs = execute(buf);
    if (fs.some((x) => !seen.has(x))) {
      fs.forEach((x) => seen.add(x));
      writeFileSync(path.join(opt.into, createHash("sha1").update(buf).digest("hex")), buf);
      kept++;
    }
  }
  console.log(`merge: ${kept} of ${all.length} inputs kept, ft: ${seen.size}`);
  process.exit(0);
}

// ---- fuzz ----------------------------------------------------------------------------------
let seed = Number(opt.seed ?? Date.now()) >>> 0;
function rnd(n) {  // xorshift32
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed % n;
}
const dict = (DICTIONARY[name] ?? []).map((s) => Buffer.from(s));
const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x40, 0xc0, 0xc1, 0xd9, 0xdc, 0xde, 0xcf];

function mutate(src, other) {
  let b = Buffer.from(src);
  const steps = 1 + rnd(4);
  for (let s = 0; s < steps; s++) {
    const at = b.length ? rnd(b.length) : 0;
    switch (rnd(11)) {
      case 0: if (b.length) b[at] ^= 1 << rnd(8); break;
      case 1: if (b.length) b[at] = INTERESTING[rnd(INTERESTING.length)]; break;
      case 2: if (b.length) b[at] = rnd(256); break;
      case 3: if (b.length) b[at] = (b[at] + (rnd(2) ? 1 : 255)) & 0xff; break;
      case 4: b = Buffer.concat([b.subarray(0, at), Buffer.from([rnd(256)]), b.subarray(at)]); break;
      case 5: if (b.length > 1) { const n = 1 + rnd(Math.min(16, b.length - at)); b = Buffer.concat([b.subarray(0, at), b.subarray(at + n)]); } break;
      case 6: if (b.length) { const n = 1 + rnd(Math.min(32, b.length - at)); const to = rnd(b.length); b = Buffer.concat([b.subarray(0, to), b.subarray(at, at + n), b.subarray(to)]); } break;
      case 7: if (b.length >= 4) { const w = [2, 4][rnd(2)]; const o = rnd(b.length - w + 1); const v = [0, 1, 0xff, 0x7f, 0x80, rnd(65536)][rnd(6)]; w === 2 ? b.writeUInt16LE(v & 0xffff, o) : b.writeUInt32LE(v >>> 0, o); } break;
      case 8: if (dict.length) { const t = dict[rnd(dict.length)]; b = Buffer.concat([b.subarray(0, at), t, b.subarray(rnd(2) ? at : Math.min(b.length, at + t.length))]); } break;
      case 9: if (other && other.length) { const o = rnd(other.length); const n = 1 + rnd(other.length - o); b = Buffer.concat([b.subarray(0, at), other.subarray(o, o + n), b.subarray(at + (rnd(2) ? n : 0))]); } break;
      case 10: if (b.length) b = b.subarray(0, at); break;
    }
  }
  return b.length > MAX_LEN ? b.subarray(0, MAX_LEN) : b;
}

const seconds = Number(opt.time ?? 60);
const corpusDir = opt.corpus;
mkdirSync(corpusDir, { recursive: true });
const seen = new Set();
const corpus = [];
const keep = (buf, fs, write) => {
  let fresh = false;
  for (const x of fs) if (!seen.has(x)) { seen.add(x); fresh = true; }
  if (!fresh) return false;
  corpus.push(buf);
  if (write) writeFileSync(path.join(corpusDir, createHash("sha1").update(buf).digest("hex")), buf);
  return true;
};
const tryOne = (buf, write) => {
  const t0 = performance.now();
  let fs;
  try { fs = execute(buf); } catch (e) { report(e, buf, opt.artifacts); process.exit(1); }
  const ms = performance.now() - t0;
  if (ms > 2000) {
    // Wall time: on a shared machine the process may just have been descheduled. A finding
    // only when the input is slow again, run alone.
    const t1 = performance.now();
    target(buf);
    features();
    const again = performance.now() - t1;
    if (again > 1000) { report(new Error(`slow input: ${ms.toFixed(0)} ms, then ${again.toFixed(0)} ms`), buf, opt.artifacts); process.exit(1); }
  }
  return keep(buf, fs, write);
};
features();  // drop the counts of module loading
for (const f of inputsOf(corpusDir)) tryOne(readFileSync(f), false);
if (corpus.length === 0) tryOne(Buffer.alloc(0), true);
console.log(`#0 INITED cov: ${ranges.size} ft: ${seen.size} corp: ${corpus.length}`);
const end = Date.now() + seconds * 1000;
let execs = 0, lastPrint = Date.now();
while (Date.now() < end) {
  for (let i = 0; i < 64; i++) {
    const base = corpus[rnd(corpus.length)];
    const other = corpus[rnd(corpus.length)];
    execs++;
    if (tryOne(mutate(base, other), true)) console.log(`#${execs} NEW cov: ${ranges.size} ft: ${seen.size} corp: ${corpus.length}`);
  }
  if (Date.now() - lastPrint > 10_000) {
    lastPrint = Date.now();
    console.log(`#${execs} pulse cov: ${ranges.size} ft: ${seen.size} corp: ${corpus.length}`);
  }
}
const bytes = corpus.reduce((a, b) => a + b.length, 0);
console.log(`#${execs} DONE cov: ${ranges.size} ft: ${seen.size} corp: ${corpus.length}/${bytes}b`);
console.log(`stat::number_of_executed_units: ${execs}`);
