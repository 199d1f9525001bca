// The TypeScript decoders' fuzz targets: each takes the raw bytes a peer could send and must
// either accept them (then its result must survive the checks below) or refuse them with the
// decoder's own error type. Any other exception (TypeError, RangeError, an assertion below) is
// a finding. Shared by the fuzzer (fuzz_js.mjs) and the replay test (fuzz_replay.test.ts).
import { isDeepStrictEqual } from "node:util";

import {
  MESSAGES,
  ProtocolError,
  RPC_METHODS,
  SyncError,
  VfeError,
  applyOps,
  checkFdCount,
  codec,
  decodeMessage,
  decodeMirrorFrame,
  decodePayload,
  decodeRequest,
  decodeSyncMessage,
  emptyState,
  encodeMirrorFrame,
  encodeSyncMessage,
  mirrorFrameFdCount,
  mirrorVfFdIndices,
  validateParams,
} from "@vhostd/proto";

export class FuzzFinding extends Error {
  name = "FuzzFinding";
}

function check(cond, what) {
  if (!cond) throw new FuzzFinding(what);
}

/** Runs fn; an error of one of the expected classes means "refused", anything else escapes. */
function refusedWith(classes, fn) {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (classes.some((c) => e instanceof c)) return { ok: false };
    throw e;
  }
}

const plain = (v) => JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `${x}n` : x instanceof Uint8Array ? [...x] : x)));

export const JS_TARGETS = {
  /** One vhost-user message off a stream: header, payload per the MESSAGES table, fd count; a
   *  decoded payload encodes back to a payload that decodes to the same value. */
  vhost_user(buf) {
    const m = refusedWith([ProtocolError], () => decodeMessage(buf));
    if (!m.ok || m.value === null) return;
    const { header, payload } = m.value;
    check(payload.length === header.size, "payload length differs from the header's size");
    const p = refusedWith([ProtocolError], () => decodeRequest(header.request, payload));
    if (!p.ok) return;
    refusedWith([ProtocolError], () => checkFdCount(header.request, p.value, buf.length % 10));
    const kind = MESSAGES.get(header.request).payload;
    if (kind === "none") return;
    const again = codec[kind].encode(p.value.value);
    check(isDeepStrictEqual(plain(decodePayload(kind, again)), plain(p.value)), `${kind} does not survive encode(decode(x))`);
  },

  /** A mirror record (HA session copy): every fd index the record names is below the frame's
   *  fd count and named once; the frame re-encodes to the same frame. */
  mirror(buf) {
    const r = refusedWith([SyncError], () => decodeMirrorFrame(buf));
    if (!r.ok) return;
    const f = r.value;
    const n = mirrorFrameFdCount(f);
    check(Number.isInteger(n) && n >= 0, "fd count");
    if (f.op === "vf") {
      const idx = mirrorVfFdIndices(f.rec).filter((i) => i >= 0);
      check(idx.every((i) => Number.isInteger(i) && i < n), "an fd index beyond the frame's fds");
      check(new Set(idx).size === idx.length, "an fd index named twice");
    }
    check(isDeepStrictEqual(plain(decodeMirrorFrame(encodeMirrorFrame(f))), plain(f)), "mirror frame does not round-trip");
  },

  /** An HA sync message (vfe-vhostd <-> keeper): round trip, and a delta applies to a state
   *  or is refused with SyncError. */
  sync(buf) {
    const r = refusedWith([SyncError], () => decodeSyncMessage(buf));
    if (!r.ok) return;
    const msg = r.value;
    check(isDeepStrictEqual(plain(decodeSyncMessage(encodeSyncMessage(msg))), plain(msg)), "sync message does not round-trip");
    if (msg.type === "delta") refusedWith([SyncError], () => applyOps(emptyState(), msg.ops));
  },

  /** JSON-RPC params validation: first byte picks the method, the rest is the params' JSON. */
  rpc(buf) {
    if (buf.length === 0) return;
    const method = RPC_METHODS[buf[0] % RPC_METHODS.length];
    let params;
    try {
      params = JSON.parse(buf.subarray(1).toString("utf8"));
    } catch {
      return;  // the server answers PARSE_ERROR before validation
    }
    const r = refusedWith([VfeError], () => validateParams(method, params));
    if (!r.ok) return;
    check(typeof r.value.action === "string", "action");
    for (const v of Object.values(r.value.values)) check(["string", "number", "boolean"].includes(typeof v), "validated value type");
  },
};

/** Tokens the mutator splices in (msgpack/JSON structure and the names the decoders look for). */
export const DICTIONARY = {
  vhost_user: [],
  mirror: ["op", "vf", "pf", "dev", "rec", "count", "session", "regions", "vrings", "kick", "call", "err", "log", "inflight", "0000:af:04.5", "0x0", "msg", "done", "seq", "bytes", "replyPipe", "read", "write"],
  sync: ["VHHA", "type", "hello", "delta", "ops", "put", "del", "table", "devices", "sessions", "fds", "key", "value", "epoch", "seq", "snapshot", "state"],
  rpc: ['"', "{", "}", "[", "]", ":", ",", "null", "true", "false", "-1", "0", "1e309", '"0000:af:00.2"', '"52:54:00:12:34:56"', '"/tmp/x.sock"', '"null"', '"1G"',
    ...new Set(RPC_METHODS.flatMap((m) => [...Object.keys(m.params), ...m.actions.map((a) => a.name)]).map((n) => `"${n}"`))],
};
