// The keeper's replica journal: an LMDB environment at <state-dir>/keeper-journal holding
// what vfe-vhostd told the keeper to run, so the keeper alone brings every VF back after its
// own restart or a host reboot (restored before the sync socket is served).
//
// Why not vhostd's Journal (journal.ts): its records are vhostd's configuration (no TAP
// uplink, no kind or switchId per VF, the PF/VF rule inside its transactions), while the
// keeper replicates the sync protocol's generic tables as they arrive. So: keys
//   meta/format  1
//   meta/epoch   epoch of the last applied delta or snapshot
//   meta/seq     its seq (the SyncServer's sequencer starts from these)
//   t/<table>/<key>  the value, standard msgpack (useRecords: false) in a binary Buffer
//   g/<dev>/writeback  a blk guest's CONFIG_WCE choice (0|1): what the guest set must hold on
//                      whoever runs the disk next, also after both daemons died
// Each delta is one write transaction (ops + epoch/seq) awaited until committed and flushed:
// the keeper acknowledges only after that. A snapshot replaces every t/ key in one transaction.
// Everything read is validated by the caller (keeper.ts); undecodable values are reported.
import { existsSync, mkdirSync } from "node:fs";
import { open, type RootDatabase } from "lmdb";
import { Packr } from "msgpackr";
import { HA_TABLES, emptyState, type HaOp, type HaState, type HaTable } from "@vhostd/proto";

export const REPLICA_FORMAT = 1;
const KEY_FORMAT = "meta/format";
const KEY_EPOCH = "meta/epoch";
const KEY_SEQ = "meta/seq";
const GUEST_PREFIX = "g/";
const MAX_VALUE_BYTES = 64 * 1024;

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export interface ReplicaContents {
  epoch: number;
  seq: number;
  state: HaState;
  errors: Array<{ key: string; error: string }>;
}

type Db = RootDatabase<Buffer, string>;

function tkey(table: HaTable, key: string): string {
  return `t/${table}/${key}`;
}

export class ReplicaJournal {
  private constructor(
    readonly path: string,
    private readonly db: Db,
  ) {}

  static open(path: string): ReplicaJournal {
    if (!existsSync(path)) mkdirSync(path, { recursive: true, mode: 0o700 });
    const db = open<Buffer, string>({ path, encoding: "binary", noSubdir: false }) as Db;
    const raw = db.getBinary(KEY_FORMAT);
    if (raw === undefined) db.putSync(KEY_FORMAT, packr.pack(REPLICA_FORMAT));
    else {
      let f: unknown;
      try {
        f = packr.unpack(raw);
      } catch {
        f = undefined;
      }
      if (f !== REPLICA_FORMAT) {
        void db.close();
        throw new Error(`replica journal ${path}: format ${String(f)} is not ${REPLICA_FORMAT}; refusing to guess`);
      }
    }
    return new ReplicaJournal(path, db);
  }

  read(): ReplicaContents {
    this.db.resetReadTxn();
    const out: ReplicaContents = { epoch: 0, seq: 0, state: emptyState(), errors: [] };
    for (const { key, value } of this.db.getRange({})) {
      const k = String(key);
      try {
        if (k === KEY_FORMAT || k.startsWith(GUEST_PREFIX)) continue;
        if (!Buffer.isBuffer(value) && !((value as unknown) instanceof Uint8Array)) throw new Error("value is not binary");
        if (value.length === 0 || value.length > MAX_VALUE_BYTES) throw new Error(`value of ${value.length} bytes`);
        const v = packr.unpack(value) as unknown;
        if (k === KEY_EPOCH || k === KEY_SEQ) {
          if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new Error("not an integer >= 0");
          if (k === KEY_EPOCH) out.epoch = v;
          else out.seq = v;
          continue;
        }
        const m = /^t\/([a-z]+)\/(.+)$/.exec(k);
        if (!m || !(HA_TABLES as readonly string[]).includes(m[1]!) || m[2] === "__proto__") throw new Error("unknown key");
        (out.state[m[1] as HaTable] as Record<string, unknown>)[m[2]!] = v;
      } catch (e) {
        out.errors.push({ key: k.slice(0, 128), error: (e as Error).message });
      }
    }
    return out;
  }

  /** A blk guest's CONFIG_WCE choice on `dev` (undefined: never set, or unreadable). */
  writeback(dev: string): number | undefined {
    const raw = this.db.getBinary(`${GUEST_PREFIX}${dev}/writeback`);
    if (raw === undefined || raw.length !== 1 || raw[0]! > 1) return undefined;
    return raw[0];
  }

  /**
   * Records it, durable when this returns: the guest's config write is answered after this
   * (a guest told "write-through" must never find write-back after a restart). Synchronous:
   * a guest sets it once or twice per boot.
   */
  setWriteback(dev: string, writeback: number): void {
    this.db.putSync(`${GUEST_PREFIX}${dev}/writeback`, Buffer.of(writeback));
  }

  forgetGuest(dev: string): void {
    this.db.removeSync(`${GUEST_PREFIX}${dev}/writeback`);
  }

  /** One delta: its ops and the new epoch/seq, durable when this resolves. */
  async apply(epoch: number, seq: number, ops: readonly HaOp[]): Promise<void> {
    const values = ops.map((op) => (op.op === "put" ? packr.pack(op.value) : undefined));
    await this.db.transaction(() => {
      ops.forEach((op, i) => {
        if (op.op === "put") this.db.put(tkey(op.table, op.key), values[i]!);
        else this.db.remove(tkey(op.table, op.key));
      });
      this.db.put(KEY_EPOCH, packr.pack(epoch));
      this.db.put(KEY_SEQ, packr.pack(seq));
    });
    await this.db.flushed;
  }

  /** Sets (or with undefined drops) one key: a change the keeper could not apply is taken back. */
  async set(table: HaTable, key: string, value: unknown): Promise<void> {
    const buf = value === undefined ? undefined : packr.pack(value);
    await this.db.transaction(() => (buf ? this.db.put(tkey(table, key), buf) : this.db.remove(tkey(table, key))));
    await this.db.flushed;
  }

  /** Replaces every table with `state` (a snapshot), durable when this resolves. */
  async replace(epoch: number, seq: number, state: HaState): Promise<void> {
    await this.db.transaction(() => {
      for (const k of [...this.db.getKeys({ start: "t/", end: "t0" })]) this.db.remove(k);
      for (const table of HA_TABLES) {
        const t = state[table] as Record<string, unknown>;
        for (const key of Object.keys(t)) this.db.put(tkey(table, key), packr.pack(t[key]));
      }
      this.db.put(KEY_EPOCH, packr.pack(epoch));
      this.db.put(KEY_SEQ, packr.pack(seq));
    });
    await this.db.flushed;
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
