// Every committed fuzz input (seed corpus and crash inputs, packages/native/fuzz/) replayed
// through its harness under the normal build: the native harnesses compiled with the usual
// compiler and -O2, no sanitizers (make MODE=replay); the JS targets in this very node. A crash
// input listed in crashes/KNOWN belongs to a fix made elsewhere: it is run and its state
// logged, not asserted, and the harnesses step around its bug (VHOSTD_FUZZ_SKIP) meanwhile. `pnpm fuzz` replays the same inputs under ASan+UBSan.
import test from "ava";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const fuzzDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../fuzz");
const replayDir = path.resolve(fuzzDir, "../build-fuzz/replay");

const filesOf = (dir: string): string[] =>
  existsSync(dir) ? readdirSync(dir).filter((f) => !f.startsWith(".")).sort().map((f) => path.join(dir, f)) : [];
const knownLines = readFileSync(path.join(fuzzDir, "crashes/KNOWN"), "utf8")
  .split("\n")
  .filter((l) => l.trim() && !l.startsWith("#"))
  .map((l) => l.trim().split(/\s+/));
const known = new Set(knownLines.map((w) => path.join(fuzzDir, "crashes", w[0]!)));
// The corpus grew while campaigns stepped around the known bugs: replay it the same way.
const skipEnv = { ...process.env, VHOSTD_FUZZ_SKIP: knownLines.map((w) => w[1]).join(",") };
const nativeTargets = readdirSync(fuzzDir).filter((f) => f.endsWith("_fuzz.cc")).map((f) => f.replace(/_fuzz\.cc$/, ""));

test.serial("native harnesses: every corpus and crash input replays cleanly under the normal build", (t) => {
  const b = spawnSync("make", ["-C", fuzzDir, "-j2", "MODE=replay"], { encoding: "utf8" });
  t.is(b.status, 0, `make MODE=replay failed:\n${b.stdout}${b.stderr}`);
  if (b.status !== 0) return;
  t.true(nativeTargets.length >= 6);
  for (const target of nativeTargets) {
    const corpus = filesOf(path.join(fuzzDir, "corpus", target));
    t.true(corpus.length > 0, `${target} has a seed corpus`);
    const crashes = filesOf(path.join(fuzzDir, "crashes", target));
    const inputs = [...corpus, ...crashes.filter((f) => !known.has(f))];
    const r = spawnSync(path.join(replayDir, target), inputs, { encoding: "utf8", maxBuffer: 64 << 20, env: skipEnv });
    t.is(r.status, 0, `${target}: ${r.signal ?? ""} ${r.stderr.split("\n").slice(-8).join("\n")}`);
    t.regex(r.stdout, new RegExp(`replayed ${inputs.length} inputs`));
    for (const f of crashes.filter((c) => known.has(c))) {
      const k = spawnSync(path.join(replayDir, target), [f], { encoding: "utf8" });
      t.log(`${target}: known crash ${path.basename(f)} ${k.status === 0 ? "did not crash this time (remove it from crashes/KNOWN once its fix is merged)" : "still crashes"}`);
    }
  }
});

test("JS targets: every corpus and crash input is accepted or refused with the decoder's own error", async (t) => {
  const { JS_TARGETS } = (await import(pathToFileURL(path.join(fuzzDir, "js/targets.mjs")).href)) as {
    JS_TARGETS: Record<string, (b: Buffer) => void>;
  };
  const names = Object.keys(JS_TARGETS);
  t.true(names.length >= 4); // vhost_user, mirror, sync, rpc
  for (const name of names) {
    const inputs = [...filesOf(path.join(fuzzDir, "corpus", `js_${name}`)), ...filesOf(path.join(fuzzDir, "crashes", `js_${name}`))];
    t.true(inputs.length > 0, `js_${name} has a seed corpus`);
    for (const f of inputs) t.notThrows(() => JS_TARGETS[name]!(readFileSync(f)), `js_${name} ${path.basename(f)}`);
  }
});
