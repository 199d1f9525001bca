import test from "ava";
import { pino } from "pino";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { VfeError } from "@vhostd/proto";
import { ConfigError, DEFAULT_CONFIG, loadConfig, parseConfig } from "../src/config.js";
import { Inventory, deriveMac } from "../src/inventory.js";
import { Journal } from "../src/journal.js";
import { Registry, type RegistryEvent } from "../src/registry.js";
import type { VfSpec } from "@vhostd/runtime";
import { FakeHost } from "./registry_fake_host.js";

function setup() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  const log = pino({ level: "info" }, sink);
  const host = new FakeHost();
  const reg = new Registry({ inventory: new Inventory(loadConfig()), host, log, defaultMode: "client", iface: "/run/vhostd/vf-", reservedPaths: ["/run/vhostd/vfe-vhostd.sock"] });
  const events: RegistryEvent[] = [];
  reg.on("change", (e: RegistryEvent) => events.push(e));
  return { reg, host, lines, events };
}

async function errno(t: import("ava").ExecutionContext, p: Promise<unknown> | (() => unknown), expected: number, re?: RegExp) {
  const e = typeof p === "function" ? t.throws(p as () => unknown, { instanceOf: VfeError }) : await t.throwsAsync(p, { instanceOf: VfeError });
  t.is(e!.errno, expected, e!.message);
  if (re) t.regex(e!.message, re);
}

test("default inventory: NVIDIA's guide addresses, stride 8, no collisions", (t) => {
  const inv = new Inventory(loadConfig());
  t.is(inv.pf("0000:af:00.2")!.firstVf, "0000:af:04.5");
  t.is(inv.pf("0000:af:00.3")!.firstVf, "0000:af:05.1");
  t.is(inv.vfAddress("0000:af:00.2", 1), "0000:af:05.5");
  t.is(inv.vfAddress("0000:af:00.3", 1), "0000:af:06.1");
  t.is(inv.vfAddress("0000:af:00.2", 511), "0000:bf:03.5"); // 0xaf25 + 8 * 511 = 0xbf1d
  t.is(inv.vfAddress("0000:af:00.2", 512), undefined);
  t.is(inv.vf("0000:af:05.5")!.index, 1);
  t.is(inv.pf("0000:af:00.2")!.numVfs, 512);
  t.is(inv.defaultMac("0000:af:04.5"), "52:54:00:00:af:25");
  t.is(deriveMac("52:54:00", "0001:02:03.4"), "52:54:00:01:02:1c");
  t.is(DEFAULT_CONFIG.pfs.length, 2);
});

test("config validation is strict and names the path", (t) => {
  const bad = (raw: unknown, re: RegExp) => t.throws(() => new Inventory(parseConfig(raw)), { instanceOf: ConfigError, message: re });
  bad([], /must be a JSON object/);
  bad({ pfs: {} }, /pfs: must be an array/);
  bad({ pfs: [], extra: 1 }, /unknown key "extra"/);
  bad({ pfs: [{ dev: "0000:af:00.2", type: "net" }] }, /firstVfOffset: required/);
  bad({ pfs: [{ dev: "nope", type: "net", firstVfOffset: 1 }] }, /pfs\[0\]\.dev/);
  bad({ pfs: [{ dev: "0000:af:00.2", type: "nic", firstVfOffset: 1 }] }, /type/);
  bad({ pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35, mtu: 10 }] }, /mtu: 10 is out of range/);
  bad({ pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35, numVfs: 1.5 }] }, /numVfs: must be an integer/);
  bad({ pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35, macPrefix: "00:11:22" }] }, /locally administered/);
  bad({ pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35, queuePairs: 4, maxQueuePairs: 2 }] }, /queuePairs/);
  bad({ pfs: [{ dev: "0000:ff:00.0", type: "net", firstVfOffset: 8, numVfs: 512 }] }, /beyond 0xffff/);
  bad(
    { pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35 }, { dev: "0000:af:00.3", type: "blk", firstVfOffset: 34 }] },
    /collides with VF 0 of PF 0000:af:00.2/,
  );
  bad({ pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35 }, { dev: "af:00.2", type: "blk", firstVfOffset: 38 }] }, /already used/);
  bad({ pfs: [{ dev: "0000:af:00.0", type: "net", firstVfOffset: 1, vfStride: 1, numVfs: 4 }, { dev: "0000:af:00.1", type: "blk", firstVfOffset: 3, numVfs: 1 }] }, /collides/);
  t.notThrows(() => new Inventory(parseConfig({ pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35, numVfs: 4, mtu: 9000, queuePairs: 4 }] })));
});

test("PF rules: add, duplicate, unknown, not a PF, remove with VFs, remove unknown", async (t) => {
  const { reg, host, events, lines } = setup();
  const e = await reg.addPf("af:00.2");
  t.is(e.switchId, 0);
  t.deepEqual(host.pfs, [["0000:af:00.2", 0, "net"]]);
  await errno(t, reg.addPf("0000:af:00.2"), -1008, /already add/);
  await errno(t, reg.addPf("0000:af:00.7"), -19, /not a PF in the inventory/);
  await errno(t, reg.addPf("0000:af:04.5"), -19, /is VF 0 of PF 0000:af:00.2/);
  await errno(t, reg.addPf("garbage"), -22);
  await errno(t, reg.addPf(""), -1000);
  t.is((await reg.addPf("0000:af:00.3")).switchId, 1);
  await reg.addVf({ vfdev: "0000:af:04.5" });
  await errno(t, reg.removePf("0000:af:00.2"), -1013, /has 1 VF/);
  await errno(t, reg.removePf("0000:af:00.4"), -1001);
  await reg.removeVf("0000:af:04.5");
  await reg.removePf("0000:af:00.2");
  await errno(t, () => reg.listPfs("0000:af:00.2"), -1001);
  t.deepEqual(reg.listPfs().map((p) => p.info.dev), ["0000:af:00.3"]);
  // switch id 0 is reused
  t.is((await reg.addPf("0000:af:00.2")).switchId, 0);
  t.deepEqual(events.map((e) => e.op), ["pf_added", "pf_added", "vf_added", "vf_removed", "pf_removed", "pf_added"]);
  t.true(lines.some((l) => l.event === "pf_added" && l.pf === "0000:af:00.2"));
});

test("VF rules: PF first, inventory, duplicates, socket ownership, params", async (t) => {
  const { reg, host, lines } = setup();
  await errno(t, reg.addVf({ vfdev: "0000:af:04.5" }), -1001, /PF 0000:af:00.2 of 0000:af:04.5 is not added/);
  await reg.addPf("0000:af:00.2");
  await reg.addPf("0000:af:00.3");
  const s = await reg.addVf({ vfdev: "af:04.5", socket_file: "/tmp/vhost-net0", uuid: "123E4567-E89B-12D3-A456-426614174000" });
  t.like(s, { dev: "0000:af:04.5", pf: "0000:af:00.2", kind: "net", devId: 0, switchId: 0, mode: "client", mac: "52:54:00:00:af:25", mtu: 1500, queuePairs: 1, uuid: "123e4567-e89b-12d3-a456-426614174000" });
  t.is(host.open_.length, 1);
  await errno(t, reg.addVf({ vfdev: "0000:af:04.5", socket_file: "/tmp/other" }), -1014);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", socket_file: "/tmp/vhost-net0" }), -1038, /used by VF 0000:af:04.5/);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", socket_file: "/run/vhostd/vfe-vhostd.sock" }), -1038, /reserved/);
  await errno(t, reg.addVf({ vfdev: "0000:af:04.4" }), -19, /not a VF/);
  await errno(t, reg.addVf({ vfdev: "0000:af:00.2" }), -19, /is a PF/);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", socket_file: "rel/path" }), -22, /absolute/);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", socket_file: "/" + "x".repeat(107) }), -22, /107/);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", uuid: "not-a-uuid" }), -22, /UUID/);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", queue_pairs: 0 }), -22);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", queue_pairs: 17 }), -22);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", mtu: 67 }), -22);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", mtu: 9001 }), -22);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", mac: "01:02:03:04:05:06" }), -22, /unicast/);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.5", mac: "52:54:00:00:af:25" }), -17, /used by VF 0000:af:04.5/);
  await errno(t, reg.addVf({ vfdev: "0000:af:05.1", mac: "52:54:00:00:00:01" }), -22, /net VFs only/);
  // the failed attempts allocated nothing
  await errno(t, reg.addVf({ vfdev: "0000:af:05.1" }), -22, /needs a disk/);
  const s2 = await reg.addVf({ vfdev: "0000:af:05.1", mode: "server", queue_pairs: 4, disk: "null" });
  t.like(s2, { kind: "blk", devId: 1, switchId: 1, mode: "server", socketPath: "/run/vhostd/vf-0000:af:05.1", queuePairs: 4 });
  t.deepEqual(s2.disk, { path: "null", size: 1 << 30, readonly: false, direct: false });
  // devId reuse
  await reg.removeVf("0000:af:04.5");
  t.deepEqual(host.closed, ["0000:af:04.5"]);
  t.is((await reg.addVf({ vfdev: "0000:af:05.5", mtu: 9000, mac: "52:54:00:12:34:56" })).devId, 0);
  // socket freed by removal
  t.is((await reg.addVf({ vfdev: "0000:af:06.5", socket_file: "/tmp/vhost-net0" })).socketPath, "/tmp/vhost-net0");
  await errno(t, reg.removeVf("0000:af:04.5"), -1003);
  await errno(t, () => reg.getVf("0000:af:04.5"), -1003);
  await errno(t, () => reg.listVfs("0000:af:00.4"), -1001);
  await errno(t, () => reg.listVfs("0000:af:05.5"), -1001, /is a VF/);
  t.deepEqual(reg.listVfs("0000:af:00.2").map((v) => v.dev), ["0000:af:05.5", "0000:af:06.5"]);
  const added = lines.filter((l) => l.event === "vf_added");
  t.is(added.length, 4);
  t.true(added.every((l) => typeof l.vf === "string" && typeof l.socket === "string"));
  t.true(lines.some((l) => l.event === "vf_removed" && l.vf === "0000:af:04.5" && l.socket === "/tmp/vhost-net0"));
});

test("per-PF queue pair limit is -1005 Number exceed limit", async (t) => {
  const host = new FakeHost();
  const inv = new Inventory(parseConfig({ pfs: [{ dev: "0000:af:00.2", type: "net", firstVfOffset: 35, numVfs: 4, maxQueuePairs: 2 }] }));
  const reg = new Registry({ inventory: inv, host, log: pino({ level: "silent" }), defaultMode: "server", iface: "/tmp/vf-" });
  await reg.addPf("0000:af:00.2");
  await errno(t, reg.addVf({ vfdev: "0000:af:04.5", queue_pairs: 3 }), -1005, /limit 2/);
  t.is((await reg.addVf({ vfdev: "0000:af:04.5", queue_pairs: 2 })).mode, "server");
  await errno(t, reg.addVf({ vfdev: "0000:af:08.5" }), -19); // beyond numVfs
});

test("a blk VF added without --disk (vfe's own syntax) gets <diskDir>/<VF>.raw, sparse, 1 GiB", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-reg-disk-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const diskDir = path.join(dir, "disks");
  const reg = new Registry({ inventory: new Inventory(loadConfig()), host: new FakeHost(), log: pino({ level: "silent" }), defaultMode: "client", iface: "/tmp/vf-", diskDir });
  await reg.addPf("0000:af:00.3");
  const spec = await reg.addVf({ vfdev: "0000:af:05.1" });
  const file = path.join(diskDir, "0000:af:05.1.raw");
  t.deepEqual(spec.disk, { path: file, size: 1 << 30, readonly: false, direct: false });
  const st = fs.statSync(file);
  t.is(st.size, 1 << 30);
  t.true(st.blocks * 512 < 1 << 20, "created sparse");
  t.is(st.mode & 0o777, 0o600);
  t.is(fs.statSync(diskDir).mode & 0o777, 0o700);
  // a second VF's default never collides with the first's
  t.is((await reg.addVf({ vfdev: "0000:af:06.1", disk_size: 1 << 20 })).disk?.path, path.join(diskDir, "0000:af:06.1.raw"));
});

test("host failures: errno passed through, else -1100; nothing recorded", async (t) => {
  const { reg, host } = setup();
  await reg.addPf("0000:af:00.2");
  host.failOpen = Object.assign(new Error("bind failed"), { errno: -98 });
  await errno(t, reg.addVf({ vfdev: "0000:af:04.5" }), -98, /bind failed/);
  host.failOpen = new Error("boom");
  await errno(t, reg.addVf({ vfdev: "0000:af:04.5" }), -1100, /boom/);
  host.failOpen = undefined;
  t.is((await reg.addVf({ vfdev: "0000:af:04.5" })).devId, 0);
});

test("changes are serialized and refused after shutdown", async (t) => {
  const { reg, host } = setup();
  await reg.addPf("0000:af:00.2");
  const results = await Promise.allSettled([reg.addVf({ vfdev: "0000:af:04.5", socket_file: "/tmp/s" }), reg.addVf({ vfdev: "0000:af:05.5", socket_file: "/tmp/s" })]);
  t.is(results.filter((r) => r.status === "fulfilled").length, 1);
  await reg.shutdown();
  t.true(host.shut);
  await errno(t, reg.addVf({ vfdev: "0000:af:06.5" }), -1101);
});

/** A host whose open takes a while (a keeper round trip), counting how many overlap. */
class SlowHost extends FakeHost {
  inFlight = 0;
  maxInFlight = 0;
  failDevs = new Set<string>();
  override async open(vf: VfSpec): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((r) => setTimeout(r, 5));
    this.inFlight--;
    if (this.failDevs.has(vf.dev)) throw new Error(`refused ${vf.dev}`);
    this.open_.push(vf);
  }
}

test("VF adds overlap: checks and reservations stay exclusive, every add journaled, other changes wait for them", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-reg-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const j = Journal.open(path.join(dir, "journal"));
  const host = new SlowHost();
  const inv = new Inventory(loadConfig());
  const reg = new Registry({ inventory: inv, host, log: pino({ level: "silent" }), defaultMode: "client", iface: "/tmp/vf-", journal: j });
  const PF = "0000:af:00.2";
  await reg.addPf(PF);
  const vf = (i: number) => inv.vfAddress(PF, i)!;
  host.failDevs.add(vf(3));
  const adds = [
    ...Array.from({ length: 24 }, (_, i) => reg.addVf({ vfdev: vf(i), socket_file: path.join(dir, `v${i}.sock`) })),
    reg.addVf({ vfdev: vf(0), socket_file: path.join(dir, "again.sock") }), // same VF, in flight
    reg.addVf({ vfdev: vf(30), socket_file: path.join(dir, "v1.sock") }), // a socket taken by an add in flight
    reg.addVf({ vfdev: vf(31), socket_file: path.join(dir, "v31.sock"), mac: inv.defaultMac(vf(2)) }), // a MAC taken likewise
    reg.addVf({ vfdev: vf(32), socket_file: path.join(dir, "v3.sock") }), // v3.sock: its add fails, but only later
  ];
  const removal = reg.removeVf(vf(5)); // queued behind adds in flight: waits for them, then finds the VF
  const r = await Promise.allSettled(adds);
  await removal;
  const failed = r.map((x, i) => (x.status === "rejected" ? [i, (x.reason as VfeError).errno] : undefined)).filter(Boolean);
  t.deepEqual(failed, [
    [3, -1100],
    [24, -1014],
    [25, -1038],
    [26, -17],
    [27, -1038],
  ]);
  t.true(host.maxInFlight > 4, `adds overlapped (at most ${host.maxInFlight} opens at once)`);
  const specs = reg.allVfs();
  t.is(specs.length, 22);
  t.is(new Set(specs.map((s) => s.devId)).size, 22, "devIds unique");
  t.is(new Set(specs.map((s) => s.socketPath)).size, 22);
  t.deepEqual(
    j.read().vfs.map((v) => v.dev).sort(),
    specs.map((s) => s.dev).sort(),
    "the journal holds exactly the VFs that were acknowledged",
  );
  t.false(specs.some((s) => s.dev === vf(5)));
  // The failed add freed its socket: taken again now.
  await reg.addVf({ vfdev: vf(40), socket_file: path.join(dir, "v3.sock") });
  await errno(t, reg.removePf(PF), -1013);
  await reg.shutdown();
  await j.close();
});
