// An addon built with ASan+UBSan into <package>/build-asan/ (the normal build/ stays as it is):
// every <src>/*.cc, as binding.gyp builds them, with clang and the shared sanitizer runtime.
//   node build-asan.mjs [--package DIR] [--name ADDON] [--src SUBDIR] [--include DIR]...
// Default: this package's production addon (cc/ into vhostd_native.node). Node is not
// instrumented, so the runtime is preloaded when the addon is used: pnpm run test:native:asan
// (scripts/test-native-asan.sh at the root) sets LD_PRELOAD, ASAN_OPTIONS and the env
// variables (VHOSTD_NATIVE_ADDON, ...) that make each package's native.ts load these builds.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const require = createRequire(import.meta.url);
const { values: args } = parseArgs({
  options: {
    package: { type: "string", default: path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..") },
    name: { type: "string", default: "vhostd_native" },
    src: { type: "string", default: "cc" },
    include: { type: "string", multiple: true, default: [] },
  },
});
const root = path.resolve(args.package);
const srcDir = path.join(root, args.src);
const includes = args.include.map((d) => path.resolve(root, d));
const out = path.join(root, "build-asan");
const cxx = ["clang++-14", "clang++"].find((c) => spawnSync(c, ["--version"]).status === 0);
if (!cxx) { console.error("build:asan needs clang (apt-get install clang-14 libclang-rt-14-dev)"); process.exit(1); }
const nodeInclude = path.resolve(process.execPath, "../../include/node");
const flags = ["-std=c++17", "-O1", "-g", "-fPIC", "-fno-omit-frame-pointer", "-fno-strict-aliasing",
  "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-shared-libasan",
  "-DNAPI_VERSION=8", "-DNAPI_CPP_EXCEPTIONS", `-I${nodeInclude}`, `-I${require("node-addon-api").include_dir}`,
  ...includes.map((d) => `-I${d}`)];
const objDir = path.join(out, "obj", args.name);
mkdirSync(objDir, { recursive: true });
const srcs = readdirSync(srcDir).filter((f) => f.endsWith(".cc"));
// An object is rebuilt when its source or any header (its own or an included directory's) is newer.
const headers = [srcDir, ...includes].flatMap((d) => readdirSync(d).filter((f) => f.endsWith(".h")).map((f) => path.join(d, f)));
const headersTime = Math.max(0, ...headers.map((h) => statSync(h).mtimeMs));
const jobs = srcs.map((f) => ({ src: path.join(srcDir, f), obj: path.join(objDir, f.replace(/\.cc$/, ".o")) }))
  .filter((j) => !existsSync(j.obj) || statSync(j.obj).mtimeMs < Math.max(headersTime, statSync(j.src).mtimeMs));
let failed = false;
async function worker() {
  for (let j; (j = jobs.shift()); ) {
    console.log(`asan: ${path.basename(j.src)}`);
    const code = await new Promise((res) => spawn(cxx, [...flags, "-c", "-o", j.obj, j.src], { stdio: "inherit" }).on("exit", res));
    if (code !== 0) failed = true;
  }
}
await Promise.all([worker(), worker()]);
if (failed) process.exit(1);
const objs = srcs.map((f) => path.join(objDir, f.replace(/\.cc$/, ".o")));
const addon = path.join(out, `${args.name}.node`);
const link = spawnSync(cxx, ["-shared", "-fsanitize=address,undefined", "-shared-libasan", "-o", addon, ...objs, "-lpthread"], { stdio: "inherit" });
if (link.status !== 0) process.exit(1);
console.log(`asan: ${addon}`);
