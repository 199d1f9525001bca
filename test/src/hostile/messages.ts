// Hostile vhost-user messages, generated from proto's MESSAGES table: for every request the
// back-end knows, a payload one byte short, one 8 bytes too long, one fd too many, a missing
// fd, ring indices past the device's rings; each with and without REPLY_ACK, on the net and
// the blk attacker VF. Plus requests whose protocol feature was never negotiated. A refusal
// is a failure ack followed by a session that still answers, or the back-end hanging up; a
// success ack, a value reply or silence means the message was taken.
import { native } from "@vhostd/native";
import {
  MESSAGES,
  MsgFlag,
  ProtocolFeature,
  Req,
  VirtioFeatureBit as F,
  bit,
  codec,
  type MessageSpec,
  type PayloadKind,
} from "@vhostd/proto";
import { type HostileWorld } from "../harness/hostile_world.js";
import { RawFrontend } from "../harness/raw_frontend.js";
import { expect, type HostileCase } from "./case.js";

const UVA = 0x7f00_0000_0000n;
const MiB = 1n << 20n;
const FEATURES = bit(F.VERSION_1) | bit(F.VHOST_USER_PROTOCOL_FEATURES);

type Target = "net" | "blk";

/** What each attacker VF offers (net_model.ts / blk_model.ts): negotiated in full, so only the payload is at fault. */
const OFFERED: Record<Target, ProtocolFeature[]> = {
  net: [ProtocolFeature.MQ, ProtocolFeature.LOG_SHMFD, ProtocolFeature.RARP, ProtocolFeature.REPLY_ACK, ProtocolFeature.NET_MTU, ProtocolFeature.STATUS, ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.CONFIG],
  blk: [ProtocolFeature.MQ, ProtocolFeature.LOG_SHMFD, ProtocolFeature.INFLIGHT_SHMFD, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.STATUS, ProtocolFeature.CONFIGURE_MEM_SLOTS],
};
/** Rings of each attacker VF: net 1 queue pair, blk 1 queue. */
const RINGS: Record<Target, number> = { net: 2, blk: 1 };

function mask(fs: ProtocolFeature[]): bigint {
  return fs.reduce((m, f) => m | bit(f), 0n);
}

/** An fd of the kind the message expects (memory for tables and areas, eventfd otherwise). */
function fdFor(kind: PayloadKind): number {
  return kind === "memTable" || kind === "memRegion" || kind === "log" || kind === "inflight" ? native.memfdCreate("hostile", 1 << 20) : native.eventFd(0);
}

/** A payload the codec would accept for `kind` (the variants then break it). */
function validPayload(kind: PayloadKind): Buffer {
  const region = { guestAddr: 0n, size: MiB, userAddr: UVA, mmapOffset: 0n };
  switch (kind) {
    case "none":
      return Buffer.alloc(0);
    case "u64":
      return codec.u64.encode(0n);
    case "vringState":
      return codec.vringState.encode({ index: 0, num: 256 });
    case "vringAddr":
      return codec.vringAddr.encode({ index: 0, flags: 0, desc: UVA, used: UVA + 0x2000n, avail: UVA + 0x1000n, log: 0n });
    case "memTable":
      return codec.memTable.encode([region]);
    case "memRegion":
      return codec.memRegion.encode(region);
    case "vringFd":
      return codec.vringFd.encode({ index: 0, noFd: false });
    case "log":
      return codec.log.encode({ size: 4096n, offset: 0n });
    case "rarp":
      return codec.rarp.encode("52:54:00:de:ad:01");
    case "config":
      return codec.config.encode({ offset: 0, size: 4, flags: 0, data: Buffer.alloc(4) });
    case "inflight":
      return codec.inflight.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 256 });
    default:
      return Buffer.alloc(8);
  }
}

/** The fds a valid message of this spec carries (vringFd: one eventfd; memTable: one per region). */
function validFdCount(s: MessageSpec): number {
  if (s.payload === "vringFd" || s.payload === "memTable") return 1;
  return s.fds[0];
}

interface Variant {
  what: string;
  payload: Buffer;
  fds: number;
}

function variants(s: MessageSpec, target: Target): Variant[] {
  const ok = validPayload(s.payload);
  const n = validFdCount(s);
  const out: Variant[] = [];
  if (ok.length > 0) out.push({ what: "payload one byte short", payload: ok.subarray(0, ok.length - 1), fds: n });
  out.push({ what: "payload 8 bytes too long", payload: Buffer.concat([ok, Buffer.alloc(s.payload === "none" ? 16 : 8)]), fds: n });
  if (s.fds[1] < 8) out.push({ what: `${s.fds[1] + 1} fds`, payload: ok, fds: s.fds[1] + 1 });
  if (n > 0) out.push({ what: "its fd missing", payload: ok, fds: 0 });
  if (s.payload === "vringState" || s.payload === "vringAddr" || s.payload === "vringFd") {
    for (const index of [RINGS[target], 0x7fff_ffff]) {
      const p = Buffer.from(ok);
      p.writeUInt32LE(index, 0);
      out.push({ what: `ring index ${index}`, payload: p, fds: n });
    }
  }
  return out;
}

async function connect(w: HostileWorld, target: Target): Promise<RawFrontend> {
  return RawFrontend.connect(target === "net" ? w.netSocket : w.blkSocket, 10_000);
}

/**
 * Sends one message (after negotiating `protocol`), then a sentinel request, and judges what
 * came back. Throws unless the message was refused.
 */
async function refused(w: HostileWorld, target: Target, protocol: bigint, ack: boolean, request: number, payload: Buffer, nfds: number, kind: PayloadKind): Promise<void> {
  const fe = await connect(w, target);
  const fds = Array.from({ length: nfds }, () => fdFor(kind));
  try {
    await fe.negotiate(FEATURES, protocol);
    fe.msg(request, payload, MsgFlag.VERSION | (ack ? MsgFlag.NEED_REPLY : 0), fds);
    const sentinel = request === Req.GET_FEATURES ? Req.GET_PROTOCOL_FEATURES : Req.GET_FEATURES;
    try {
      fe.msg(sentinel);
    } catch (e) {
      // The back-end read the hostile message and hung up before the sentinel went out (a
      // refusal that ends the session; rare, since both are sent back to back).
      if (/EPIPE|ECONNRESET/.test((e as Error).message)) return;
      throw e;
    }
    const spec = MESSAGES.get(request);
    let nacked = false;
    for (;;) {
      const r = await fe.reply(5000).catch((e: Error) => e);
      if (r instanceof Error) throw new Error(`neither a reply nor a hang-up: ${r.message}`);
      if (r === null) return; // hung up: refused
      if (r.request === sentinel) {
        expect(nacked, "the back-end answered nothing to it and carried on: taken silently");
        return; // nacked and the session goes on
      }
      expect(r.request === request, `a reply to request ${r.request}`);
      expect(spec?.reply !== "value", "a value reply: it was taken");
      expect(r.payload.length === 8 && codec.u64.decode(r.payload) !== 0n, "a success ack: it was taken");
      nacked = true;
    }
  } finally {
    fe.close();
    for (const fd of fds) native.closeFd(fd);
  }
}

function malformed(): HostileCase[] {
  const out: HostileCase[] = [];
  for (const target of ["net", "blk"] as const) {
    for (const [request, s] of MESSAGES) {
      for (const v of variants(s, target)) {
        for (const ack of target === "net" ? [true, false] : [true]) {
          const protocol = ack ? mask(OFFERED[target]) : mask(OFFERED[target].filter((f) => f !== ProtocolFeature.REPLY_ACK));
          out.push({
            area: "message",
            name: `${target} ${s.name}: ${v.what}${ack ? " (REPLY_ACK)" : ""}`,
            run: (w) => refused(w, target, protocol, ack, request, v.payload, v.fds, s.payload),
          });
        }
      }
    }
  }
  return out;
}

/** Requests that need a protocol feature the front-end did not negotiate (only REPLY_ACK is). */
const NEEDS_FEATURE: Array<[Target, Req, string]> = [
  ["net", Req.ADD_MEM_REG, "CONFIGURE_MEM_SLOTS"],
  ["net", Req.REM_MEM_REG, "CONFIGURE_MEM_SLOTS"],
  ["net", Req.GET_CONFIG, "CONFIG"],
  ["net", Req.SET_CONFIG, "CONFIG"],
  ["net", Req.SEND_RARP, "RARP"],
  ["net", Req.NET_SET_MTU, "NET_MTU"],
  ["net", Req.SET_STATUS, "STATUS"],
  ["net", Req.SET_LOG_BASE, "LOG_SHMFD"],
  ["blk", Req.GET_INFLIGHT_FD, "INFLIGHT_SHMFD"],
  ["blk", Req.SET_INFLIGHT_FD, "INFLIGHT_SHMFD"],
  ["blk", Req.GET_CONFIG, "CONFIG"],
  ["blk", Req.SET_CONFIG, "CONFIG"],
  ["blk", Req.ADD_MEM_REG, "CONFIGURE_MEM_SLOTS"],
  ["blk", Req.SET_STATUS, "STATUS"],
];

function withoutFeature(): HostileCase[] {
  return NEEDS_FEATURE.map(([target, request, feature]) => {
    const s = MESSAGES.get(request)!;
    return {
      area: "message" as const,
      name: `${target} ${s.name} without ${feature} negotiated`,
      run: (w: HostileWorld) => refused(w, target, bit(ProtocolFeature.REPLY_ACK), true, request, validPayload(s.payload), validFdCount(s), s.payload),
    };
  });
}

export function messageCases(): HostileCase[] {
  return [...malformed(), ...withoutFeature()];
}
