// The HA sync protocol between vfe-vhostd and its keeper vfe-vhostd-ha (pure: no I/O).
//
// The state channel (docs/architecture.md, "HA channels"): ZeroMQ, one msgpack envelope per
// message: [ "VHHA", version, type, body ].
// Every decoder here treats its input as hostile: it validates everything and throws
// SyncError, and only SyncError, for anything it does not accept.
import { Packr } from "msgpackr";
import { describe, fail, fields, int, isPlainObject, oneOf, str, type Body } from "./body_check.js";

/* ------------------------------------------------------------------------- constants */

export const HA_SYNC_MAGIC = "VHHA";
/** Bumped on any incompatible change of a message; both ends must agree exactly. */
export const HA_SYNC_PROTOCOL_VERSION = 1;
/** Largest encoded sync message (a snapshot of every device and session fits easily). */
export const HA_SYNC_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Ops in one delta; a bigger change set is a snapshot. */
export const HA_SYNC_MAX_OPS = 10_000;
/** Entries per table in one snapshot. */
export const HA_SYNC_MAX_TABLE_ENTRIES = 100_000;
/** Keys (device ids, session ids, fd ids) and version strings. */
export const HA_SYNC_MAX_KEY_LENGTH = 256;
export const HA_SYNC_MAX_REASON_LENGTH = 1024;
/** A nack's errno is -1..-this (Linux errnos, vfe's -1000.. and vhostd's -1100.. codes). */
export const HA_SYNC_MAX_ERRNO = 4095;
/** Nesting depth of the generic values carried in ops and state. */
export const HA_SYNC_MAX_VALUE_DEPTH = 32;

/** File names inside the run directory (mode 0600, the directory 0700). */
export const HA_SYNC_SOCKET_NAME = "ha-sync.ipc";
export const HA_FD_SOCKET_NAME = "ha-fds.sock";

export function haSyncEndpoint(runDir: string): string {
  return `ipc://${runDir.replace(/\/+$/, "")}/${HA_SYNC_SOCKET_NAME}`;
}

/* ----------------------------------------------------------------------------- types */

/** A state entry naming fds held on the fd channel (the id is the channel's id). */
export interface FdRef {
  id: string;
  kind: string;
  count: number;
}

export const HA_TABLES = ["devices", "sessions", "fds"] as const;
export type HaTable = (typeof HA_TABLES)[number];

export interface HaState {
  devices: Record<string, unknown>;
  sessions: Record<string, unknown>;
  fds: Record<string, FdRef>;
}

export interface HaOp {
  op: "put" | "del";
  table: HaTable;
  key: string;
  /** Required for put (an FdRef in table "fds"); absent for del. */
  value?: unknown;
}

export type RejectCode = "stale_epoch" | "bad_version" | "no_hello" | "malformed" | "overloaded" | "replaced";
export type NackCode = "gap" | "apply_failed" | "unknown_epoch";

export interface HelloMsg {
  type: "hello";
  protocolVersion: number;
  /** vhostd's epoch, bumped and persisted at every vhostd start (>= 1). */
  epoch: number;
  pid: number;
  version: string;
}
export interface WelcomeMsg {
  type: "welcome";
  version: string;
  /** The last epoch/seq the keeper's journal holds (0/0 when none). */
  lastEpoch: number;
  lastSeq: number;
  hasState: boolean;
}
export interface SnapshotRequestMsg {
  type: "snapshot_request";
  epoch: number;
}
export interface SnapshotMsg {
  type: "snapshot";
  epoch: number;
  /** The state includes every delta up to and including this seq of this epoch. */
  seq: number;
  state: HaState;
}
export interface DeltaMsg {
  type: "delta";
  epoch: number;
  /** Monotonic per epoch, starting at 1. */
  seq: number;
  ops: HaOp[];
}
export interface AckMsg {
  type: "ack";
  epoch: number;
  seq: number;
  /** What is acknowledged: a delta, or a snapshot pushed by vhostd (both may share a seq). */
  of: "delta" | "snapshot";
}
export interface NackMsg {
  type: "nack";
  epoch: number;
  seq: number;
  of: "delta" | "snapshot";
  code: NackCode;
  reason: string;
  /**
   * apply_failed: why, as a negative errno (the host's, or -EINVAL for a refused record), so
   * vfe-vhostd answers the RPC with it exactly as standalone. Absent from a keeper older than
   * this field (its reason then starts "[errno N]"), and where no errno applies.
   */
  errno?: number;
}
export interface HeartbeatMsg {
  type: "heartbeat";
  epoch: number;
  /** Sender's last acknowledged (keeper: applied) seq; informative. */
  seq: number;
  /** Sender's monotonic clock (performance.now()), for round-trip and age diagnostics. */
  monoMs: number;
}
export interface RejectMsg {
  type: "reject";
  code: RejectCode;
  reason: string;
}

export type SyncMessage =
  | HelloMsg
  | WelcomeMsg
  | SnapshotRequestMsg
  | SnapshotMsg
  | DeltaMsg
  | AckMsg
  | NackMsg
  | HeartbeatMsg
  | RejectMsg;
export type SyncMessageType = SyncMessage["type"];

export const SYNC_MESSAGE_TYPES: readonly SyncMessageType[] = [
  "hello",
  "welcome",
  "snapshot_request",
  "snapshot",
  "delta",
  "ack",
  "nack",
  "heartbeat",
  "reject",
];

export type SyncErrorCode = "malformed" | "bad_magic" | "bad_version" | "unknown_type" | "too_large" | "invalid";

/** The only error the decoders throw. `code` maps onto a reject's code via rejectCodeOf(). */
export class SyncError extends Error {
  /** A peer's message or record refused: -EINVAL, as every device record reader refuses one. */
  readonly errno = -22;
  constructor(
    readonly code: SyncErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "SyncError";
  }
}

export function rejectCodeOf(err: SyncError): RejectCode {
  return err.code === "bad_version" ? "bad_version" : "malformed";
}

/* ----------------------------------------------------------------------------- codec */

// Standard msgpack on the wire (no record extension); 64-bit integers decode as bigint so a
// hostile peer cannot smuggle a lossy number past the integer checks below.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint", moreTypes: false });

export function encodeSyncMessage(msg: SyncMessage): Buffer {
  const { type, ...body } = msg;
  // Validate what we send too: a bug on our side must not reach the peer as garbage.
  const checked = validateBody(type, body);
  const buf = packr.pack([HA_SYNC_MAGIC, HA_SYNC_PROTOCOL_VERSION, type, checked]);
  if (buf.length > HA_SYNC_MAX_MESSAGE_BYTES)
    throw new SyncError("too_large", `${type} message of ${buf.length} bytes exceeds ${HA_SYNC_MAX_MESSAGE_BYTES}`);
  return buf;
}

/** Decodes and validates one message; throws SyncError (and nothing else) on any defect. */
export function decodeSyncMessage(buf: Uint8Array): SyncMessage {
  if (!(buf instanceof Uint8Array)) throw new SyncError("malformed", "message is not a byte buffer");
  if (buf.length > HA_SYNC_MAX_MESSAGE_BYTES)
    throw new SyncError("too_large", `message of ${buf.length} bytes exceeds ${HA_SYNC_MAX_MESSAGE_BYTES}`);
  if (buf.length === 0) throw new SyncError("malformed", "empty message");
  const env = unpackOne(buf);
  if (!Array.isArray(env) || env.length !== 4) throw new SyncError("malformed", "envelope is not a 4-element array");
  const [magic, version, type, body] = env as unknown[];
  if (magic !== HA_SYNC_MAGIC) throw new SyncError("bad_magic", "bad magic (not a VHHA message)");
  if (version !== HA_SYNC_PROTOCOL_VERSION)
    throw new SyncError(
      "bad_version",
      `protocol version ${describe(version)} is not supported (this end speaks ${HA_SYNC_PROTOCOL_VERSION})`,
    );
  if (typeof type !== "string" || !(SYNC_MESSAGE_TYPES as readonly string[]).includes(type))
    throw new SyncError("unknown_type", `unknown message type ${describe(type)}`);
  return { type, ...validateBody(type as SyncMessageType, body) } as SyncMessage;
}

/** msgpackr throws assorted errors (and RangeError on deep nesting): all become SyncError. */
function unpackOne(buf: Uint8Array): unknown {
  let values: unknown[];
  try {
    values = packr.unpackMultiple(Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length)) as unknown[];
  } catch (err) {
    throw new SyncError("malformed", `not msgpack: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!Array.isArray(values) || values.length !== 1)
    throw new SyncError("malformed", `expected one msgpack value, got ${Array.isArray(values) ? values.length : "none"}`);
  return values[0];
}

/**
 * A generic value as state carries it for now: null, booleans, finite numbers, bigints, strings,
 * byte strings, arrays and plain maps, bounded in depth. Anything else (timestamps, extensions,
 * NaN) is refused so later schemas never meet a surprise.
 */
function checkValue(where: string, v: unknown, depth: number): void {
  if (depth > HA_SYNC_MAX_VALUE_DEPTH) throw new SyncError("invalid", `${where} nests deeper than ${HA_SYNC_MAX_VALUE_DEPTH}`);
  if (v === null || typeof v === "boolean" || typeof v === "string" || typeof v === "bigint") return;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new SyncError("invalid", `${where} holds a non-finite number`);
    return;
  }
  if (v instanceof Uint8Array) return;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) checkValue(where, v[i], depth + 1);
    return;
  }
  if (isPlainObject(v)) {
    for (const k of Object.keys(v)) checkValue(where, v[k], depth + 1);
    return;
  }
  throw new SyncError("invalid", `${where} holds an unsupported value (${describe(v)})`);
}

function checkKey(where: string, k: unknown): string {
  if (typeof k !== "string" || k.length === 0 || k.length > HA_SYNC_MAX_KEY_LENGTH)
    throw new SyncError("invalid", `${where} key must be a string of 1..${HA_SYNC_MAX_KEY_LENGTH} characters`);
  // Keys index plain objects on both ends: never let one reach a prototype.
  if (k === "__proto__") throw new SyncError("invalid", `${where} key __proto__ is reserved`);
  return k;
}

export function validateFdRef(where: string, v: unknown): FdRef {
  const b = fields(where, v, ["id", "kind", "count"]);
  return {
    id: str(where, b, "id", HA_SYNC_MAX_KEY_LENGTH, 1),
    kind: str(where, b, "kind", 64, 1),
    count: int(where, b, "count", 1, FD_CHANNEL_MAX_FDS_PER_FRAME),
  };
}

function validateState(v: unknown): HaState {
  const b = fields("snapshot.state", v, HA_TABLES);
  const out: HaState = { devices: {}, sessions: {}, fds: {} };
  for (const table of HA_TABLES) {
    const t = b[table];
    if (!isPlainObject(t)) fail("snapshot.state", table, "must be a map");
    const keys = Object.keys(t);
    if (keys.length > HA_SYNC_MAX_TABLE_ENTRIES) fail("snapshot.state", table, `has more than ${HA_SYNC_MAX_TABLE_ENTRIES} entries`);
    const dst: Record<string, unknown> = {};
    for (const k of keys) {
      checkKey(`snapshot.state.${table}`, k);
      dst[k] = table === "fds" ? validateFdRef(`snapshot.state.fds[${k}]`, t[k]) : (checkValue(`snapshot.state.${table}[${k}]`, t[k], 0), t[k]);
    }
    (out as unknown as Record<string, unknown>)[table] = dst;
  }
  return out;
}

function validateOp(i: number, v: unknown): HaOp {
  const where = `delta.ops[${i}]`;
  const b = fields(where, v, ["op", "table", "key"], ["value"]);
  const op = oneOf(where, b, "op", ["put", "del"] as const);
  const table = oneOf(where, b, "table", HA_TABLES);
  const key = checkKey(where, b.key);
  if (op === "del") {
    if (Object.hasOwn(b, "value")) fail(where, "value", "must be absent for del");
    return { op, table, key };
  }
  if (!Object.hasOwn(b, "value")) fail(where, "value", "is required for put");
  const value = table === "fds" ? validateFdRef(`${where}.value`, b.value) : (checkValue(`${where}.value`, b.value, 0), b.value);
  return { op, table, key, value };
}

function validateBody(type: SyncMessageType, body: unknown): Body {
  switch (type) {
    case "hello": {
      const b = fields(type, body, ["protocolVersion", "epoch", "pid", "version"]);
      const protocolVersion = int(type, b, "protocolVersion", 0, 0xffff);
      if (protocolVersion !== HA_SYNC_PROTOCOL_VERSION)
        throw new SyncError("bad_version", `hello speaks protocol ${protocolVersion}, this end ${HA_SYNC_PROTOCOL_VERSION}`);
      return {
        protocolVersion,
        epoch: int(type, b, "epoch", 1),
        pid: int(type, b, "pid", 1, 0x7fffffff),
        version: str(type, b, "version", 64),
      };
    }
    case "welcome": {
      const b = fields(type, body, ["version", "lastEpoch", "lastSeq", "hasState"]);
      if (typeof b.hasState !== "boolean") fail(type, "hasState", "must be a boolean");
      return {
        version: str(type, b, "version", 64),
        lastEpoch: int(type, b, "lastEpoch", 0),
        lastSeq: int(type, b, "lastSeq", 0),
        hasState: b.hasState,
      };
    }
    case "snapshot_request": {
      const b = fields(type, body, ["epoch"]);
      return { epoch: int(type, b, "epoch", 0) };
    }
    case "snapshot": {
      const b = fields(type, body, ["epoch", "seq", "state"]);
      return { epoch: int(type, b, "epoch", 0), seq: int(type, b, "seq", 0), state: validateState(b.state) };
    }
    case "delta": {
      const b = fields(type, body, ["epoch", "seq", "ops"]);
      const epoch = int(type, b, "epoch", 1);
      const seq = int(type, b, "seq", 1);
      const ops = b.ops;
      if (!Array.isArray(ops) || ops.length === 0 || ops.length > HA_SYNC_MAX_OPS)
        fail(type, "ops", `must be an array of 1..${HA_SYNC_MAX_OPS} ops`);
      return { epoch, seq, ops: ops.map((op: unknown, i: number) => validateOp(i, op)) };
    }
    case "ack": {
      const b = fields(type, body, ["epoch", "seq", "of"]);
      return { epoch: int(type, b, "epoch", 0), seq: int(type, b, "seq", 0), of: oneOf(type, b, "of", ["delta", "snapshot"] as const) };
    }
    case "nack": {
      const b = fields(type, body, ["epoch", "seq", "of", "code", "reason"], ["errno"]);
      return {
        epoch: int(type, b, "epoch", 0),
        seq: int(type, b, "seq", 0),
        of: oneOf(type, b, "of", ["delta", "snapshot"] as const),
        code: oneOf(type, b, "code", ["gap", "apply_failed", "unknown_epoch"] as const),
        reason: str(type, b, "reason", HA_SYNC_MAX_REASON_LENGTH),
        ...(b.errno !== undefined ? { errno: int(type, b, "errno", -HA_SYNC_MAX_ERRNO, -1) } : {}),
      };
    }
    case "heartbeat": {
      const b = fields(type, body, ["epoch", "seq", "monoMs"]);
      const monoMs = b.monoMs;
      if (typeof monoMs !== "number" || !Number.isFinite(monoMs) || monoMs < 0) fail(type, "monoMs", "must be a finite number >= 0");
      return { epoch: int(type, b, "epoch", 0), seq: int(type, b, "seq", 0), monoMs };
    }
    case "reject": {
      const b = fields(type, body, ["code", "reason"]);
      return {
        code: oneOf(type, b, "code", ["stale_epoch", "bad_version", "no_hello", "malformed", "overloaded", "replaced"] as const),
        reason: str(type, b, "reason", HA_SYNC_MAX_REASON_LENGTH),
      };
    }
  }
}

/** Applies ops to a state in place (the keeper's replica and vhostd's own copy use the same rule). */
export function applyOps(state: HaState, ops: readonly HaOp[]): void {
  for (const op of ops) {
    const table = state[op.table] as Record<string, unknown>;
    if (op.op === "del") delete table[op.key];
    else table[op.key] = op.value;
  }
}

export function emptyState(): HaState {
  return { devices: {}, sessions: {}, fds: {} };
}

/* ------------------------------------------------------------------------- sequencer */

export type DeltaDecision =
  | { kind: "apply" }
  /** Already applied (a replay): acknowledge again, apply nothing. */
  | { kind: "duplicate" }
  /** Something is missing: nack and ask for a snapshot. */
  | { kind: "gap"; expected: number }
  /** An older vhostd: reject, apply nothing. */
  | { kind: "stale_epoch"; current: number }
  /** A newer epoch that no hello announced: nack (the sender must hello first). */
  | { kind: "unknown_epoch"; current: number };

/**
 * The keeper's bookkeeping of one vhostd stream: which epoch it follows and the last seq
 * applied (durable). Pure, so every decision is unit-tested apart from any socket.
 */
export class SyncSequencer {
  constructor(
    private epoch_ = 0,
    private lastSeq_ = 0,
  ) {}

  get epoch(): number {
    return this.epoch_;
  }
  get lastSeq(): number {
    return this.lastSeq_;
  }

  /** A hello: "stale" is refused; "newer" restarts the seq at 0; "same" keeps it (a reconnect). */
  hello(epoch: number): "stale" | "same" | "newer" {
    if (epoch < this.epoch_) return "stale";
    if (epoch === this.epoch_) return "same";
    this.epoch_ = epoch;
    this.lastSeq_ = 0;
    return "newer";
  }

  decide(epoch: number, seq: number): DeltaDecision {
    if (epoch < this.epoch_) return { kind: "stale_epoch", current: this.epoch_ };
    if (epoch > this.epoch_) return { kind: "unknown_epoch", current: this.epoch_ };
    if (seq <= this.lastSeq_) return { kind: "duplicate" };
    if (seq > this.lastSeq_ + 1) return { kind: "gap", expected: this.lastSeq_ + 1 };
    return { kind: "apply" };
  }

  /** Records a delta as handled (applied, or refused and nacked); only the next seq of the current epoch is accepted. */
  commit(epoch: number, seq: number): void {
    if (epoch !== this.epoch_ || seq !== this.lastSeq_ + 1)
      throw new Error(`commit(${epoch}, ${seq}) out of order (at ${this.epoch_}/${this.lastSeq_})`);
    this.lastSeq_ = seq;
  }

  /** A snapshot replaces everything: the stream continues after its seq. */
  reset(epoch: number, seq: number): void {
    this.epoch_ = epoch;
    this.lastSeq_ = seq;
  }
}

/** Fds one held entry (an FdRef) may name (one vhost-user device needs far fewer). */
export const FD_CHANNEL_MAX_FDS_PER_FRAME = 64;
