// The LMDB journal of vfe-vhostd: the source of truth for configuration (which PFs and VFs
// exist and with which parameters), so that after both daemons die, or the host reboots,
// every device comes back by itself with the same devId, switchId, MAC, socket and mode.
//
// Layout: one LMDB environment at <state-dir>/journal (a directory: data.mdb + lock.mdb),
// string keys, values are msgpack (`new Packr({ useRecords: false })`, standard msgpack)
// stored as binary Buffers, so the project keeps one msgpack codec (lmdb bundles its own):
//
//   meta/format   journal format version (number); written once, when the journal is created
//   meta/epoch    u32, bumped and made durable at every daemon start (the keeper rejects stale ones)
//   pf/<DEV>      PfRecord: what re-adding the PF needs
//   vf/<DEV>      VfRecord: what re-adding the VF needs (its kind is its PF's type)
//
// Durability: every write awaits its LMDB commit *and* `flushed` (lmdb-js on Linux commits
// with overlappingSync: the commit promise means "visible and safe against kill -9", the
// flush means "safe against power loss" too). Callers acknowledge only after that.
//
// Invariant kept by the write transactions themselves (not only by the registry): a vf/ record
// exists only while its PF's pf/ record exists. putVf refuses without the PF record and
// removePf refuses while a VF record names the PF, both inside the same write transaction,
// so no interleaving and no crash can leave a VF without its PF.
//
// Everything read is validated: a record that does not decode, has the wrong shape, or whose
// key and content disagree is a JournalError naming the key. A record or journal written by
// a newer format is a JournalFormatError: the daemon refuses to start rather than drop
// fields it does not understand.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { open, type Database, type RootDatabase } from "lmdb";
import { Packr } from "msgpackr";
import {
  DeviceRecordError,
  storedVfRecordValue,
  validateStoredPfRecord,
  validateStoredVfRecord,
  type StoredPfRecord,
  type StoredVfRecord,
} from "@vhostd/proto";

/** Format of the records this code writes and understands. */
export const JOURNAL_FORMAT = 1;
export const KEY_FORMAT = "meta/format";
export const KEY_EPOCH = "meta/epoch";
export const PF_PREFIX = "pf/";
export const VF_PREFIX = "vf/";
/** Largest value we decode; a record is ~200 bytes, anything far bigger is not ours. */
export const MAX_RECORD_BYTES = 16 * 1024;
export const EPOCH_MAX = 0xffff_ffff;

/** pf/<DEV>: the journal form of the PF record (@vhostd/proto device_record.ts). */
export type PfRecord = StoredPfRecord;
/** vf/<DEV>: the journal form of the VF record (no kind, no switchId: they are its PF's). */
export type VfRecord = StoredVfRecord;

/** A record (or the journal) is unreadable or inconsistent; names the key. */
export class JournalError extends Error {
  constructor(
    readonly key: string,
    readonly detail: string,
    /** -EINVAL: the record is not valid (every record reader refuses it the same way). */
    readonly errno: number = -22,
  ) {
    super(key ? `journal record ${key}: ${detail}` : `journal: ${detail}`);
    this.name = "JournalError";
  }
}

/** Written by a newer (or unknown) format: refuse to use the journal at all. */
export class JournalFormatError extends JournalError {
  constructor(key: string, detail: string) {
    super(key, detail);
    this.name = "JournalFormatError";
  }
}

/** A write would break the PF/VF invariant (VF without PF). */
export class JournalConflictError extends JournalError {
  constructor(key: string, detail: string) {
    super(key, detail);
    this.name = "JournalConflictError";
  }
}

/** No journal exists at the path (read-only open never creates one). */
export class JournalMissingError extends Error {
  constructor(readonly path: string) {
    super(`no journal at ${path} (has vfe-vhostd ever run with this state directory?)`);
    this.name = "JournalMissingError";
  }
}

export interface JournalContents {
  /** The journal's format version (0 for an empty journal that was never initialised). */
  format: number;
  epoch: number;
  /** Valid PF records, by address. */
  pfs: PfRecord[];
  /** Valid VF records, by address. */
  vfs: VfRecord[];
  /** Records that could not be used, one per key (never fatal). */
  errors: Array<{ key: string; error: string }>;
}


const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/** Encodes a value for the journal (one value per call: never pass `packr.pack` to map()). */
export function encodeValue(v: unknown): Buffer {
  return packr.pack(v);
}

/* ------------------------------------ validation ------------------------------------- */

type Raw = Record<string, unknown>;

function decode(key: string, buf: unknown): unknown {
  if (!Buffer.isBuffer(buf) && !(buf instanceof Uint8Array)) throw new JournalError(key, "value is not binary");
  if (buf.length === 0) throw new JournalError(key, "empty value");
  if (buf.length > MAX_RECORD_BYTES) throw new JournalError(key, `value is ${buf.length} bytes, more than ${MAX_RECORD_BYTES}`);
  try {
    return packr.unpack(Buffer.from(buf.buffer, buf.byteOffset, buf.length));
  } catch (e) {
    throw new JournalError(key, `not valid msgpack: ${(e as Error).message}`);
  }
}

/**
 * The record's map with its version checked and taken off: what is left is a device record,
 * validated by @vhostd/proto (the rules and errors every reader shares).
 */
function recordBody(key: string, v: unknown): Raw {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Map) throw new JournalError(key, "record is not a msgpack map");
  const { v: ver, ...body } = v as Raw;
  if (typeof ver !== "number" || !Number.isInteger(ver) || ver < 1) throw new JournalError(key, "record version v missing or not a positive integer");
  if (ver > JOURNAL_FORMAT) throw new JournalFormatError(key, `record format ${ver} is newer than this vfe-vhostd understands (${JOURNAL_FORMAT}); refusing to guess`);
  return body;
}

/** A device record's refusal as the journal reports it: the same sentence, naming the key. */
function asJournalError(key: string, e: unknown): never {
  if (e instanceof DeviceRecordError) throw new JournalError(key, e.problem, e.errno);
  throw e;
}

/** Validates a pf/ record; the key must name the same device. */
export function parsePfRecord(key: string, value: unknown): PfRecord {
  const body = recordBody(key, decode(key, value));
  try {
    return validateStoredPfRecord(body, key);
  } catch (e) {
    return asJournalError(key, e);
  }
}

/** Validates a vf/ record; the key must name the same device. */
export function parseVfRecord(key: string, value: unknown): VfRecord {
  const body = recordBody(key, decode(key, value));
  try {
    return validateStoredVfRecord(body, key);
  } catch (e) {
    return asJournalError(key, e);
  }
}

function parseMetaInt(key: string, value: unknown, max: number): number {
  const v = decode(key, value);
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) throw new JournalError(key, `must be an integer in 0..${max}`);
  return v;
}

function pfValue(r: PfRecord): Buffer {
  return encodeValue({ v: JOURNAL_FORMAT, dev: r.dev, type: r.type, switchId: r.switchId });
}

function vfValue(r: VfRecord): Buffer {
  return encodeValue({ v: JOURNAL_FORMAT, ...storedVfRecordValue(r) });
}

/* -------------------------------------- journal -------------------------------------- */

export interface JournalOpenOptions {
  /** Open without writing anything (journal dump, the daemon being down or up). */
  readOnly?: boolean;
}

type Db = RootDatabase<Buffer, string>;

export class Journal {
  private epochValue = 0;

  private constructor(
    readonly path: string,
    private readonly db: Db,
    readonly readOnly: boolean,
    readonly format: number,
  ) {}

  /**
   * Opens (read-write: creates) the journal at `path` and checks its format. A read-only open
   * never creates anything: a missing journal is a JournalMissingError. Throws
   * JournalFormatError for a journal of a newer format, JournalError when meta/format is
   * unreadable.
   */
  static open(path: string, opts: JournalOpenOptions = {}): Journal {
    const readOnly = opts.readOnly ?? false;
    // lmdb's read-only open would create an empty directory; check first.
    if (readOnly && !existsSync(join(path, "data.mdb"))) throw new JournalMissingError(path);
    if (!readOnly && !existsSync(path)) mkdirSync(path, { recursive: true, mode: 0o700 });
    const db = open<Buffer, string>({ path, encoding: "binary", readOnly, noSubdir: false }) as Db;
    try {
      const raw = db.getBinary(KEY_FORMAT);
      let format = 0;
      if (raw !== undefined) {
        format = parseMetaInt(KEY_FORMAT, raw, 0xffff);
        if (format > JOURNAL_FORMAT) throw new JournalFormatError(KEY_FORMAT, `journal format ${format} is newer than this vfe-vhostd understands (${JOURNAL_FORMAT}); refusing to start`);
        if (format < 1) throw new JournalError(KEY_FORMAT, `format ${format} is not a valid journal format`);
      } else if (hasAnyKey(db)) {
        throw new JournalError(KEY_FORMAT, "missing, but the journal holds records: not a vhostd journal, or damaged");
      }
      if (!readOnly && format === 0) {
        // A new journal: the format key is written synchronously and durably before use.
        db.putSync(KEY_FORMAT, encodeValue(JOURNAL_FORMAT));
        format = JOURNAL_FORMAT;
      }
      const j = new Journal(path, db, readOnly, format);
      // A corrupt epoch does not stop a read-only open (dump lists it under errors); bumping
      // it throws, so the daemon refuses to start rather than reuse an epoch the keeper saw.
      const e = db.getBinary(KEY_EPOCH);
      try {
        j.epochValue = e === undefined ? 0 : parseMetaInt(KEY_EPOCH, e, EPOCH_MAX);
      } catch {
        j.epochValue = -1;
      }
      return j;
    } catch (e) {
      void db.close();
      throw e;
    }
  }

  /** The epoch as last read or bumped (-1 when meta/epoch is unreadable). */
  get epoch(): number {
    return this.epochValue;
  }

  /** Bumps meta/epoch in one transaction and resolves once that is durable. */
  async bumpEpoch(): Promise<number> {
    this.writable();
    const next = await this.commit(() => {
      const raw = this.db.getBinary(KEY_EPOCH);
      const cur = raw === undefined ? 0 : parseMetaInt(KEY_EPOCH, raw, EPOCH_MAX);
      if (cur >= EPOCH_MAX) throw new JournalError(KEY_EPOCH, `epoch ${cur} cannot be bumped any further`);
      this.db.put(KEY_EPOCH, encodeValue(cur + 1));
      return cur + 1;
    });
    this.epochValue = next;
    return next;
  }

  /** Every record, validated. Unusable records are listed in `errors`; a newer format throws. */
  read(): JournalContents {
    // A fresh snapshot: another process (the daemon) may have written since our last read.
    this.db.resetReadTxn();
    const out: JournalContents = { format: this.format, epoch: 0, pfs: [], vfs: [], errors: [] };
    const fail = (key: string, e: unknown) => {
      if (e instanceof JournalFormatError) throw e;
      out.errors.push({ key, error: e instanceof JournalError ? e.detail : String((e as Error)?.message ?? e) });
    };
    for (const { key, value } of this.db.getRange({})) {
      const k = typeof key === "string" ? key : String(key);
      try {
        if (typeof key !== "string") throw new JournalError(k, "key is not a string");
        if (key === KEY_FORMAT) continue;
        if (key === KEY_EPOCH) out.epoch = parseMetaInt(key, value, EPOCH_MAX);
        else if (key.startsWith(PF_PREFIX)) out.pfs.push(parsePfRecord(key, value));
        else if (key.startsWith(VF_PREFIX)) out.vfs.push(parseVfRecord(key, value));
        else throw new JournalError(key, "unknown key");
      } catch (e) {
        fail(k.slice(0, 128), e);
      }
    }
    this.epochValue = out.epoch;
    return out;
  }

  /** True if any value is stored under vf/<dev> (valid or not). */
  hasVfKey(dev: string): boolean {
    return this.db.doesExist(VF_PREFIX + dev);
  }

  hasPfKey(dev: string): boolean {
    return this.db.doesExist(PF_PREFIX + dev);
  }

  async putPf(rec: PfRecord): Promise<void> {
    this.writable();
    const value = pfValue(rec);
    await this.commit(() => this.db.put(PF_PREFIX + rec.dev, value));
  }

  /** Removes pf/<dev>; refuses (JournalConflictError) while a VF record names the PF. */
  async removePf(dev: string): Promise<void> {
    this.writable();
    await this.commit(() => {
      for (const { key, value } of this.db.getRange({ start: VF_PREFIX, end: "vf0" })) {
        let pf: string | undefined;
        try {
          pf = parseVfRecord(String(key), value).pf;
        } catch {
          continue; // an unreadable record names no PF we could check
        }
        if (pf === dev) throw new JournalConflictError(String(key), `VF ${String(key).slice(VF_PREFIX.length)} of PF ${dev} is still in the journal`);
      }
      this.db.remove(PF_PREFIX + dev);
    });
  }

  /** Writes vf/<dev>; refuses (JournalConflictError) unless the PF's record exists. */
  async putVf(rec: VfRecord): Promise<void> {
    this.writable();
    const value = vfValue(rec);
    await this.commit(() => {
      if (!this.db.doesExist(PF_PREFIX + rec.pf)) throw new JournalConflictError(VF_PREFIX + rec.dev, `PF ${rec.pf} is not in the journal`);
      this.db.put(VF_PREFIX + rec.dev, value);
    });
  }

  async removeVf(dev: string): Promise<void> {
    this.writable();
    await this.commit(() => this.db.remove(VF_PREFIX + dev));
  }

  /** Writes a raw value (tests: hostile and future-format records). */
  async putRaw(key: string, value: Buffer): Promise<void> {
    this.writable();
    await this.commit(() => this.db.put(key, value));
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  private writable(): void {
    if (this.readOnly) throw new Error(`journal ${this.path} is open read-only`);
  }

  /** One write transaction; resolves after it is committed and flushed to disk. */
  private async commit<T>(fn: () => T): Promise<T> {
    const r = await this.db.transaction(fn);
    await this.db.flushed;
    return r;
  }
}

function hasAnyKey(db: Database<Buffer, string>): boolean {
  for (const _ of db.getKeys({ limit: 1 })) return true;
  return false;
}
