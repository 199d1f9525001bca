// What an operator scripts against a running daemon: stats (with rates), OpenMetrics scraped
// and parsed strictly, config save then load into a fresh daemon giving identical devices,
// loading twice changing nothing, bash completion, and script mode (commands on stdin).
import test from "ava";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { FrontendDriver } from "@vhostd/frontend";
import { Daemon, waitFor } from "./harness/daemon.js";
import { cliBin, vhostdBin } from "./harness/paths.js";

const PF = "0000:af:00.2";
const VF_A = "0000:af:04.5";
const VF_B = "0000:af:05.5";

/**
 * A strict parser of OpenMetrics 1.0 text: `# EOF` last; TYPE once per family and before its
 * samples; families neither interleaved nor repeated; names, label names and label-value
 * escapes well-formed; no duplicate label sets; counter samples `_total` (or `_created`) and
 * non-negative; info samples `_info` with value 1; gauge samples named as their family.
 * Returns the samples by sample name; throws on the first problem.
 */
function parseOpenMetrics(text: string): Map<string, Array<{ labels: Record<string, string>; value: number }>> {
  const TYPES = new Set(["counter", "gauge", "info", "stateset", "histogram", "gaugehistogram", "summary", "unknown"]);
  if (!text.endsWith("# EOF\n")) throw new Error("must end with '# EOF\\n'");
  const lines = text.slice(0, -"# EOF\n".length).split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const types = new Map<string, string>();
  const done = new Set<string>();
  const samples = new Map<string, Array<{ labels: Record<string, string>; value: number }>>();
  const seen = new Set<string>();
  let cur: string | undefined;
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1} ${JSON.stringify(line)}`;
    let m = /^# (TYPE|HELP|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/.exec(line);
    if (m) {
      const [, kind, name, rest] = m;
      if (cur !== name) {
        if (cur) done.add(cur);
        if (done.has(name!)) throw new Error(`${where}: family ${name} interleaved or repeated`);
        cur = name;
      }
      if ([...seen].some((k) => k.startsWith(`${name}\0`))) throw new Error(`${where}: metadata after samples`);
      if (kind === "TYPE") {
        if (types.has(name!)) throw new Error(`${where}: family ${name} declared twice`);
        if (!TYPES.has(rest ?? "")) throw new Error(`${where}: bad type`);
        types.set(name!, rest!);
      } else if (kind === "HELP" && /\\[^\\n"]/.test(rest ?? "")) throw new Error(`${where}: bad escape in HELP`);
      continue;
    }
    if (line.startsWith("#") || line === "") throw new Error(`${where}: not allowed`);
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`${where}: not a sample`);
    const [, name, body, vtext] = m;
    if (!cur || !types.has(cur)) throw new Error(`${where}: sample before its family's TYPE`);
    const type = types.get(cur)!;
    const suffixes = type === "counter" ? ["_total", "_created"] : type === "info" ? ["_info"] : type === "gauge" ? [""] : ["", "_total", "_bucket", "_count", "_sum", "_created"];
    if (!suffixes.some((x) => name === cur + x)) throw new Error(`${where}: ${name} is not a sample of ${type} family ${cur}`);
    const labels: Record<string, string> = {};
    if (body) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
      for (let pos = 0; pos < body.length; ) {
        re.lastIndex = pos;
        const lm = re.exec(body);
        if (!lm) throw new Error(`${where}: bad label at ${pos}`);
        if (lm[1]! in labels) throw new Error(`${where}: label ${lm[1]} twice`);
        labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
        pos = re.lastIndex;
        if (lm[3] === "" && pos < body.length) throw new Error(`${where}: junk after labels`);
      }
    }
    if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]Inf$|^NaN$/.test(vtext!)) throw new Error(`${where}: bad value`);
    const value = Number(vtext!.replace("Inf", "Infinity"));
    if (type === "counter" && !(value >= 0)) throw new Error(`${where}: negative counter`);
    if (type === "info" && value !== 1) throw new Error(`${where}: info value must be 1`);
    const key = `${cur}\0${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new Error(`${where}: duplicate sample`);
    seen.add(key);
    const list = samples.get(name!) ?? [];
    list.push({ labels, value });
    samples.set(name!, list);
  }
  return samples;
}

test("the OpenMetrics parser of these tests rejects what is not OpenMetrics", (t) => {
  t.is(parseOpenMetrics('# TYPE a counter\n# HELP a x\na_total{l="v\\""} 1\n# TYPE b gauge\nb 2.5\n# EOF\n').get("a_total")![0]!.labels.l, 'v"');
  for (const bad of [
    "# TYPE a counter\na_total 1\n",
    "# TYPE a counter\na 1\n# EOF\n",
    "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# HELP a again\n# EOF\n",
    "a 1\n# EOF\n",
    '# TYPE a gauge\na{l="x} 1\n# EOF\n',
    "# TYPE a gauge\na 1\na 2\n# EOF\n",
    "# TYPE a info\na_info 2\n# EOF\n",
    "# TYPE a counter\na_total -1\n# EOF\n",
    "# TYPE a gauge\na one\n# EOF\n",
    "# TYPE a gauge\n\na 1\n# EOF\n",
    "# TYPE a gauge\na 1\n# EOF\nb 1\n",
  ]) {
    t.throws(() => parseOpenMetrics(bad), undefined, JSON.stringify(bad));
  }
});

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
    t.is((await fetch(`http://127.0.0.1:${port}/metrics`, { method: "POST" })).status, 405);
    const head = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "HEAD" });
    t.is(head.status, 200);
    t.is(await head.text(), "");
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
    // ... with global options on the command line, applied to every line.
    const r2 = spawnSync(process.execPath, [cliBin, "--run-dir", d.runDir, "-o", "table"], { input: `mgmtpf -l\nvf -l '${PF}'\n`, encoding: "utf8", timeout: 30_000 });
    t.is(r2.status, 0, r2.stderr);
    t.regex(r2.stdout, /^PF +TYPE/m);
    t.regex(r2.stdout, /^VF +TYPE +STATE/m);

    // The completion script completes verbs, sub-commands and options when bash runs it.
    const complete = (words: string[]) =>
      spawnSync("bash", ["-c", `${comp.stdout}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _vfe_vhost_cli; echo "\${COMPREPLY[*]}"`], { encoding: "utf8" }).stdout.trim().split(/\s+/);
    t.true(["version", "mgmtpf", "vf", "state", "stats", "ha", "config", "completion"].every((w) => complete(["vfe-vhost-cli", ""]).includes(w)), complete(["vfe-vhost-cli", ""]).join(" "));
    t.true(complete(["vfe-vhost-cli", "vf", "--m"]).includes("--mac"));

    // --help on every verb and sub-command: usage on stdout, exit 0.
    for (const args of [["version"], ["mgmtpf"], ["vf"], ["state"], ["stats"], ["ha"], ["ha", "status"], ["journal"], ["config"], ["config", "save"], ["config", "load"], ["completion"], ["drill"]]) {
      const h = await d.cli([...args, "--help"]);
      t.is(h.code, 0, `${args.join(" ")} --help: ${h.stderr}`);
      t.regex(h.stdout, /^usage: vfe-vhost-cli/, `${args.join(" ")} --help`);
    }
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

test.serial("config save -> load into a fresh daemon after out-of-order adds and a removal: the same ids, the same state", async (t) => {
  const PF2 = "0000:c0:00.2";
  const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-ops-cfg-"));
  const cfg = path.join(cfgDir, "config.json");
  fs.writeFileSync(cfg, JSON.stringify({ pfs: [{ dev: PF, type: "net", firstVfOffset: 35 }, { dev: PF2, type: "net", firstVfOffset: 35, macPrefix: "02:54:01" }] }));
  const d = await Daemon.start({ args: ["--config", cfg] });
  let fresh: Daemon | undefined;
  try {
    // PF2 gets switch 0, PF switch 1; VF ids 0..3 handed out out of VF order, then a hole at 1.
    await d.ok(["mgmtpf", "-a", PF2]);
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", "0000:af:06.5", "-v", d.sock("c"), "--server", "-q", "2"]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b"), "--mac", "02:00:00:00:00:0b", "-u", "5a8f3c2e-8f4e-4d0e-9a50-3c3c3c3c3c3c"]);
    await d.ok(["vf", "-a", "0000:c0:04.5", "-v", d.sock("d"), "--mtu", "9000"]);
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
    await d.ok(["vf", "-r", VF_B]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b2")]); // takes the freed id 1
    const file = path.join(d.dir, "saved.json");
    await d.ok(["config", "save", "-f", file]);
    const config = (x: Daemon) =>
      Promise.all([x.ok(["mgmtpf", "-l", "-d"]), x.ok(["vf", "-l", PF]), x.ok(["vf", "-l", PF2]), x.ok(["state"])]).then(([pfs, l1, l2, st]) => ({
        pfs: pfs.devices.map((p: Record<string, unknown>) => ({ ...p, vfs: undefined })),
        vfs: [...l1.devices, ...l2.devices].map(({ vf, pf, type, socket_file, mode, mac, mtu, queue_pairs, dev_id, switch_id, vm_uuid, msix_num, queue_num }) => ({ vf, pf, type, socket_file, mode, mac, mtu, queue_pairs, dev_id, switch_id, vm_uuid, msix_num, queue_num })),
        // state minus the live session (connection, counters, memory, rings)
        state: st.devices.map(({ vf, pf, type, socket_file, mode }: Record<string, unknown>) => ({ vf, pf, type, socket_file, mode })),
      }));
    const before = await config(d);
    await d.stop(); // frees the server-mode socket for the fresh daemon
    fresh = await Daemon.start({ args: ["--config", cfg] });
    const load = await fresh.ok(["config", "load", file]);
    t.like(load, { added: 6, unchanged: 0, failed: 0 });
    t.deepEqual(await config(fresh), before);
    t.like(await fresh.ok(["config", "load", file]), { added: 0, unchanged: 6, failed: 0 });
  } finally {
    await d.stop();
    await fresh?.stop();
    fs.rmSync(cfgDir, { recursive: true, force: true });
  }
});
