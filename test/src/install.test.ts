// scripts/install.sh and uninstall.sh, and the systemd units they install:
//  - a DESTDIR install has the documented layout, its units pass `systemd-analyze verify`
//    (inside the DESTDIR, so ExecStart= must point at the installed launchers) and say what
//    docs/operations.md says they say; uninstall leaves the DESTDIR empty;
//  - an install under a temporary prefix runs from the installed copy alone (cwd elsewhere, no
//    access to the repo's node_modules): --help, --version, the daemon serving RPC with the
//    installed native addon; a reinstall replaces it; uninstall removes everything it created.
import test from "ava";
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { repoRoot } from "./harness/paths.js";

const INSTALL = path.join(repoRoot, "scripts/install.sh");
const UNINSTALL = path.join(repoRoot, "scripts/uninstall.sh");
const NAMES = ["vfe-vhostd", "vfe-vhostd-ha", "vfe-vhost-cli"] as const;
const UNITS = ["vfe-vhostd.service", "vfe-vhostd-ha.service"] as const;

/** The environment of a user with nothing of the repo: no NODE_PATH, cwd outside it. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_PATH;
  delete env.DESTDIR;
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  return env;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: "utf8", cwd: opts.cwd ?? os.tmpdir(), env: opts.env ?? cleanEnv(), timeout: 120_000 });
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory() && !e.isSymbolicLink()) walk(p, out);
  }
  return out;
}

/** [Section] Key=Value pairs of a unit file (repeated keys kept in order). */
function unitKeys(text: string): Array<[string, string, string]> {
  const out: Array<[string, string, string]> = [];
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) section = m[1]!;
    else {
      const eq = line.indexOf("=");
      out.push([section, line.slice(0, eq), line.slice(eq + 1)]);
    }
  }
  return out;
}
const values = (keys: Array<[string, string, string]>, key: string) => keys.filter(([, k]) => k === key).map(([, , v]) => v);

test("install into a DESTDIR: layout, manifest, systemd-analyze verify of both units; uninstall leaves nothing", (t) => {
  const dest = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-destdir-"));
  try {
    // DESTDIR from the environment, as `make install` does.
    const r = run("bash", [INSTALL], { env: { ...cleanEnv(), DESTDIR: dest } });
    t.is(r.status, 0, r.stderr + r.stdout);
    t.regex(r.stdout, /DESTDIR install: systemd not touched/);
    const P = path.join(dest, "opt/vhostd");

    for (const n of NAMES) {
      const launcher = path.join(P, "bin", n);
      t.truthy(fs.statSync(launcher).mode & 0o111, `${n} is executable`);
      const text = fs.readFileSync(launcher, "utf8");
      t.regex(text, /^#!\/bin\/sh\n/);
      t.regex(text, new RegExp(`^exec '/[^']*node' '/opt/vhostd/lib/[^']+\\.js' "\\$@"$`, "m"), text);
      const target = /'(\/opt\/vhostd\/lib\/[^']+)'/.exec(text)![1]!;
      t.true(fs.existsSync(path.join(dest, target)), `${n} runs ${target}, which is installed`);
      t.is(fs.readlinkSync(path.join(dest, "usr/local/bin", n)), `/opt/vhostd/bin/${n}`);
    }
    const lib = path.join(P, "lib/node_modules/@vhostd");
    t.true(fs.existsSync(path.join(lib, "native/build/Release/vhostd_native.node")));
    t.deepEqual(fs.readdirSync(path.join(lib, "native/build/Release")), ["vhostd_native.node"]);
    for (const pkg of ["proto", "native", "runtime", "vhostd", "ha"]) {
      t.true(fs.existsSync(path.join(lib, pkg, "package.json")));
      t.true(fs.existsSync(path.join(lib, pkg, "dist/src/index.js")));
      for (const gone of ["src", "test", "dist/test", "cc", "tsconfig.json"]) t.false(fs.existsSync(path.join(lib, pkg, gone)), `${pkg}/${gone} not installed`);
    }
    for (const dep of ["pino", "lmdb", "zeromq", "msgpackr"]) t.true(fs.existsSync(path.join(P, "lib/node_modules/.pnpm/node_modules", dep)) || fs.existsSync(path.join(P, "lib/node_modules", dep)), dep);
    for (const dev of ["typescript", "ava", "node-gyp", "@types"]) t.false(fs.existsSync(path.join(P, "lib/node_modules/.pnpm/node_modules", dev)), `dev dependency ${dev} not installed`);
    t.true(fs.existsSync(path.join(P, "share/doc/vhostd/operations.md")));

    // Units: prefix substituted, the launchers, the documented semantics.
    const keys = new Map<string, Array<[string, string, string]>>();
    for (const u of UNITS) {
      const text = fs.readFileSync(path.join(dest, "etc/systemd/system", u), "utf8");
      t.false(text.includes("@PREFIX@"), u);
      const k = unitKeys(text);
      keys.set(u, k);
      const ha = u === "vfe-vhostd.service" ? " --ha" : ""; // vfe-vhostd runs as the keeper's partner
      t.deepEqual(values(k, "ExecStart"), [`/opt/vhostd/bin/${u.replace(".service", "")}${ha} --run-dir /run/vhostd --state-dir /var/lib/vhostd`]);
      for (const [key, v] of [
        ["Type", "notify"],
        ["NotifyAccess", "main"],
        ["Restart", "always"],
        ["RuntimeDirectory", "vhostd"],
        ["RuntimeDirectoryPreserve", "yes"],
        ["StateDirectory", "vhostd"],
        ["PrivateTmp", "no"],
        ["MemoryDenyWriteExecute", "no"],
      ] as const)
        t.deepEqual(values(k, key), [v], `${u}: ${key}`);
      t.true(Number(values(k, "LimitNOFILE")[0]) >= 65536, `${u}: LimitNOFILE`);
      t.regex(values(k, "WatchdogSec")[0] ?? "", /^\d+s$/);
      t.regex(values(k, "CapabilityBoundingSet")[0] ?? "", /CAP_NET_ADMIN/);
      // Restarting either daemon never stops or restarts the other.
      for (const strong of ["Requires", "BindsTo", "PartOf", "Requisite", "Upholds", "PropagatesStopTo", "StopPropagatedFrom"]) t.deepEqual(values(k, strong), [], `${u}: no ${strong}=`);
    }
    t.deepEqual(values(keys.get("vfe-vhostd.service")!, "Wants"), ["vfe-vhostd-ha.service"]);
    t.regex(values(keys.get("vfe-vhostd.service")!, "After")[0]!, /\bvfe-vhostd-ha\.service\b/);
    t.deepEqual(values(keys.get("vfe-vhostd-ha.service")!, "Before"), ["vfe-vhostd.service"]);
    t.deepEqual(values(keys.get("vfe-vhostd-ha.service")!, "Wants"), []);

    // The manifest lists exactly what is there.
    const manifest = fs.readFileSync(path.join(P, "share/vhostd/install-manifest"), "utf8").split("\n").filter((l) => l && !l.startsWith("#"));
    const listed = new Set(manifest.map((l) => path.join(dest, l.slice(2))));
    const present = walk(dest).filter((p) => !listed.has(p));
    // Directories the install needed but did not list would be parents that existed before: none in an empty DESTDIR.
    t.deepEqual(present, [], "everything installed is in the manifest");
    for (const p of listed) t.true(fs.existsSync(p) || fs.lstatSync(p).isSymbolicLink(), `${p} listed and present`);

    // systemd-analyze verify inside the DESTDIR (--root): it checks every directive and that
    // ExecStart= is an executable there. The root needs systemd's own units (sysinit.target...).
    const sa = run("systemd-analyze", ["--version"]);
    if (sa.error || sa.status !== 0) {
      t.log("systemd-analyze not found: units not verified");
    } else {
      const sys = path.join(dest, "usr/lib/systemd/system");
      fs.cpSync(fs.existsSync("/usr/lib/systemd/system") ? "/usr/lib/systemd/system" : "/lib/systemd/system", sys, { recursive: true, verbatimSymlinks: true });
      try {
        const v = run("systemd-analyze", ["verify", `--root=${dest}`, ...UNITS]);
        t.is(v.status, 0, v.stderr);
        t.is(v.stderr.trim(), "", "no warnings");
        // The check is real: without the launcher, verify fails.
        fs.renameSync(path.join(P, "bin/vfe-vhostd"), path.join(P, "bin/vfe-vhostd.away"));
        const bad = run("systemd-analyze", ["verify", `--root=${dest}`, "vfe-vhostd.service"]);
        t.not(bad.status, 0);
        t.regex(bad.stderr, /is not executable/);
        fs.renameSync(path.join(P, "bin/vfe-vhostd.away"), path.join(P, "bin/vfe-vhostd"));
      } finally {
        fs.rmSync(path.join(dest, "usr/lib"), { recursive: true, force: true });
      }
    }

    const u = run("bash", [UNINSTALL, "--destdir", dest]);
    t.is(u.status, 0, u.stderr + u.stdout);
    t.deepEqual(fs.readdirSync(dest), [], "uninstall leaves nothing");
  } finally {
    fs.rmSync(dest, { recursive: true, force: true });
  }
});

test("an install under a prefix runs from the installed copy alone; reinstall and uninstall", async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-prefix-"));
  const prefix = path.join(base, "opt/vhostd");
  const bindir = path.join(base, "bin");
  const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-cwd-"));
  try {
    const args = [INSTALL, "--prefix", prefix, "--bindir", bindir, "--no-systemd"];
    const r = run("bash", args);
    t.is(r.status, 0, r.stderr + r.stdout);
    t.false(fs.existsSync(path.join(base, "etc")));

    const exe = (n: string) => path.join(bindir, n);
    const help = run(exe("vfe-vhost-cli"), ["--help"], { cwd: elsewhere });
    t.is(help.status, 0, help.stderr);
    t.regex(help.stdout, /usage: vfe-vhost-cli/);
    const ver = run(exe("vfe-vhostd"), ["--version"], { cwd: elsewhere });
    t.is(ver.status, 0, ver.stderr);
    t.regex(ver.stdout, /^vhostd \d+\.\d+\.\d+/);
    const hv = run(exe("vfe-vhostd-ha"), ["--version"], { cwd: elsewhere });
    t.is(hv.status, 0, hv.stderr);
    t.regex(hv.stdout, /^vfe-vhostd-ha \d+\.\d+\.\d+/);

    // The installed daemon serves RPC, with the installed addon and nothing from the repo.
    const runDir = path.join(base, "run");
    const stateDir = path.join(base, "state");
    const d = spawn(exe("vfe-vhostd"), ["--run-dir", runDir, "--state-dir", stateDir], { cwd: elsewhere, env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    d.stdout!.on("data", (b) => (log += b));
    d.stderr!.on("data", (b) => (log += b));
    try {
      let v: SpawnSyncReturns<string> | undefined;
      for (let i = 0; i < 100; i++) {
        v = run(exe("vfe-vhost-cli"), ["--run-dir", runDir, "--timeout", "2", "version"], { cwd: elsewhere });
        if (v.status === 0) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      t.is(v!.status, 0, `${v!.stderr}\n${log}`);
      t.is(JSON.parse(v!.stdout).pid, d.pid);
      const maps = fs.readFileSync(`/proc/${d.pid}/maps`, "utf8");
      t.true(maps.includes(path.join(prefix, "lib")) && maps.includes("vhostd_native.node"), "the installed addon is loaded");
      t.false(maps.includes(repoRoot + "/"), "nothing is loaded from the repo");
    } finally {
      d.kill("SIGTERM");
      await new Promise((res) => (d.exitCode !== null ? res(undefined) : d.once("exit", res)));
    }

    // Reinstall over it: the earlier install is removed first, the result is the same.
    const before = walk(base).filter((p) => p.startsWith(prefix) || p.startsWith(bindir)).sort();
    const again = run("bash", args);
    t.is(again.status, 0, again.stderr + again.stdout);
    t.regex(again.stdout, /removing the earlier install/);
    t.deepEqual(walk(base).filter((p) => p.startsWith(prefix) || p.startsWith(bindir)).sort(), before);

    // Something of the operator's in the bin dir is never taken over.
    fs.rmSync(exe("vfe-vhost-cli"));
    fs.writeFileSync(exe("vfe-vhost-cli"), "mine\n");
    const clash = run("bash", args);
    t.not(clash.status, 0);
    t.regex(clash.stderr, /exists and is not ours/);
    fs.rmSync(exe("vfe-vhost-cli"));

    const u = run("bash", [UNINSTALL, "--prefix", prefix]);
    t.is(u.status, 0, u.stderr + u.stdout);
    t.false(fs.existsSync(path.join(base, "opt")), "the prefix and its parents created by install are gone");
    t.false(fs.existsSync(bindir));
    t.deepEqual(fs.readdirSync(base).sort(), ["run", "state"], "only the daemon's own data is left");
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
    fs.rmSync(elsewhere, { recursive: true, force: true });
  }
});
