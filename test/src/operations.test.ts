// What an operator scripts against a running daemon: stats (with rates), OpenMetrics scraped
// and parsed strictly, config save then load into a fresh daemon giving identical devices,
// loading twice changing nothing, bash completion, and script mode (commands on stdin).
import test from "ava";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { FrontendDriver } from "@vhostd/native";
import { Daemon, waitFor } from "./harness/daemon.js";
import { cliBin, vhostdBin } from "./harness/paths.js";

const PF = "0000:af:00.2";
const VF_A = "0000:af:04.5";
const VF_B = "0000:af:05.5";

/** A strict OpenMetrics text parser: families declared once, samples of declared families only. */
function parseOpenMetrics(text: string): Map<string, Array<{ labels: Record<string, string>; value: number }>> {
  const lines = text.split("\n");
  if (lines.pop() !== "" || lines.pop() !== "# EOF") throw new Error("must end with '# EOF\\n'");
  const types = new Map<string, string>();
  const samples = new Map<string, Array<{ labels: Record<string, string>; value: number }>>();
  for (const l of lines) {
    let m = /^# (TYPE|HELP) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(l);
    if (m) {
      if (m[1] === "TYPE") {
        if (types.has(m[2]!)) throw new Error(`family ${m[2]} declared twice`);
        if (!["counter", "gauge", "info", "stateset", "histogram", "summary", "unknown"].includes(m[3]!)) throw new Error(`bad type ${m[3]}`);
        types.set(m[2]!, m[3]!);
      }
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+]+|NaN|[+-]Inf)$/.exec(l);
    if (!m) throw new Error(`not a sample: ${l}`);
    const name = m[1]!;
    const family = types.has(name) ? name : name.replace(/_total$/, "");
    const type = types.get(family);
    if (!type) throw new Error(`sample ${name} of an undeclared family`);
    if (type === "counter" && !name.endsWith("_total")) throw new Error(`counter sample ${name} must end in _total`);
    const labels: Record<string, string> = {};
    for (const part of (m[3] ?? "").match(/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"/g) ?? []) {
      const eq = part.indexOf("=");
      labels[part.slice(0, eq)] = part.slice(eq + 2, -1);
    }
    const list = samples.get(name) ?? [];
    list.push({ labels, value: Number(m[4]) });
    samples.set(name, list);
  }
  return samples;
}

test.serial("stats with rates, OpenMetrics, config save/load, completion, script mode", async (t) => {
  const port = 20000 + (process.pid % 20000);
  const d = await Daemon.start({ args: ["--metrics", `127.0.0.1:${port}`] });
  let a: FrontendDriver | undefined;
  let b: FrontendDriver | undefined;
  let fresh: Daemon | undefined;
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    const aP = FrontendDriver.listen(d.sock("a"), { connectTimeoutMs: 10_000 });
    const bP = FrontendDriver.listen(d.sock("b"), { connectTimeoutMs: 10_000 });
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a"), "--mtu", "9000", "-u", "5a8f3c2e-8f4e-4d0e-9a50-3c3c3c3c3c3c"]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
    [a, b] = await Promise.all([aP, bP]);
    await Promise.all([a.handshake(), b.handshake()]);
    b.device.startRx(0);
    a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: 256, count: 200_000, ratePps: 5000, streamId: 1 });
    await waitFor(() => b!.device.stats(0).rxPackets > 500, 10_000, "traffic");

    // stats, with and without rates, both output modes.
    const st = await d.ok(["stats"]);
    t.is(st.interval_ms, 0);
    const sa = st.devices.find((v: { vf: string }) => v.vf === VF_A);
    t.true(sa.tx_packets > 0, "A's frames counted on its TX queue");
    t.is(sa.queues[1].dir, "tx");
    const rated = await d.ok(["stats", VF_B, "-t", "300"]);
    t.is(rated.devices.length, 1);
    t.true(rated.devices[0].rx_pps > 1000 && rated.devices[0].rx_pps < 20000, `B receives ~5000 pps (${rated.devices[0].rx_pps})`);
    const tbl = await d.cli(["stats", "-o", "table"]);
    t.is(tbl.code, 0);
    t.regex(tbl.stdout, /RX_PACKETS/);
    t.is((await d.cli(["stats", "-t", "20000"])).code, 2, "an interval beyond 10 s is a usage error");

    // OpenMetrics.
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    t.is(res.headers.get("content-type"), "application/openmetrics-text; version=1.0.0; charset=utf-8");
    const samples = parseOpenMetrics(await res.text());
    t.is(samples.get("vhostd_vfs")?.[0]?.value, 2);
    const txA = samples.get("vhostd_queue_packets_total")!.find((s) => s.labels.vf === VF_A && s.labels.dir === "tx");
    t.true((txA?.value ?? 0) > 0, "per-queue counters exported");
    t.is(samples.get("vhostd_build_info")?.[0]?.labels.mode, "standalone");
    t.is((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
    const refused = spawnSync(process.execPath, [vhostdBin, "--run-dir", fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-m-")), "--metrics", "0.0.0.0:9100"], { encoding: "utf8", timeout: 20_000 });
    t.not(refused.status, 0, "a non-loopback metrics address is refused");
    t.regex(refused.stderr + refused.stdout, /only 127\.0\.0\.1:PORT/);

    // config save -> load into a fresh daemon -> the same devices; loading again changes nothing.
    const file = path.join(d.dir, "saved.json");
    const saved = await d.ok(["config", "save", "-f", file]);
    t.is(saved.vfs, 2);
    const cfgText = fs.readFileSync(file, "utf8");
    t.deepEqual((await d.cli(["config", "save"])).json, JSON.parse(cfgText), "stdout and file agree");
    fresh = await Daemon.start();
    const load = await fresh.ok(["config", "load", file]);
    t.is(load.added, 3);
    t.is(load.failed, 0);
    t.deepEqual((await fresh.cli(["config", "save"])).json, JSON.parse(cfgText), "the fresh daemon's configuration is identical");
    const strip = (l: Array<Record<string, unknown>>) => l.map(({ vf, socket_file, mac, mtu, mode, vm_uuid, queue_pairs, dev_id, switch_id, type }) => ({ vf, socket_file, mac, mtu, mode, vm_uuid, queue_pairs, dev_id, switch_id, type }));
    t.deepEqual(strip((await fresh.ok(["vf", "-l", PF])).devices), strip((await d.ok(["vf", "-l", PF])).devices), "vf -l identical but for the live session");
    const again = await fresh.ok(["config", "load", file]);
    t.is(again.unchanged, 3, "loading the same file again changes nothing");
    const conflict = JSON.parse(cfgText);
    conflict.vfs[0].mtu = 1400;
    fs.writeFileSync(file, JSON.stringify(conflict));
    const bad = await fresh.cli(["config", "load", file]);
    t.is(bad.code, 1, "a different configuration for a running VF fails that item");
    t.is(bad.json.failed, 1);
    fs.writeFileSync(file, "{nope");
    t.is((await fresh.cli(["config", "load", file])).code, 2);

    // bash completion, generated from the schema.
    const comp = await d.cli(["completion", "bash"]);
    t.is(comp.code, 0);
    t.regex(comp.stdout, /complete -F _vfe_vhost_cli vfe-vhost-cli/);
    t.regex(comp.stdout, /stats\) words=/);
    t.is(spawnSync("bash", ["-n"], { input: comp.stdout }).status, 0, "the script parses");

    // Script mode: several lines on stdin, errors do not stop later lines.
    const script = `version\n# a comment\n\nmgmtpf -l\nvf -i 0000:af:09.5\nvf -l ${PF}\n`;
    const r = spawnSync(process.execPath, [cliBin], { input: script, encoding: "utf8", env: { ...process.env, VHOSTD_RUN_DIR: d.runDir }, timeout: 30_000 });
    t.is(r.status, 1, "the worst line's exit status");
    const docs = r.stdout.split(/\n(?=\{)/).map((s) => JSON.parse(s));
    t.is(docs.length, 4, "every command line ran, in order");
    t.truthy(docs[0]["vfe-vhostd version"]);
    t.is(docs[3].devices.length, 2);
  } finally {
    a?.close();
    b?.close();
    await fresh?.stop();
    await d.stop();
  }
});

test.serial("every verb against a running pair: results match the schema's shapes, -o table works, every rule's errno and exit status", async (t) => {
  const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-ops-cfg-"));
  const cfg = path.join(cfgDir, "config.json");
  fs.writeFileSync(cfg, JSON.stringify({ pfs: [{ dev: PF, type: "net", firstVfOffset: 35, numVfs: 8, maxQueuePairs: 2 }] }));
  const d = await Daemon.start({ ha: true, args: ["--config", cfg] });
  const { checkResultShape, methodSpec, resultFields } = await import("@vhostd/proto");
  try {
    const ok = async (args: string[], method: string, action: string) => {
      const r = await d.cli(args);
      t.is(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      t.deepEqual(checkResultShape(resultFields(methodSpec(method)!, action), r.json), [], `${args.join(" ")} matches the schema`);
      if (!["add", "remove"].includes(action)) {
        const tbl = await d.cli([...args, "-o", "table"]); // read-only verbs run again as a table
        t.is(tbl.code, 0, `${args.join(" ")} -o table`);
        t.true(tbl.stdout.length > 0);
      }
      return r.json;
    };
    const fails = async (args: string[], errno: number) => {
      const r = await d.cli(args);
      t.is(r.code, 1, `${args.join(" ")} exits 1`);
      t.is(r.json?.errno, errno, `${args.join(" ")} -> errno ${errno}: ${r.stdout}`);
      const tbl = await d.cli([...args, "-o", "table"]);
      t.is(tbl.code, 1);
      t.regex(tbl.stderr, new RegExp(`errno ${errno}`), "the table mode says the errno on stderr");
    };
    await ok(["version"], "version", "");
    await ok(["mgmtpf", "-a", PF], "mgmtpf", "add");
    await ok(["mgmtpf", "-l"], "mgmtpf", "list");
    await ok(["mgmtpf", "-l", PF, "-d"], "mgmtpf", "list");
    await ok(["vf", "-a", VF_A, "-v", d.sock("a"), "--server"], "vf", "add");
    await ok(["vf", "-l", PF], "vf", "list");
    await ok(["vf", "-i", VF_A], "vf", "info");
    await ok(["state"], "state", "show");
    await ok(["state", VF_A], "state", "show");
    await ok(["stats"], "stats", "show");
    await ok(["stats", VF_A, "-t", "50"], "stats", "show");
    await ok(["ha", "status"], "ha", "status");

    await fails(["mgmtpf", "-a", PF], -1008);
    await fails(["mgmtpf", "-a", VF_A], -19);
    await fails(["vf", "-a", "0000:ff:00.1", "-v", d.sock("x")], -19);
    await fails(["vf", "-a", VF_A, "-v", d.sock("a2")], -1014);
    await fails(["vf", "-a", VF_B, "-v", d.sock("a")], -1038);
    const mac = (await d.ok(["vf", "-i", VF_A])).device.mac as string;
    await fails(["vf", "-a", VF_B, "-v", d.sock("b"), "--mac", mac.toLowerCase()], -17);
    await fails(["vf", "-a", VF_B, "-v", d.sock("b"), "-q", "4"], -1005);
    await fails(["mgmtpf", "-r", PF], -1013);
    await fails(["vf", "-r", VF_B], -1003);
    await fails(["vf", "-l", "0000:b0:00.2"], -1001);
    await fails(["state", VF_B], -1003);
    // Schema violations are refused before the daemon is asked: usage error, exit 2.
    for (const args of [["vf", "-a", VF_B, "--mtu", "20"], ["vf", "-a", VF_B, "-u", "not-a-uuid"], ["stats", "-t", "-1"], ["ha", "bogus"]]) {
      t.is((await d.cli(args)).code, 2, `${args.join(" ")} is a usage error`);
    }
    await ok(["vf", "-r", VF_A], "vf", "remove");
    await ok(["mgmtpf", "-r", PF], "mgmtpf", "remove");
  } finally {
    await d.stop();
    fs.rmSync(cfgDir, { recursive: true, force: true });
  }
});
