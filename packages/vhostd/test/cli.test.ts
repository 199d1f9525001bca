// vfe-vhost-cli end to end against a vfe-vhostd child process in a temp run dir.
import test from "ava";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { checkResultShape, methodSpec, resultFields } from "@vhostd/proto";
import { generateCliDoc } from "../src/cli/gen_docs.js";

const PKG = join(dirname(fileURLToPath(import.meta.url)), "..", ".."); // packages/vhostd
const REPO = join(PKG, "..", "..");
const DAEMON = join(PKG, "bin", "vfe-vhostd.js");
const CLI = join(PKG, "bin", "vfe-vhost-cli.js");

interface Run {
  code: number | null;
  out: string;
  err: string;
  json?: Record<string, unknown>;
}

function cli(runDir: string, ...args: string[]): Run {
  const r = spawnSync(process.execPath, [CLI, "--run-dir", runDir, ...args], { encoding: "utf8", timeout: 20_000 });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    /* not JSON */
  }
  return { code: r.status, out: r.stdout, err: r.stderr, json };
}

async function startDaemon(extra: string[] = []): Promise<{ runDir: string; stateDir: string; child: ChildProcess; log: () => string }> {
  const base = mkdtempSync(join(tmpdir(), "vhostd-cli-"));
  const runDir = join(base, "run");
  const stateDir = join(base, "state");
  const child = spawn(process.execPath, [DAEMON, "--run-dir", runDir, "--state-dir", stateDir, ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout!.on("data", (d) => (log += d));
  child.stderr!.on("data", (d) => (log += d));
  const sock = join(runDir, "vfe-vhostd.sock");
  // Serving once the pid file is there too (written just after the socket listens).
  const ready = () => existsSync(sock) && existsSync(join(runDir, "vfe-vhostd.pid"));
  for (let i = 0; i < 200 && !ready(); i++) {
    if (child.exitCode !== null) throw new Error(`daemon exited: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!ready()) throw new Error(`daemon did not create ${sock} and its pid file: ${log}`);
  return { runDir, stateDir, child, log: () => log };
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const done = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  return done;
}

const shape = (t: import("ava").ExecutionContext, method: string, action: string, r: Run) =>
  t.deepEqual(checkResultShape(resultFields(methodSpec(method)!, action), r.json), [], `${method} ${action}: ${r.out}`);

test("daemon not running: exit 3 and the socket named on stderr", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vhostd-cli-"));
  const r = cli(dir, "version");
  t.is(r.code, 3);
  t.is(r.out, "");
  t.true(r.err.includes(join(dir, "vfe-vhostd.sock")), r.err);
  t.regex(r.err, /is vfe-vhostd running/);
});

test("usage errors exit 2 without contacting the daemon; --help on every verb", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vhostd-cli-"));
  for (const args of [[], ["bogus"], ["mgmtpf"], ["mgmtpf", "-a"], ["mgmtpf", "-a", "-r", "af:00.2"], ["vf", "-a"], ["vf", "-l"], ["vf", "-a", "af:04.5", "--mtu", "x"], ["vf", "-a", "af:04.5", "--mtu", "9001"], ["vf", "-a", "af:04.5", "-v", "rel"], ["vf", "-a", "af:04.5", "-u", "nope"], ["vf", "-a", "af:04.5", "--server", "--client"], ["vf", "-r", "af:04.5", "-q", "2"], ["vf", "-d", "af:04.5"], ["vf", "-i", "af:04.5", "-o", "3"], ["version", "extra"]]) {
    const r = cli(dir, ...args);
    t.is(r.code, 2, `${args.join(" ")}: ${r.err}`);
    t.regex(r.err, /usage: vfe-vhost-cli/);
  }
  for (const verb of ["version", "mgmtpf", "vf"]) {
    const r = cli(dir, verb, "--help");
    t.is(r.code, 0);
    t.regex(r.out, new RegExp(`^usage: vfe-vhost-cli ${verb} \\[-h\\]`));
  }
  const h = cli(dir, "-h");
  t.is(h.code, 0);
  t.regex(h.out, /mgmtpf +Management PF device/);
  t.regex(cli(dir, "vf", "-h").out, /-v vhost_socket +Vhost socket file name/);
});

test("vfe session end to end: JSON shapes, numbers, errno and exit codes", async (t) => {
  const d = await startDaemon();
  try {
    t.is(statSync(join(d.runDir, "vfe-vhostd.sock")).mode & 0o777, 0o600);
    t.is(readFileSync(join(d.runDir, "vfe-vhostd.pid"), "utf8").trim(), String(d.child.pid));

    const v = cli(d.runDir, "version");
    t.is(v.code, 0, v.err);
    shape(t, "version", "", v);
    t.like(v.json, { errno: 0, errstr: "Success", "vfe-vhostd-ha version": "Not Known Due to HA Disconnected" });
    t.is(v.json!.pid, d.child.pid);

    const l0 = cli(d.runDir, "mgmtpf", "-l");
    t.is(l0.code, 0);
    t.deepEqual(l0.json, { devices: [], errno: 0, errstr: "Success" });

    t.deepEqual(cli(d.runDir, "mgmtpf", "-a", "0000:af:00.2").json, { errno: 0, errstr: "Success" });
    const dupPf = cli(d.runDir, "mgmtpf", "-a", "0000:af:00.2");
    t.is(dupPf.code, 1);
    t.like(dupPf.json, { errno: -1008, errstr: "PF device already add" });
    t.regex(dupPf.err, /PF device already add/);

    const sock = join(d.runDir, "vhost-net0");
    const add = cli(d.runDir, "vf", "-a", "0000:af:04.5", "-v", sock, "-u", "123e4567-e89b-12d3-a456-426614174000", "-q", "2", "--mtu", "9000");
    t.is(add.code, 0, add.err + add.out);
    shape(t, "vf", "add", add);
    const dev = add.json!.device as Record<string, unknown>;
    t.like(dev, { vf: "0000:af:04.5", pf: "0000:af:00.2", socket_file: sock, mode: "client", queue_pairs: 2, queue_num: 4, msix_num: 6, mtu: 9000, vm_uuid: "123e4567-e89b-12d3-a456-426614174000" });
    t.is(typeof dev.mtu, "number");

    const blk = cli(d.runDir, "vf", "-a", "af:05.1");
    t.is(blk.code, 1);
    t.like(blk.json, { errno: -1001, errstr: "PF device not found" });

    const sockDup = cli(d.runDir, "vf", "-a", "0000:af:05.5", "-v", sock);
    t.is(sockDup.code, 1);
    t.like(sockDup.json, { errno: -1038, errstr: "Vhost socket file already exists" });

    // default socket and server mode
    const srv = cli(d.runDir, "vf", "-a", "af:05.5", "--server");
    t.is(srv.code, 0, srv.err);
    t.like(srv.json!.device, { socket_file: join(d.runDir, "vf-0000:af:05.5"), mode: "server" });

    const list = cli(d.runDir, "vf", "-l", "0000:af:00.2");
    t.is(list.code, 0);
    shape(t, "vf", "list", list);
    t.deepEqual((list.json!.devices as Array<{ vf: string }>).map((x) => x.vf), ["0000:af:04.5", "0000:af:05.5"]);

    const info = cli(d.runDir, "vf", "-i", "0000:af:04.5");
    t.is(info.code, 0);
    shape(t, "vf", "info", info);

    const table = cli(d.runDir, "-o", "table", "vf", "-l", "0000:af:00.2");
    t.is(table.code, 0);
    t.regex(table.out, /^VF +TYPE +STATE/);
    t.regex(table.out, /0000:af:04\.5 +net/);
    const kv = cli(d.runDir, "vf", "-i", "0000:af:04.5", "-o", "table");
    t.regex(kv.out, /socket_file +\S*vhost-net0/);
    t.regex(cli(d.runDir, "mgmtpf", "-l", "-d", "-o", "table").out, /0000:af:00\.2 +net +0 +2 +512 +0000:af:04\.5 +8 +35/);

    const rmPf = cli(d.runDir, "mgmtpf", "-r", "0000:af:00.2");
    t.is(rmPf.code, 1);
    t.like(rmPf.json, { errno: -1013, errstr: "Please remove all VF devices before remove PF" });

    t.is(cli(d.runDir, "vf", "-r", "0000:af:04.5").code, 0);
    t.is(cli(d.runDir, "vf", "-r", "0000:af:05.5").code, 0);
    const gone = cli(d.runDir, "vf", "-i", "0000:af:04.5");
    t.is(gone.code, 1);
    t.like(gone.json, { errno: -1003, errstr: "VF device not found" });
    t.deepEqual(cli(d.runDir, "vf", "-l", "0000:af:00.2").json, { devices: [], errno: 0, errstr: "Success" });
    t.is(cli(d.runDir, "mgmtpf", "-r", "0000:af:00.2").code, 0);
    t.like(cli(d.runDir, "mgmtpf", "-l", "0000:af:00.2").json, { errno: -1001 });
    await new Promise((r) => setTimeout(r, 300)); // spawnSync blocked our event loop: collect the daemon's output
    t.regex(d.log(), /"event":"vf_added".*"vf":"0000:af:04.5".*"socket":"[^"]*vhost-net0"/);
  } finally {
    t.is(await stop(d.child), 0);
  }
  t.false(existsSync(join(d.runDir, "vfe-vhostd.sock")));
  t.false(existsSync(join(d.runDir, "vfe-vhostd.pid")));
});

test("a second daemon on the same run dir refuses to start; bad flags and config fail clearly", async (t) => {
  const d = await startDaemon(["--server"]);
  try {
    const second = spawnSync(process.execPath, [DAEMON, "--run-dir", d.runDir, "--state-dir", d.stateDir], { encoding: "utf8", timeout: 20_000 });
    t.is(second.status, 1);
    t.regex(second.stderr, /already serving/);
    t.is(cli(d.runDir, "version").code, 0);
    // --server: new VFs listen by default
    cli(d.runDir, "mgmtpf", "-a", "0000:af:00.2");
    const r = cli(d.runDir, "vf", "-a", "0000:af:04.5");
    t.like(r.json?.device, { mode: "server", type: "net" }, r.out + r.err);
  } finally {
    t.is(await stop(d.child), 0);
  }
  const bad = spawnSync(process.execPath, [DAEMON, "--bogus"], { encoding: "utf8" });
  t.is(bad.status, 2);
  t.regex(bad.stderr, /unknown argument "--bogus"/);
  const base = mkdtempSync(join(tmpdir(), "vhostd-cli-"));
  const cfg = spawnSync(process.execPath, [DAEMON, "--run-dir", join(base, "r"), "--state-dir", join(base, "s"), "--config", join(base, "missing.json")], { encoding: "utf8" });
  t.is(cfg.status, 1);
  t.regex(cfg.stderr, /missing\.json: cannot read/);
  for (const v of ["abc", "-1", "1.5", "10000001"]) {
    const poll = spawnSync(process.execPath, [DAEMON, "--run-dir", join(base, "r"), "--state-dir", join(base, "s")], { encoding: "utf8", env: { ...process.env, VHOSTD_POLL_US: v }, timeout: 20_000 });
    t.not(poll.status, 0, `VHOSTD_POLL_US=${v}`);
    t.regex(poll.stdout + poll.stderr, /VHOSTD_POLL_US=.*must be an integer in 0\.\.10000000/);
  }
});

test("docs/cli.md is generated from the schema and up to date", (t) => {
  const committed = readFileSync(join(REPO, "docs", "cli.md"), "utf8");
  t.is(committed, generateCliDoc(), "run: node packages/vhostd/dist/src/cli/gen_docs.js docs/cli.md");
});
