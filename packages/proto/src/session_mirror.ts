// The HA session mirror: whichever daemon runs a VF's vhost-user session and queues (the keeper
// normally) keeps the other one (vfe-vhostd) holding duplicates of every fd that keeps the VM's
// I/O alive, plus the session state those fds mean. When the runner dies, the holder adopts the
// session in place: the front-end never sees a disconnect.
//
// Transport: a unix stream socket <run-dir>/ha-mirror.sock (0600, peer uid checked) served by
// vfe-vhostd; frames are u32 LE length + msgpack body, the fds a frame names ride on its bytes.
//
//   runner -> holder   vf     {dev, rec, count}     + count fds: replaces the holder's copy
//   runner -> holder   pf     {dev, switchId, count} + 0|1 fd (the PF's TAP uplink)
//   runner -> holder   drop   {dev}                  the VF/PF is gone: close the copies
//   runner -> holder   msg    {dev, seq, bytes, count} + count fds: the whole vhost-user message
//                                                   seq (hex bytes) is about to be taken off the
//                                                   connection (see "Exactly once" below)
//   runner -> holder   done   {dev, seq}             message seq was handled and changed nothing
//                                                   (a record after a change says it with rec.seq)
//   runner -> holder   reply  {dev, reply}           (older runners) a reply to write, hex
//   runner -> holder   replied {dev}                 the reply in the VF's record was written
//   runner -> holder   handover {}                   graceful stop: take everything over now
//   keeper -> vhostd   take   {req}                  keeper (re)started: give back what you run
//   vhostd -> keeper   vf / pf (as above, live state; rings still running, messages no longer read)
//   vhostd -> keeper   offered {req, devs}           end of the offer; the keeper prepares them
//   keeper -> vhostd   ready  {req}                  prepared: stop your rings now
//   vhostd -> keeper   released {req}                rings stopped, locks dropped: start yours
// The datapath pause of a hand-back is only the last two steps.
//
// Exactly once: a message is announced (msg) before it leaves the connection, through the
// inbox slot (cc/inbox.cc) that tells an adopter whether it did; its effect arrives as a record
// (or done) carrying its seq. Replies go through the VF's reply pipe (cc/reply_pipe.cc), whose
// fds the record carries: what is left in it after a kill is what the front-end was not sent.
//
// Everything received is hostile: the record is validated field by field here, fd indices must
// name fds that came with the frame, and the receiver still checks every address against the
// memory it maps (the same checks as for a front-end's own messages).
import { Packr } from "msgpackr";
import { SWITCH_ID_MAX, intProblem, macProblem, pciAddrProblem } from "./device_record.js";
import { SyncError } from "./keeper_sync.js";
import { HEADER_SIZE, MAX_FDS, MAX_PAYLOAD } from "./vhost_user.js";
import { fail, fields, int, isPlainObject, oneOf, str, type Body } from "./body_check.js";

export const MIRROR_SOCKET_NAME = "ha-mirror.sock";
/** Linux's SCM_MAX_FD; one VF needs at most 2 + 32 regions + 3 × 32 rings = 130. */
export const MIRROR_MAX_FDS_PER_FRAME = 253;
export const MIRROR_MAX_FRAME_BYTES = 256 * 1024;
const MAX_RINGS = 64;
const MAX_REGIONS = 32;
const MAX_DEVS = 4096;
/** A few replies' worth of bytes (GET_CONFIG is the largest), hex. */
const MAX_REPLY_HEX = 2 * 8192;
/** A whole vhost-user message as our sessions accept one, hex. */
const MAX_MESSAGE_HEX = 2 * (HEADER_SIZE + MAX_PAYLOAD);
/** A message's sequence number on its VF: counted from 1 by whoever runs it. */
const MAX_SEQ = Number.MAX_SAFE_INTEGER;

/** 64-bit values travel as 0x-hex strings: exact, and trivially validated. */
export type Hex64 = string;

export interface MirrorRegion {
  guestAddr: Hex64;
  size: Hex64;
  userAddr: Hex64;
  mmapOffset: Hex64;
  /** Index into the frame's fds. */
  fd: number;
}

export interface MirrorVring {
  index: number;
  num: number;
  /** null until SET_VRING_ADDR. */
  addr: { flags: number; desc: Hex64; used: Hex64; avail: Hex64; log: Hex64 } | null;
  base: number;
  /** Fd indices, -1 = none. */
  kick: number;
  call: number;
  err: number;
  kicked: boolean;
  enabled: boolean;
  started: boolean;
}

export interface MirrorSession {
  features: Hex64;
  protocolFeatures: Hex64;
  status: number;
  owner: boolean;
  regions: MirrorRegion[];
  vrings: MirrorVring[];
  /** SET_LOG_BASE during a migration: the dirty log's fd index, size and offset. */
  log?: { fd: number; size: Hex64; offset: Hex64 };
  /** blk INFLIGHT_SHMFD: the inflight area's fd index and geometry. */
  inflight?: { fd: number; size: Hex64; offset: Hex64; numQueues: number; queueSize: number };
  /**
   * blk only: CONFIG_WCE as the guest last set it (1 write-back, 0 write-through). Carried so
   * an adopter keeps the guest's durability choice instead of falling back to write-back.
   * Optional: a record from a peer that predates it means write-back, as before.
   */
  writeback?: number;
}

/** One VF as its runner sees it. */
export interface MirrorVf {
  /** Fd index of the live vhost-user connection, -1 when none. */
  conn: number;
  /** Fd index of the listening socket (server mode), -1 otherwise. */
  listen: number;
  reconnects: number;
  session: MirrorSession;
  /**
   * The reply (whole vhost-user message bytes, hex) to the message just handled, pushed before
   * it is written and cleared by a "replied" frame after: an adopter holding it cannot know
   * whether the dead runner wrote it, and sends it (a missing reply would freeze the VM).
   */
  reply?: string;
  /**
   * net: the MAC the VF's switch port locked to from its first source (port security), when it
   * is not the VF's own MAC setting. The adopter pins it before any frame flows, so no other
   * VF can claim it in between. Optional: absent = not locked (lock on the next first frame).
   */
  lockedMac?: string;
  /** The last message handled (its seq; 0: none yet). Optional: absent from older runners. */
  seq?: number;
  /** Fd indices of the VF's reply pipe: what is in it was not sent to the front-end yet. */
  replyPipe?: { read: number; write: number };
}

export type MirrorFrame =
  | { op: "vf"; dev: string; rec: MirrorVf; count: number }
  | { op: "pf"; dev: string; switchId: number; count: number }
  | { op: "drop"; dev: string }
  | { op: "msg"; dev: string; seq: number; bytes: string; count: number }
  | { op: "done"; dev: string; seq: number }
  | { op: "reply"; dev: string; reply: string }
  | { op: "replied"; dev: string }
  | { op: "handover" }
  | { op: "take"; req: number }
  | { op: "offered"; req: number; devs: string[] }
  | { op: "ready"; req: number }
  | { op: "released"; req: number };

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/** A whole vhost-user reply (at least its 12-byte header), hex. */
function replyHex(what: string, b: Body): string {
  const reply = str(what, b, "reply", MAX_REPLY_HEX, 24);
  if (!/^(?:[0-9a-f]{2})+$/.test(reply)) fail(what, "reply", "must be hex bytes");
  return reply;
}

export function encodeMirrorFrame(f: MirrorFrame): Buffer {
  const buf = packr.pack(validateMirrorFrame(f));
  if (buf.length > MIRROR_MAX_FRAME_BYTES) throw new SyncError("too_large", `mirror frame of ${buf.length} bytes`);
  return buf;
}

export function decodeMirrorFrame(buf: Uint8Array): MirrorFrame {
  if (buf.length === 0 || buf.length > MIRROR_MAX_FRAME_BYTES) throw new SyncError("malformed", `mirror frame of ${buf.length} bytes`);
  let v: unknown;
  try {
    v = packr.unpack(buf);
  } catch (e) {
    throw new SyncError("malformed", `mirror frame is not msgpack: ${(e as Error).message}`);
  }
  return validateMirrorFrame(v);
}

/** How many fds ride on a frame. */
export function mirrorFrameFdCount(f: MirrorFrame): number {
  return f.op === "vf" || f.op === "pf" || f.op === "msg" ? f.count : 0;
}

/** Every fd index the record uses (each must be < count, and used once). */
export function mirrorVfFdIndices(rec: MirrorVf): number[] {
  const out = [rec.conn, rec.listen, ...rec.session.regions.map((r) => r.fd)];
  if (rec.session.log) out.push(rec.session.log.fd);
  if (rec.session.inflight) out.push(rec.session.inflight.fd);
  for (const v of rec.session.vrings) out.push(v.kick, v.call, v.err);
  if (rec.replyPipe) out.push(rec.replyPipe.read, rec.replyPipe.write);
  return out.filter((i) => i >= 0);
}

/* ------------------------------------------------------------------------ validation */

/** A device record's rule, refused as the mirror refuses (SyncError), in the record's words. */
function recordRule(t: string, problem: string | undefined): void {
  if (problem) throw new SyncError("invalid", `${t}.${problem}`);
}

function dev(t: string, b: Body): string {
  recordRule(t, pciAddrProblem("dev", b.dev));
  return b.dev as string;
}

function hex64(t: string, b: Body, field: string): Hex64 {
  const v = str(t, b, field, 18, 3);
  if (!/^0x[0-9a-f]{1,16}$/.test(v)) fail(t, field, "must be a 0x-hex 64-bit value");
  return v;
}

function bool(t: string, b: Body, field: string): boolean {
  const v = b[field];
  if (typeof v !== "boolean") fail(t, field, "must be a boolean");
  return v;
}

function list(t: string, b: Body, field: string, max: number): unknown[] {
  const v = b[field];
  if (!Array.isArray(v) || v.length > max) fail(t, field, `must be an array of at most ${max}`);
  return v;
}

function fdIndex(t: string, b: Body, field: string, count: number): number {
  return int(t, b, field, -1, count - 1);
}

/** A ring size as a front-end may set it: a power of two up to 32768 (0: not set yet, where allowed). */
function ringSize(t: string, b: Body, field: string, zeroOk: boolean): number {
  const n = int(t, b, field, zeroOk ? 0 : 1, 32768);
  if (n !== 0 && (n & (n - 1)) !== 0) fail(t, field, "must be a power of two");
  return n;
}

const U64_MAX = (1n << 64n) - 1n;

/** A memory region as SET_MEM_TABLE could have set it: not empty, no range wrapping past 2^64. */
function region(w: string, rb: Body, count: number): MirrorRegion {
  const r = { guestAddr: hex64(w, rb, "guestAddr"), size: hex64(w, rb, "size"), userAddr: hex64(w, rb, "userAddr"), mmapOffset: hex64(w, rb, "mmapOffset"), fd: int(w, rb, "fd", 0, count - 1) };
  const size = BigInt(r.size);
  if (size === 0n) fail(w, "size", "must not be 0");
  for (const f of ["guestAddr", "userAddr", "mmapOffset"] as const) if (BigInt(r[f]) > U64_MAX - (size - 1n)) fail(w, f, "range wraps past 2^64");
  return r;
}

function validateVring(v: unknown, i: number, count: number): MirrorVring {
  const t = `vring[${i}]`;
  const b = fields(t, v, ["index", "num", "addr", "base", "kick", "call", "err", "kicked", "enabled", "started"]);
  let addr: MirrorVring["addr"] = null;
  if (b.addr !== null) {
    const a = fields(`${t}.addr`, b.addr, ["flags", "desc", "used", "avail", "log"]);
    addr = { flags: int(`${t}.addr`, a, "flags", 0, 0xffffffff), desc: hex64(t, a, "desc"), used: hex64(t, a, "used"), avail: hex64(t, a, "avail"), log: hex64(t, a, "log") };
  }
  const index = int(t, b, "index", 0, MAX_RINGS - 1);
  if (index !== i) fail(t, "index", `must be ${i}`);
  return {
    index,
    num: ringSize(t, b, "num", true),
    addr,
    base: int(t, b, "base", 0, 0xffff),
    kick: fdIndex(t, b, "kick", count),
    call: fdIndex(t, b, "call", count),
    err: fdIndex(t, b, "err", count),
    kicked: bool(t, b, "kicked"),
    enabled: bool(t, b, "enabled"),
    started: bool(t, b, "started"),
  };
}

function validateRec(v: unknown, count: number): MirrorVf {
  const r = fields("vf.rec", v, ["conn", "listen", "reconnects", "session"], ["reply", "lockedMac", "seq", "replyPipe"]);
  const s = fields("vf.rec.session", r.session, ["features", "protocolFeatures", "status", "owner", "regions", "vrings"], ["log", "inflight", "writeback"]);
  const t = "vf.rec.session";
  const rec: MirrorVf = {
    conn: fdIndex("vf.rec", r, "conn", count),
    listen: fdIndex("vf.rec", r, "listen", count),
    reconnects: int("vf.rec", r, "reconnects", 0),
    session: {
      features: hex64(t, s, "features"),
      protocolFeatures: hex64(t, s, "protocolFeatures"),
      status: int(t, s, "status", 0, 0xff),
      owner: bool(t, s, "owner"),
      regions: list(t, s, "regions", MAX_REGIONS).map((x, i) => region(`region[${i}]`, fields(`region[${i}]`, x, ["guestAddr", "size", "userAddr", "mmapOffset", "fd"]), count)),
      vrings: list(t, s, "vrings", MAX_RINGS).map((x, i) => validateVring(x, i, count)),
    },
  };
  if (s.log !== undefined) {
    const lb = fields(`${t}.log`, s.log, ["fd", "size", "offset"]);
    rec.session.log = { fd: int(`${t}.log`, lb, "fd", 0, count - 1), size: hex64(`${t}.log`, lb, "size"), offset: hex64(`${t}.log`, lb, "offset") };
  }
  if (s.inflight !== undefined) {
    const w = `${t}.inflight`;
    const ib = fields(w, s.inflight, ["fd", "size", "offset", "numQueues", "queueSize"]);
    rec.session.inflight = { fd: int(w, ib, "fd", 0, count - 1), size: hex64(w, ib, "size"), offset: hex64(w, ib, "offset"), numQueues: int(w, ib, "numQueues", 1, MAX_RINGS), queueSize: ringSize(w, ib, "queueSize", false) };
  }
  if (s.writeback !== undefined) rec.session.writeback = int(t, s, "writeback", 0, 1);
  if (r.reply !== undefined) {
    rec.reply = replyHex("vf.rec", r);
  }
  if (r.lockedMac !== undefined) {
    recordRule("vf.rec", macProblem("lockedMac", r.lockedMac));
    rec.lockedMac = r.lockedMac as string;
  }
  if (r.seq !== undefined) rec.seq = int("vf.rec", r, "seq", 0, MAX_SEQ);
  if (r.replyPipe !== undefined) {
    const pb = fields("vf.rec.replyPipe", r.replyPipe, ["read", "write"]);
    rec.replyPipe = { read: int("vf.rec.replyPipe", pb, "read", 0, count - 1), write: int("vf.rec.replyPipe", pb, "write", 0, count - 1) };
    if (rec.conn < 0) fail("vf.rec", "replyPipe", "needs a connection");
  }
  const used = mirrorVfFdIndices(rec);
  if (new Set(used).size !== used.length) fail("vf.rec", "fds", "names one fd twice");
  if (used.length !== count) fail("vf.rec", "fds", `uses ${used.length} fds but the frame carries ${count}`);
  return rec;
}

function validateMirrorFrame(v: unknown): MirrorFrame {
  if (!isPlainObject(v)) throw new SyncError("malformed", "mirror frame is not a map");
  const op = oneOf("mirror frame", v, "op", ["vf", "pf", "msg", "done", "drop", "reply", "replied", "handover", "take", "offered", "ready", "released"] as const);
  switch (op) {
    case "vf": {
      const b = fields("vf", v, ["op", "dev", "rec", "count"]);
      const count = int("vf", b, "count", 0, MIRROR_MAX_FDS_PER_FRAME);
      return { op, dev: dev("vf", b), rec: validateRec(b.rec, count), count };
    }
    case "pf": {
      const b = fields("pf", v, ["op", "dev", "switchId", "count"]);
      const d = dev("pf", b);
      recordRule("pf", intProblem("switchId", b.switchId, 0, SWITCH_ID_MAX));
      return { op, dev: d, switchId: b.switchId as number, count: int("pf", b, "count", 0, 1) };
    }
    case "msg": {
      const b = fields("msg", v, ["op", "dev", "seq", "bytes", "count"]);
      const bytes = str("msg", b, "bytes", MAX_MESSAGE_HEX, 2 * HEADER_SIZE);
      if (!/^(?:[0-9a-f]{2})+$/.test(bytes)) fail("msg", "bytes", "must be hex bytes");
      // The header's size must match: the adopter re-handles exactly these bytes.
      const size = Buffer.from(bytes.slice(16, 24), "hex").readUInt32LE(0);
      if (HEADER_SIZE + size !== bytes.length / 2) fail("msg", "bytes", `hold ${bytes.length / 2} bytes but the header says ${HEADER_SIZE + size}`);
      return { op, dev: dev("msg", b), seq: int("msg", b, "seq", 1, MAX_SEQ), bytes, count: int("msg", b, "count", 0, MAX_FDS) };
    }
    case "done": {
      const b = fields("done", v, ["op", "dev", "seq"]);
      return { op, dev: dev("done", b), seq: int("done", b, "seq", 1, MAX_SEQ) };
    }
    case "reply": {
      const b = fields("reply", v, ["op", "dev", "reply"]);
      return { op, dev: dev("reply", b), reply: replyHex("reply", b) };
    }
    case "drop":
    case "replied": {
      const b = fields(op, v, ["op", "dev"]);
      return { op, dev: dev(op, b) };
    }
    case "handover":
      fields("handover", v, ["op"]);
      return { op };
    case "take":
    case "ready":
    case "released": {
      const b = fields(op, v, ["op", "req"]);
      return { op, req: int(op, b, "req", 0, 0xffffffff) };
    }
    case "offered": {
      const b = fields("offered", v, ["op", "req", "devs"]);
      const devs = list("offered", b, "devs", MAX_DEVS).map((d, i) => dev(`offered.devs[${i}]`, { dev: d }));
      return { op, req: int("offered", b, "req", 0, 0xffffffff), devs };
    }
  }
}
