// Runs node-gyp against the headers of the running Node, so nothing is downloaded.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const gyp = require.resolve("node-gyp/bin/node-gyp.js");
const nodedir = path.resolve(process.execPath, "../..");
const verb = process.argv[2] ?? "build";
const jobs = ["rebuild", "build"].includes(verb) ? ["-j", "max"] : [];
const gypRun = (v, extra = []) => spawnSync(process.execPath, [gyp, v, `--nodedir=${nodedir}`, ...extra], { stdio: "inherit" }).status ?? 1;

// binding.gyp lists cc/*.cc when it is configured: a checkout that added a source file since
// must configure again, or the addon links without it (undefined symbol at load).
if (verb === "build") {
  const here = path.dirname(new URL(import.meta.url).pathname);
  const mk = path.resolve(here, "../build/vhostd_native.target.mk");
  const listed = existsSync(mk) ? readFileSync(mk, "utf8") : "";
  const stale = readdirSync(path.resolve(here, "../cc")).some((f) => f.endsWith(".cc") && !listed.includes(`cc/${f.replace(/\.cc$/, "")}.o`));
  if (stale && gypRun("configure") !== 0) process.exit(1);
}
process.exit(gypRun(verb, [...jobs, ...process.argv.slice(3)]));
