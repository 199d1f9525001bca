// Runs node-gyp against the headers of the running Node, so nothing is downloaded.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const gyp = require.resolve("node-gyp/bin/node-gyp.js");
const nodedir = path.resolve(process.execPath, "../..");
const verb = process.argv[2] ?? "build";
const jobs = ["rebuild", "build"].includes(verb) ? ["-j", "max"] : [];
const r = spawnSync(process.execPath, [gyp, verb, `--nodedir=${nodedir}`, ...jobs, ...process.argv.slice(3)], { stdio: "inherit" });
process.exit(r.status ?? 1);
