// blk VF disks through the registry: hostile paths and sizes are refused before anything
// changes, a missing file is created sparse at `vf -a` (and removed again if the add fails),
// an existing file keeps its size, restore never creates a disk, and the journal carries it.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import test from "ava";
import { Packr } from "msgpackr";
import { pino } from "pino";
import { VfeError, checkParamValue, methodSpec, parseSize, validateParams } from "@vhostd/proto";
import { loadConfig } from "../src/config.js";
import { Inventory } from "../src/inventory.js";
import { Journal, parseVfRecord } from "../src/journal.js";
import { Registry } from "../src/registry.js";
import { FakeHost } from "./registry_fake_host.js";

const BLK_PF = "0000:af:00.3";
const VF1 = "0000:af:05.1";
const VF2 = "0000:af:06.1";

function tmp(t: import("ava").ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-disk-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function setup(journal?: Journal) {
  const host = new FakeHost();
  const reg = new Registry({ inventory: new Inventory(loadConfig()), host, log: pino({ level: "silent" }), defaultMode: "client", iface: "/tmp/vf-", ...(journal ? { journal } : {}) });
  await reg.addPf(BLK_PF);
  await reg.addPf("0000:af:00.2");
  return { reg, host };
}

async function errno(t: import("ava").ExecutionContext, p: Promise<unknown>, expected: number, re?: RegExp) {
  const e = await t.throwsAsync(p, { instanceOf: VfeError });
  t.is(e!.errno, expected, e!.message);
  if (re) t.regex(e!.message, re);
}

test("sizes: CLI suffixes and schema bounds", (t) => {
  t.is(parseSize("4096"), 4096);
  t.is(parseSize("64K"), 65536);
  t.is(parseSize("256M"), 256 << 20);
  t.is(parseSize("10GiB"), 10 * 2 ** 30);
  t.is(parseSize("1t"), 2 ** 40);
  for (const bad of ["", "-1", "1.5G", "12Q", "9".repeat(20), "1e9"]) t.is(parseSize(bad), undefined, bad);
  const vf = methodSpec("vf")!;
  const size = vf.params.disk_size!;
  t.is(checkParamValue("disk_size", size, 1 << 20), 1 << 20);
  t.throws(() => checkParamValue("disk_size", size, 1000), { message: /1048576/ });
  t.throws(() => checkParamValue("disk_size", size, (1 << 20) + 1), { message: /multiple of 512/ });
  t.throws(() => checkParamValue("disk_size", size, 2 ** 51), { message: /bytes/ });
  t.throws(() => checkParamValue("disk_size", size, "1G"), { message: /integer/ });
  const disk = vf.params.disk!;
  for (const [v, re] of [
    ["rel/disk.raw", /absolute/],
    ["/a/../etc/shadow", /\.\./],
    ["/a/./b", /component/],
    ["/x/", /directory/],
    ["/a\0b", /NUL/],
    ["/" + "x".repeat(4100), /4095/],
    ["", /empty/],
  ] as const) t.throws(() => checkParamValue("disk", disk, v), { message: re }, v);
  t.is(checkParamValue("disk", disk, "null"), "null");
  t.notThrows(() => validateParams(vf, { add: true, vfdev: VF1, disk: "/tmp/d.raw", disk_size: 1 << 20, readonly: false, direct: true }));
});

test("vf -a --disk: created sparse when missing, existing file keeps its size, hostile backings refused", async (t) => {
  const dir = tmp(t);
  const { reg, host } = await setup();
  const f = path.join(dir, "a.raw");
  const s = await reg.addVf({ vfdev: VF1, socket_file: path.join(dir, "a.sock"), disk: f, disk_size: 64 << 20 });
  t.deepEqual(s.disk, { path: f, size: 64 << 20, readonly: false, direct: false });
  const st = fs.statSync(f);
  t.is(st.size, 64 << 20);
  t.true(st.blocks * 512 < 1 << 20, "sparse");
  t.is((st.mode & 0o777).toString(8), "600");
  t.is(host.open_.at(-1)!.disk?.path, f);
  await errno(t, reg.addVf({ vfdev: VF2, socket_file: path.join(dir, "b.sock"), disk: f }), -17, /used by VF/);
  await reg.removeVf(VF1);
  t.true(fs.existsSync(f), "vf -r never deletes a disk");
  // an existing file keeps its size; a different --disk-size is refused
  await errno(t, reg.addVf({ vfdev: VF1, socket_file: path.join(dir, "a.sock"), disk: f, disk_size: 32 << 20 }), -22, /exists with/);
  t.is((await reg.addVf({ vfdev: VF1, socket_file: path.join(dir, "a.sock"), disk: f, readonly: true })).disk?.size, 64 << 20);
  await reg.removeVf(VF1);
  // hostile backings
  fs.mkdirSync(path.join(dir, "d"));
  execFileSync("mkfifo", [path.join(dir, "fifo")]);
  fs.writeFileSync(path.join(dir, "tiny"), "x");
  const cases: Array<[string, number, RegExp]> = [
    [path.join(dir, "d"), -22, /directory/],
    [path.join(dir, "fifo"), -22, /FIFO/],
    ["/dev/null", -22, /character device/],
    [path.join(dir, "tiny"), -22, /smaller than one/],
    [path.join(dir, "nodir", "x.raw"), -2, /does not exist/],
    ["relative.raw", -22, /absolute/],
  ];
  for (const [p, e, re] of cases) await errno(t, reg.addVf({ vfdev: VF2, socket_file: path.join(dir, "b.sock"), disk: p }), e, re);
  await errno(t, reg.addVf({ vfdev: VF2, socket_file: path.join(dir, "b.sock"), disk: path.join(dir, "new.raw"), readonly: true }), -22, /read-only/);
  await errno(t, reg.addVf({ vfdev: "0000:af:04.5", socket_file: path.join(dir, "n.sock"), disk: "null" }), -22, /blk VFs only/);
  await errno(t, reg.addVf({ vfdev: VF2, socket_file: path.join(dir, "b.sock"), disk: "null", disk_size: 1000 }), -22, /multiple of 512/);
  t.deepEqual(fs.readdirSync(dir).sort(), ["a.raw", "d", "fifo", "tiny"], "no failed add left a file behind");
  t.is(reg.allVfs().length, 0);
});

test("a disk created for an add the host refuses is removed again", async (t) => {
  const dir = tmp(t);
  const { reg, host } = await setup();
  host.failOpen = new Error("no");
  await t.throwsAsync(reg.addVf({ vfdev: VF1, socket_file: path.join(dir, "a.sock"), disk: path.join(dir, "a.raw") }));
  t.false(fs.existsSync(path.join(dir, "a.raw")));
});

test("journal carries the disk; restore reopens it and never creates a missing one", async (t) => {
  const dir = tmp(t);
  const j = Journal.open(path.join(dir, "journal"));
  const { reg } = await setup(j);
  const f = path.join(dir, "a.raw");
  await reg.addVf({ vfdev: VF1, socket_file: path.join(dir, "a.sock"), disk: f, disk_size: 4 << 20, direct: true });
  await reg.addVf({ vfdev: VF2, socket_file: path.join(dir, "b.sock"), disk: "null", disk_size: 8 << 20, readonly: true });
  const c = j.read();
  await j.close();
  t.deepEqual(c.vfs.map((v) => v.disk), [
    { path: f, size: 4 << 20, readonly: false, direct: true },
    { path: "null", size: 8 << 20, readonly: true, direct: false },
  ]);
  fs.rmSync(f);
  const host = new FakeHost();
  const reg2 = new Registry({ inventory: new Inventory(loadConfig()), host, log: pino({ level: "silent" }), defaultMode: "client", iface: "/tmp/vf-" });
  const rep = await reg2.restore(c);
  t.deepEqual(rep.vfs.restored, [VF1, VF2], "the registry hands the spec to the host, which opens (or fails) it");
  t.deepEqual(host.open_.map((s) => s.disk?.path), [f, "null"]);
  t.false(fs.existsSync(f), "restore created nothing");
  // The journal form has no kind: under its blk PF, a record without a disk is refused by the
  // registry in the device record validator's words (as the keeper refuses it on the sync channel).
  const reg3 = new Registry({ inventory: new Inventory(loadConfig()), host: new FakeHost(), log: pino({ level: "silent" }), defaultMode: "client", iface: "/tmp/vf-" });
  const { disk: _disk, ...noDisk } = c.vfs[1]!;
  const rep3 = await reg3.restore({ pfs: c.pfs, vfs: [noDisk] });
  t.deepEqual(rep3.vfs.skipped, [{ vf: noDisk.dev, reason: "a blk VF needs a disk" }]);
  // hostile journal records
  const packr = new Packr({ useRecords: false });
  const enc = (o: unknown) => packr.pack(o);
  t.notThrows(() => parseVfRecord(`vf/${VF1}`, enc({ ...base0(), disk: { path: "/x", size: 0, readonly: false, direct: false } })));
  const base = base0();
  function base0() {
    return { v: 1, dev: VF1, pf: BLK_PF, socketPath: "/tmp/a.sock", mode: "client", mac: "52:54:00:00:af:29", mtu: 1500, queuePairs: 1, devId: 0 };
  }
  for (const disk of [{ path: "rel", size: 0, readonly: false, direct: false }, { path: "/x", size: -1, readonly: false, direct: false }, { path: "/x", size: 0, readonly: "no", direct: false }, { path: "/x", size: 0, readonly: false, direct: false, extra: 1 }, "/x"]) {
    t.throws(() => parseVfRecord(`vf/${VF1}`, enc({ ...base, disk })), undefined, JSON.stringify(disk));
  }
});
