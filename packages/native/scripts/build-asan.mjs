// The addon built with ASan+UBSan into build-asan/ (the normal build/ stays as it is): every
// cc/*.cc, as binding.gyp builds them, with clang and the shared sanitizer runtime. Node is
// not instrumented, so the runtime is preloaded when the addon is used:
//   pnpm run test:native:asan (scripts/test-native-asan.sh) sets LD_PRELOAD, ASAN_OPTIONS and
//   VHOSTD_NATIVE_ADDON=<this build>, which src/native.ts loads instead of build/Release.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.join(root, "build-asan");
const cxx = ["clang++-14", "clang++"].find((c) => spawnSync(c, ["--version"]).status === 0);
if (!cxx) { console.error("build:asan needs clang (apt-get install clang-14 libclang-rt-14-dev)"); process.exit(1); }
const nodeInclude = path.resolve(process.execPath, "../../include/node");
const flags = ["-std=c++17", "-O1", "-g", "-fPIC", "-fno-omit-frame-pointer", "-fno-strict-aliasing",
  "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-shared-libasan",
  "-DNAPI_VERSION=8", "-DNAPI_CPP_EXCEPTIONS", `-I${nodeInclude}`, `-I${require("node-addon-api").include_dir}`];
mkdirSync(path.join(out, "obj"), { recursive: true });
const srcs = readdirSync(path.join(root, "cc")).filter((f) => f.endsWith(".cc"));
// An object is rebuilt when its source or any header is newer.
const headersTime = Math.max(...readdirSync(path.join(root, "cc")).filter((f) => f.endsWith(".h")).map((f) => statSync(path.join(root, "cc", f)).mtimeMs));
const jobs = srcs.map((f) => ({ src: path.join(root, "cc", f), obj: path.join(out, "obj", f.replace(/\.cc$/, ".o")) }))
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
const objs = srcs.map((f) => path.join(out, "obj", f.replace(/\.cc$/, ".o")));
const link = spawnSync(cxx, ["-shared", "-fsanitize=address,undefined", "-shared-libasan", "-o", path.join(out, "vhostd_native.node"), ...objs, "-lpthread"], { stdio: "inherit" });
if (link.status !== 0) process.exit(1);
console.log(`asan: ${path.join(out, "vhostd_native.node")}`);
