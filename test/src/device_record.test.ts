// One VF/PF record, one validator: the same malformed records fed to every reader that meets
// them get the same refusal (errno -EINVAL and the same sentence) from each:
//   - vfe-vhostd's journal (raw records written into an LMDB journal, which is then read),
//   - the keeper's replica journal (raw entries, then the keeper starts on it),
//   - a sync delta (a put sent to the running keeper by vfe-vhostd's HA client),
//   - the session mirror's frame decoder (for the fields its frames carry: dev, switchId).
// The journal stores a VF without kind and switchId (its PF's), so the cases about those two
// are checked where the journal's record meets its PF: the registry's restore (registry tests).
import test from "ava";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Packr } from "msgpackr";
import { Keeper, REPLICA_DIR_NAME, ReplicaJournal } from "@vhostd/ha";
import { DeviceRecordError, decodeMirrorFrame, haSyncEndpoint, validatePfRecord, validateVfRecord, type HaOp } from "@vhostd/proto";
import { HaClient, HaSyncError, Journal, encodeValue, parsePfRecord, parseVfRecord } from "@vhostd/vhostd";
import type { VfHost, VfRuntime } from "@vhostd/runtime";

const EINVAL = -22;
const PF = "0000:af:00.2";
const NET: Record<string, unknown> = { dev: "0000:af:04.5", pf: PF, kind: "net", devId: 1, switchId: 0, socketPath: "/tmp/vhostd-rec-a.sock", mode: "client", mac: "52:54:00:00:af:25", mtu: 1500, queuePairs: 1 };
const BLK: Record<string, unknown> = { ...NET, kind: "blk", disk: { path: "null", size: 1 << 20, readonly: false, direct: false } };
const PF_REC: Record<string, unknown> = { pf: PF, switchId: 0, kind: "net" };

interface Case {
  name: string;
  /** The record in its sync form (the journal gets its own form of the same record). */
  vf?: Record<string, unknown>;
  pf?: Record<string, unknown>;
  problem: string;
  /** The journal form carries the field (not kind, switchId of a VF). */
  journal: boolean;
  /** A mirror frame carries the field (dev of a VF; dev and switchId of a PF). */
  mirror?: boolean;
}

const drop = (o: Record<string, unknown>, ...keys: string[]) => Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));

const CASES: Case[] = [
  { name: "an upper-case VF address", vf: { ...NET, dev: "0000:AF:04.5" }, problem: "dev is not a canonical PCI address", journal: true, mirror: true },
  { name: "a VF address whose slot is past 0x1f", vf: { ...NET, dev: "0000:af:ff.0" }, problem: "dev is not a canonical PCI address", journal: true, mirror: true },
  { name: "a short PF address", vf: { ...NET, pf: "af:00.2" }, problem: "pf is not a canonical PCI address", journal: true },
  { name: "an upper-case UUID", vf: { ...NET, uuid: "12345678-1234-1234-1234-1234567890AB" }, problem: "uuid is not a lowercase UUID", journal: true },
  { name: "a UUID that is not one", vf: { ...NET, uuid: "not-a-uuid" }, problem: "uuid is not a lowercase UUID", journal: true },
  { name: "a broadcast MAC", vf: { ...NET, mac: "ff:ff:ff:ff:ff:ff" }, problem: "mac is not a canonical unicast MAC", journal: true },
  { name: "an upper-case MAC", vf: { ...NET, mac: "52:54:00:00:AF:25" }, problem: "mac is not a canonical unicast MAC", journal: true },
  { name: "an MTU of 1e9", vf: { ...NET, mtu: 1e9 }, problem: "mtu must be an integer in 68..9000", journal: true },
  { name: "0 queue pairs", vf: { ...NET, queuePairs: 0 }, problem: "queuePairs must be an integer in 1..16", journal: true },
  { name: "a devId past 0xffff", vf: { ...NET, devId: 70000 }, problem: "devId must be an integer in 0..65535", journal: true },
  { name: "a relative socket path", vf: { ...NET, socketPath: "relative.sock" }, problem: "socketPath: socket path must be absolute", journal: true },
  { name: "a mode of both", vf: { ...NET, mode: "both" }, problem: 'mode must be "client" or "server"', journal: true },
  { name: "an unknown field", vf: { ...NET, evil: true }, problem: 'unknown field "evil"', journal: true },
  { name: "no MAC", vf: drop(NET, "mac"), problem: "field mac missing", journal: true },
  { name: "trust as a string", vf: { ...NET, trust: "yes" }, problem: "trust must be a boolean", journal: true },
  { name: "port security on a blk VF", vf: { ...BLK, spoofchk: false }, problem: "spoofchk applies to net VFs only", journal: true },
  { name: "a disk with a relative path", vf: { ...BLK, disk: { path: "rel.raw", size: 1 << 20, readonly: false, direct: false } }, problem: 'disk.path: disk path must be absolute (or "null")', journal: true },
  { name: "a blk VF without a disk", vf: drop(BLK, "disk"), problem: "a blk VF needs a disk", journal: false },
  { name: "a net VF with a disk", vf: { ...BLK, kind: "net" }, problem: "only blk VFs have a disk", journal: false },
  { name: "a kind of gpu", vf: { ...NET, kind: "gpu" }, problem: 'kind must be "net" or "blk"', journal: false },
  { name: "a VF switchId past 0xffff", vf: { ...NET, switchId: 70000 }, problem: "switchId must be an integer in 0..65535", journal: false },
  { name: "a PF switchId past 0xffff", pf: { ...PF_REC, switchId: 70000 }, problem: "switchId must be an integer in 0..65535", journal: true, mirror: true },
  { name: "a negative PF switchId", pf: { ...PF_REC, switchId: -5 }, problem: "switchId must be an integer in 0..65535", journal: true, mirror: true },
  { name: "a PF switchId as a string", pf: { ...PF_REC, switchId: "1" }, problem: "switchId must be an integer in 0..65535", journal: true, mirror: true },
];

// Each case its own device (one key each in the journals), unless the case is about the address.
CASES.forEach((c, i) => {
  const bus = (0x10 + i).toString(16);
  if (c.vf && c.vf.dev === NET.dev) c.vf.dev = `0000:${bus}:04.5`;
  if (c.pf && c.pf.pf === PF) c.pf.pf = `0000:${bus}:00.2`;
});

const keyOf = (c: Case) => (c.vf ? `vf/${String(c.vf.dev)}` : `pf/${String(c.pf!.pf)}`);
/** The journal's form of the same record. */
const storedOf = (c: Case) => (c.vf ? { v: 1, ...drop(c.vf, "kind", "switchId") } : { v: 1, dev: c.pf!.pf, type: c.pf!.kind, switchId: c.pf!.switchId });

interface Refusal {
  errno: number | undefined;
  message: string;
}

function expectRefusal(t: { is: (a: unknown, b: unknown, m?: string) => void; true: (a: boolean, m?: string) => void }, reader: string, c: Case, r: Refusal | undefined): void {
  t.true(r !== undefined, `${reader} accepted ${c.name}`);
  if (!r) return;
  t.is(r.errno, EINVAL, `${reader}, ${c.name}: errno`);
  t.true(r.message.endsWith(c.problem), `${reader}, ${c.name}: "${r.message}" does not end with "${c.problem}"`);
}

const root = mkdtempSync(path.join(tmpdir(), "vhostd-record-"));
test.after.always(() => rmSync(root, { recursive: true, force: true }));

test("the validator itself: every case is a DeviceRecordError with errno -EINVAL and its sentence", (t) => {
  for (const c of CASES) {
    const e = t.throws(() => (c.vf ? validateVfRecord(c.vf) : validatePfRecord(c.pf)), { instanceOf: DeviceRecordError }, c.name);
    t.is(e?.errno, EINVAL);
    t.is(e?.problem, c.problem, c.name);
  }
  t.notThrows(() => validateVfRecord(NET));
  t.notThrows(() => validateVfRecord(BLK));
  t.notThrows(() => validatePfRecord(PF_REC));
});

test("vfe-vhostd's journal: raw records in LMDB, read back: the same refusals", async (t) => {
  const j = Journal.open(path.join(root, "journal"));
  const cases = CASES.filter((c) => c.journal);
  try {
    for (const c of cases) await j.putRaw(keyOf(c), encodeValue(storedOf(c)));
    const contents = j.read();
    for (const c of cases) {
      const e = contents.errors.find((x) => x.key === keyOf(c));
      const bytes = encodeValue(storedOf(c));
      let errno: number | undefined;
      try {
        (c.vf ? parseVfRecord : parsePfRecord)(keyOf(c), bytes);
      } catch (err) {
        errno = (err as { errno?: number }).errno;
      }
      expectRefusal(t, "journal", c, e && { errno, message: e.error });
    }
  } finally {
    await j.close();
  }
});

class QuietHost implements VfHost {
  open(): void {}
  async close(): Promise<void> {}
  runtime(): VfRuntime | undefined {
    return undefined;
  }
  addPf(): void {}
  removePf(): void {}
  async shutdown(): Promise<void> {}
}

test.serial("the keeper: its replica journal at start, and sync deltas: the same refusals", async (t) => {
  const dir = mkdtempSync(path.join(root, "keeper-"));
  const replica = ReplicaJournal.open(path.join(dir, REPLICA_DIR_NAME));
  for (const c of CASES) await replica.set("devices", keyOf(c), c.vf ?? c.pf);
  await replica.close();

  const lines: Array<Record<string, unknown>> = [];
  const keeper = await Keeper.start({ runDir: dir, stateDir: dir, log: recordingLog(lines), host: new QuietHost(), heartbeatMs: 50, peerTimeoutMs: 1000 });
  const quiet = recordingLog([]);
  const client = new HaClient({ endpoint: haSyncEndpoint(dir), log: quiet, epoch: 1, heartbeatMs: 50, peerTimeoutMs: 1000, requestTimeoutMs: 3000 });
  try {
    for (const c of CASES) {
      const l = lines.find((x) => x.event === "replica_record_unusable" && x.key === keyOf(c));
      expectRefusal(t, "replica", c, l && { errno: l.errno as number, message: String(l.err) });
    }
    t.deepEqual(keeper.list().vfs, [], "no malformed record was opened");

    await client.connect();
    await client.hello();
    for (const c of CASES) {
      const op: HaOp = { op: "put", table: "devices", key: keyOf(c), value: c.vf ?? c.pf };
      const r = await client.send([op]).then(
        () => undefined,
        (e: Error) => ({ errno: deltaErrno(e), message: e.message }),
      );
      expectRefusal(t, "sync delta", c, r);
    }
    t.deepEqual(keeper.list(), { pfs: [], vfs: [], failed: [] }, "no refused delta changed anything");
  } finally {
    client.close();
    await keeper.stop();
  }
});

/** A logger (pino's shape, as the daemons take it) that keeps what is logged at error level. */
function recordingLog(lines: Array<Record<string, unknown>>): Parameters<typeof Keeper.start>[0]["log"] {
  const log: Record<string, unknown> = {};
  for (const level of ["trace", "debug", "info", "warn", "fatal"]) log[level] = () => undefined;
  log.error = (obj: unknown) => {
    if (typeof obj === "object" && obj !== null) lines.push(obj as Record<string, unknown>);
  };
  log.child = () => log;
  log.isLevelEnabled = () => false;
  log.level = "error";
  return log as unknown as Parameters<typeof Keeper.start>[0]["log"];
}

/** The errno of a refused delta: a number in the keeper's nack, as vfe-vhostd's keeper host reads it. */
function deltaErrno(e: Error): number | undefined {
  return e instanceof HaSyncError ? e.errno : undefined;
}

test("the session mirror's decoder: the same refusals for the fields its frames carry", (t) => {
  const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
  const rec = { conn: -1, listen: -1, reconnects: 0, session: { features: "0x0", protocolFeatures: "0x0", status: 0, owner: false, regions: [], vrings: [] } };
  for (const c of CASES.filter((x) => x.mirror)) {
    const frame = c.vf ? { op: "vf", dev: c.vf.dev, rec, count: 0 } : { op: "pf", dev: c.pf!.pf, switchId: c.pf!.switchId, count: 0 };
    let r: Refusal | undefined;
    try {
      decodeMirrorFrame(packr.pack(frame));
    } catch (e) {
      r = { errno: (e as { errno?: number }).errno, message: (e as Error).message };
    }
    expectRefusal(t, "mirror", c, r);
  }
});
