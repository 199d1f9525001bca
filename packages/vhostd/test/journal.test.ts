// The LMDB journal: records round-trip, hostile records are clear errors naming their key,
// newer formats are refused, the epoch bumps, read-only opens work beside a writer process,
// and the registry journals before it acknowledges and restores what it journaled.
import test from "ava";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { pino } from "pino";
import { LinuxErrno, VfeErr, VfeError } from "@vhostd/proto";
import { loadConfig } from "../src/config.js";
import { Inventory } from "../src/inventory.js";
import {
  Journal,
  JournalConflictError,
  JournalError,
  JournalFormatError,
  JournalMissingError,
  encodeValue,
  parseVfRecord,
  type PfRecord,
  type VfRecord,
} from "../src/journal.js";
import { Registry, type RegistryJournal } from "../src/registry.js";
import { run } from "../src/cli/run.js";
import { Daemon } from "../src/daemon.js";
import { FakeHost } from "./registry_fake_host.js";

const PF: PfRecord = { dev: "0000:af:00.2", type: "net", switchId: 0 };
const VF: VfRecord = {
  dev: "0000:af:04.5",
  pf: "0000:af:00.2",
  socketPath: "/tmp/vhost-net0",
  mode: "client",
  uuid: "12345678-1234-1234-1234-1234567890ab",
  mac: "52:54:00:00:af:25",
  mtu: 9000,
  queuePairs: 4,
  devId: 7,
};
const VF2: VfRecord = { dev: "0000:af:05.5", pf: "0000:af:00.2", socketPath: "/tmp/vhost-net1", mode: "server", mac: "02:00:00:00:00:01", mtu: 1500, queuePairs: 1, devId: 0 };

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "vhostd-journal-"));
}

function silent() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

test("records round-trip, survive a reopen, and read back validated", async (t) => {
  const dir = tmp();
  try {
    const path = join(dir, "journal");
    let j = Journal.open(path);
    t.is(j.format, 1);
    await j.putPf(PF);
    await j.putPf({ dev: "0000:af:00.3", type: "blk", switchId: 1 });
    await j.putVf(VF);
    await j.putVf(VF2);
    await j.close();
    j = Journal.open(path, { readOnly: true });
    const c = j.read();
    t.deepEqual(c.pfs, [PF, { dev: "0000:af:00.3", type: "blk", switchId: 1 }]);
    t.deepEqual(c.vfs, [VF, VF2]);
    t.deepEqual(c.errors, []);
    t.is(c.format, 1);
    await j.close();
    j = Journal.open(path);
    await j.removeVf(VF.dev);
    t.deepEqual(j.read().vfs, [VF2]);
    await j.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the epoch bumps by one at every call and persists", async (t) => {
  const dir = tmp();
  try {
    const path = join(dir, "journal");
    let j = Journal.open(path);
    t.is(j.epoch, 0);
    t.is(await j.bumpEpoch(), 1);
    t.is(await j.bumpEpoch(), 2);
    await j.close();
    j = Journal.open(path);
    t.is(j.epoch, 2);
    t.is(await j.bumpEpoch(), 3);
    await j.close();
    j = Journal.open(path, { readOnly: true });
    t.is(j.read().epoch, 3);
    await t.throwsAsync(j.bumpEpoch(), { message: /read-only/ });
    await j.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("hostile and corrupt records are errors naming the key, never a crash", async (t) => {
  const dir = tmp();
  try {
    const path = join(dir, "journal");
    const j = Journal.open(path);
    await j.putPf(PF);
    await j.putVf(VF);
    const good = { v: 1, dev: "0000:af:05.5", pf: PF.dev, socketPath: "/tmp/s", mode: "client", mac: "52:54:00:00:af:2d", mtu: 1500, queuePairs: 1, devId: 3 };
    const hostile: Array<[string, Buffer, RegExp]> = [
      ["vf/0000:af:05.5", Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), /not valid msgpack/],
      ["vf/0000:af:06.5", encodeValue([1, 2, 3]), /not a msgpack map/],
      ["vf/0000:af:07.5", encodeValue({ ...good, dev: "0000:af:07.5", mtu: 1e9 }), /mtu must be an integer/],
      ["vf/0000:af:08.5", encodeValue({ ...good }), /holds VF 0000:af:05.5, not the VF its key names/],
      ["vf/0000:af:09.5", encodeValue({ ...good, dev: "0000:af:09.5", evil: true }), /unknown field "evil"/],
      ["vf/0000:af:0a.5", encodeValue({ ...good, dev: "0000:af:0a.5", socketPath: "relative" }), /socketPath: socket path must be absolute/],
      ["vf/0000:af:0b.5", encodeValue({ ...good, dev: "0000:af:0b.5", mac: "ff:ff:ff:ff:ff:ff" }), /mac/],
      ["vf/0000:af:0c.5", encodeValue({ ...good, dev: "0000:af:0c.5", v: "1" }), /record version/],
      ["vf/0000:af:0d.5", encodeValue({ ...good, dev: "0000:af:0d.5", devId: undefined }), /devId/],
      ["vf/0000:af:0e.5", Buffer.alloc(20_000, 0x90), /more than/],
      ["pf/0000:af:00.4", encodeValue({ v: 1, dev: "0000:af:00.4", type: "gpu", switchId: 1 }), /type must be/],
      ["pf/0000:AF:00.5", encodeValue({ v: 1, dev: "0000:AF:00.5", type: "net", switchId: 1 }), /canonical PCI address/],
      ["zz/whatever", encodeValue(1), /unknown key/],
      ["meta/epoch", encodeValue(-1), /integer in 0\.\./],
    ];
    for (const [k, v] of hostile) await j.putRaw(k, v);
    const c = j.read();
    t.deepEqual(c.pfs, [PF], "good records still read");
    t.deepEqual(c.vfs, [VF]);
    for (const [k, , re] of hostile) {
      const e = c.errors.find((x) => x.key === k);
      t.truthy(e, `${k} reported`);
      t.regex(e!.error, re, k);
    }
    t.is(c.errors.length, hostile.length);
    // The CLI shows them and exits 1.
    const out: string[] = [];
    const err: string[] = [];
    await j.close();
    const code = await run(["journal", "dump", "--state-dir", dir], (s) => out.push(s), (s) => err.push(s), {});
    t.is(code, 1);
    const dump = JSON.parse(out.join(""));
    t.is(dump.errors.length, hostile.length);
    t.is(dump.vfs.length, 1);
    t.regex(err.join(""), /unusable record/);
    // The daemon cannot bump a corrupt epoch: it refuses to start, naming the key.
    const j2 = Journal.open(join(dir, "journal"));
    await t.throwsAsync(j2.bumpEpoch(), { instanceOf: JournalError, message: /journal record meta\/epoch: must be an integer/ });
    await j2.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a record or journal of a newer format is refused, and the daemon will not start on it", async (t) => {
  const dir = tmp();
  try {
    const path = join(dir, "state", "journal");
    let j = Journal.open(path);
    await j.putPf(PF);
    await j.putRaw("vf/0000:af:04.5", encodeValue({ v: 2, dev: "0000:af:04.5", shiny: 1 }));
    const e = t.throws(() => j.read(), { instanceOf: JournalFormatError });
    t.is(e!.key, "vf/0000:af:04.5");
    t.regex(e!.message, /record format 2 is newer/);
    await j.close();
    const { log } = silent();
    const err = await t.throwsAsync(
      Daemon.start({ runDir: join(dir, "run"), stateDir: join(dir, "state"), log, hostFactory: () => new FakeHost() }),
      { instanceOf: JournalFormatError },
    );
    t.regex(err!.message, /vf\/0000:af:04\.5.*newer/);
    j = Journal.open(path);
    t.is(j.epoch, 0, "a refused start leaves the journal untouched (no epoch bump)");
    await j.putRaw("meta/format", encodeValue(9));
    await j.close();
    t.throws(() => Journal.open(path), { instanceOf: JournalFormatError, message: /journal format 9 is newer.*refusing to start/ });
    t.throws(() => Journal.open(path, { readOnly: true }), { instanceOf: JournalFormatError });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the journal itself refuses a VF without its PF and a PF removal under a VF", async (t) => {
  const dir = tmp();
  try {
    const j = Journal.open(join(dir, "journal"));
    await t.throwsAsync(j.putVf(VF), { instanceOf: JournalConflictError, message: /PF 0000:af:00\.2 is not in the journal/ });
    await j.putPf(PF);
    await j.putVf(VF);
    await t.throwsAsync(j.removePf(PF.dev), { instanceOf: JournalConflictError });
    await j.removeVf(VF.dev);
    await j.removePf(PF.dev);
    t.deepEqual(j.read().pfs, []);
    await j.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("read-only: a missing journal is not created; a journal held open by a writing process can be read", async (t) => {
  const dir = tmp();
  try {
    const path = join(dir, "journal");
    t.throws(() => Journal.open(path, { readOnly: true }), { instanceOf: JournalMissingError });
    t.false(existsSync(path), "a read-only open creates nothing");
    t.is(await run(["journal", "dump", "--state-dir", dir], () => undefined, () => undefined, {}), 3);

    // The writer: another process that keeps the environment open and writes on demand.
    const child = spawn(process.execPath, [fileURLToPath(new URL("./journal_writer_child.js", import.meta.url)), path, "hold"], { stdio: ["pipe", "pipe", "inherit"] });
    const lines = createInterface({ input: child.stdout! });
    const next = () => new Promise<string>((resolve) => lines.once("line", resolve));
    try {
      t.is(await next(), "ready");
      const r = Journal.open(path, { readOnly: true });
      t.deepEqual(r.read().pfs, [PF]);
      t.is(r.read().vfs.length, 0);
      child.stdin!.write("add\n");
      t.is(await next(), "added");
      t.deepEqual(r.read().vfs, [VF], "a re-read sees the writer's later commits");
      const out: string[] = [];
      t.is(await run(["journal", "dump", "--state-dir", dir, "-o", "table"], (s) => out.push(s), () => undefined, {}), 0);
      t.regex(out.join(""), /0000:af:04\.5\s+0000:af:00\.2\s+net\s+client/);
      await r.close();
    } finally {
      child.kill("SIGKILL");
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/* ----------------------------- registry + journal ------------------------------------ */

function registry(journal?: RegistryJournal, host = new FakeHost()) {
  const { log, lines } = silent();
  const reg = new Registry({ inventory: new Inventory(loadConfig()), host, log, defaultMode: "client", iface: "/run/vhostd/vf-", reservedPaths: ["/run/vhostd/vfe-vhostd.sock"], journal });
  return { reg, host, lines };
}

test("every change is journaled before it resolves; restore brings back the same ids, MACs, sockets, modes", async (t) => {
  const dir = tmp();
  try {
    const j = Journal.open(join(dir, "journal"));
    const { reg } = registry(j);
    await reg.addPf("0000:af:00.2");
    t.deepEqual(j.read().pfs, [PF]);
    const a = await reg.addVf({ vfdev: "0000:af:04.5", socket_file: "/tmp/a", mode: "server", mac: "02:00:00:00:00:0a", mtu: 9000, queue_pairs: 2, uuid: VF.uuid });
    const b = await reg.addVf({ vfdev: "0000:af:05.5", socket_file: "/tmp/b" });
    const c = await reg.addVf({ vfdev: "0000:af:06.5", socket_file: "/tmp/c" });
    t.is(j.read().vfs.length, 3, "journaled before addVf resolved");
    await reg.removeVf(b.dev);
    t.deepEqual(j.read().vfs.map((v) => v.dev), [a.dev, c.dev], "removal journaled before removeVf resolved");

    const { reg: again, host } = registry(j);
    const report = await again.restore(j.read());
    t.deepEqual(report.pfs.restored, [PF.dev]);
    t.deepEqual(report.vfs.restored, [a.dev, c.dev]);
    t.deepEqual(host.open_, [a, c], "the host gets exactly the specs it had");
    t.deepEqual(again.listVfs(PF.dev), [a, c]);
    t.is(again.listPfs()[0]!.switchId, 0);
    // The hole left by b's devId is reused by the next add, as before the restart.
    const b2 = await again.addVf({ vfdev: "0000:af:05.5", socket_file: "/tmp/b" });
    t.is(b2.devId, b.devId);
    await j.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a failed journal write undoes the change and answers EIO; nothing is half done", async (t) => {
  let fail = false;
  const calls: string[] = [];
  const journal: RegistryJournal = {
    putPf: async () => void (calls.push("putPf"), fail && (() => { throw new Error("disk full"); })()),
    removePf: async () => void (calls.push("removePf"), fail && (() => { throw new Error("disk full"); })()),
    putVf: async () => void (calls.push("putVf"), fail && (() => { throw new Error("disk full"); })()),
    removeVf: async () => void (calls.push("removeVf"), fail && (() => { throw new Error("disk full"); })()),
  };
  const { reg, host } = registry(journal);
  fail = true;
  let e = await t.throwsAsync(reg.addPf(PF.dev), { instanceOf: VfeError });
  t.is(e!.errno, -LinuxErrno.EIO);
  t.regex(e!.message, /disk full/);
  t.deepEqual(host.pfs, [], "the PF's datapath was taken down again");
  t.deepEqual(reg.listPfs(), []);
  fail = false;
  await reg.addPf(PF.dev);
  fail = true;
  e = await t.throwsAsync(reg.addVf({ vfdev: VF.dev, socket_file: "/tmp/a" }), { instanceOf: VfeError });
  t.is(e!.errno, -LinuxErrno.EIO);
  t.deepEqual(host.open_.map((v) => v.dev), [VF.dev], "the session was opened first (validate, open, journal)");
  t.deepEqual(host.closed, [VF.dev], "and closed again when the journal failed");
  t.deepEqual(reg.listVfs(PF.dev), []);
  fail = false;
  await reg.addVf({ vfdev: VF.dev, socket_file: "/tmp/a" });
  fail = true;
  e = await t.throwsAsync(reg.removeVf(VF.dev), { instanceOf: VfeError });
  t.is(e!.errno, -LinuxErrno.EIO);
  t.deepEqual(host.closed, [VF.dev], "removal: the journal first; on failure the session stays");
  t.is(reg.listVfs(PF.dev).length, 1);
  e = await t.throwsAsync(reg.removePf(PF.dev), { instanceOf: VfeError });
  t.is(e!.errno, -VfeErr.REMOVE_PF_WITH_VF);
  t.deepEqual(calls, ["putPf", "putPf", "putVf", "putVf", "removeVf"]);
});

test("restore: a VF whose session cannot open shows as failed; records that cannot be registered are skipped and removable", async (t) => {
  const dir = tmp();
  try {
    const j = Journal.open(join(dir, "journal"));
    await j.putPf(PF);
    await j.putVf(VF);
    await j.putVf(VF2);
    await j.putPf({ dev: "0000:af:00.3", type: "blk", switchId: 1 });
    // Collides with VF2's devId: skipped, not registered.
    await j.putVf({ ...VF2, dev: "0000:af:06.5", socketPath: "/tmp/other", mac: "02:00:00:00:00:02" });
    // Its PF is not in the journal (written raw: the journal refuses it otherwise).
    await j.putRaw("vf/0000:af:06.1", encodeValue({ v: 1, dev: "0000:af:06.1", pf: "0000:af:01.0", socketPath: "/tmp/x", mode: "client", mac: "02:00:00:00:00:03", mtu: 1500, queuePairs: 1, devId: 9 }));
    const host = new FakeHost();
    const open = host.open.bind(host);
    host.open = (spec) => {
      if (spec.dev === VF.dev) throw new Error("bind /gone/sock: ENOENT");
      open(spec);
    };
    const { reg, lines } = registry(j, host);
    const r = await reg.restore(j.read());
    t.deepEqual(r.vfs.restored, [VF2.dev]);
    t.deepEqual(r.vfs.failed.map((f) => f.vf), [VF.dev]);
    t.deepEqual(r.vfs.skipped.map((f) => f.vf).sort(), ["0000:af:06.1", "0000:af:06.5"]);
    t.regex(r.vfs.skipped.find((s) => s.vf === "0000:af:06.5")!.reason, /devId 0 is already used by VF 0000:af:05\.5/);
    t.regex(r.vfs.skipped.find((s) => s.vf === "0000:af:06.1")!.reason, /PF 0000:af:01\.0 is not in the journal/);
    const rt = reg.runtime(VF.dev)!;
    t.is(rt.state, "failed");
    t.regex(rt.lastError!, /restore: bind \/gone\/sock: ENOENT/);
    t.deepEqual(reg.listVfs(PF.dev).map((v) => v.dev), [VF.dev, VF2.dev], "the failed VF is listed");
    t.truthy(lines.find((l) => l.event === "vf_restore_failed" && l.vf === VF.dev && /ENOENT/.test(String(l.reason))));
    t.is(lines.filter((l) => l.event === "vf_restore_skipped").length, 2);
    t.is(j.read().vfs.length, 4, "nothing was deleted from the journal");
    // The failed VF holds its socket and blocks its PF's removal; vf -r removes it.
    let e = await t.throwsAsync(reg.addVf({ vfdev: "0000:af:07.5", socket_file: VF.socketPath }), { instanceOf: VfeError });
    t.is(e!.errno, -VfeErr.ADD_VF_VHOST_SOCK_EXIST);
    await reg.removeVf(VF.dev);
    await reg.removeVf(VF2.dev);
    // A skipped VF record still names the PF: the PF cannot go until vf -r clears it.
    e = await t.throwsAsync(reg.removePf(PF.dev), { instanceOf: VfeError });
    t.is(e!.errno, -VfeErr.REMOVE_PF_WITH_VF);
    t.regex(e!.message, /0000:af:06\.5.*vf -r/);
    await reg.removeVf("0000:af:06.5");
    await reg.removeVf("0000:af:06.1");
    await reg.removePf(PF.dev);
    t.deepEqual(j.read().vfs, []);
    t.deepEqual(j.read().pfs.map((p) => p.dev), ["0000:af:00.3"]);
    await j.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("errors name the journal key in their message", (t) => {
  const e = new JournalError("vf/0000:af:04.5", "not valid msgpack");
  t.is(e.message, "journal record vf/0000:af:04.5: not valid msgpack");
});

test("port security fields: stored only when not the default, read back, and absent in older records (defaults)", (t) => {
  // A record from before the fields: loads, no fields (the defaults apply).
  t.deepEqual(parseVfRecord(`vf/${VF.dev}`, encodeValue({ v: 1, ...VF })), VF);
  const withPs = { ...VF, spoofchk: false, trust: true, macAdmin: true };
  t.deepEqual(parseVfRecord(`vf/${VF.dev}`, encodeValue({ v: 1, ...withPs })), withPs);
  // Default values are not kept (a default VF's record stays as it was).
  t.deepEqual(parseVfRecord(`vf/${VF.dev}`, encodeValue({ v: 1, ...VF, spoofchk: true, trust: false })), VF);
  t.throws(() => parseVfRecord(`vf/${VF.dev}`, encodeValue({ v: 1, ...VF, trust: "yes" })), { message: /trust must be a boolean/ });
});
