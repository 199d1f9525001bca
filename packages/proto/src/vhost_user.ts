// vhost-user wire format (QEMU docs/interop/vhost-user.rst): header, request ids, payload codecs and
// the per-request table (payload kind, fd count, reply style). Pure data transforms, no I/O.
// Every decoder treats its input as hostile: exact sizes, field ranges, and only ProtocolError escapes.

export const VHOST_USER_VERSION = 0x1;
export const HEADER_SIZE = 12; // u32 request, u32 flags, u32 size, little-endian
/** Our cap on one payload. The largest legitimate one (SET_CONFIG) is 12 + 256 bytes. */
export const MAX_PAYLOAD = 4096;
export const MAX_FDS = 8;
export const MAX_MEM_REGIONS = 8; // VHOST_MEMORY_BASELINE_NREGIONS
export const MAX_MEM_SLOTS = 32; // answered to GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS)
export const MAX_CONFIG_SIZE = 256; // VHOST_USER_MAX_CONFIG_SIZE
export const CONFIG_HEADER_SIZE = 12; // u32 offset, u32 size, u32 flags
export const VRING_NOFD_MASK = 0x100;
export const VRING_INDEX_MASK = 0xff;
export const VERSION_MASK = 0x3;
export const VRING_F_LOG = 0x1; // vring address flags: bit VHOST_VRING_F_LOG (0)
/** vhost features bit 30: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

export enum MsgFlag {
  VERSION = 0x1,
  REPLY = 0x4,
  NEED_REPLY = 0x8,
}

export enum Req {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  CREATE_CRYPTO_SESSION = 26,
  CLOSE_CRYPTO_SESSION = 27,
  POSTCOPY_ADVISE = 28,
  POSTCOPY_LISTEN = 29,
  POSTCOPY_END = 30,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GPU_SET_SOCKET = 33,
  RESET_DEVICE = 34,
  VRING_KICK = 35,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
  // Newer requests: named for logs only, not in MESSAGES (we never offer their protocol features).
  GET_SHARED_OBJECT = 41,
  SET_DEVICE_STATE_FD = 42,
  CHECK_DEVICE_STATE = 43,
}

/** Requests the back-end sends on the backend (ex-"slave") channel. */
export enum BackendReq {
  IOTLB_MSG = 1,
  CONFIG_CHANGE_MSG = 2,
  VRING_HOST_NOTIFIER_MSG = 3,
  SHARED_OBJECT_ADD = 6,
  SHARED_OBJECT_REMOVE = 7,
  SHARED_OBJECT_LOOKUP = 8,
}

export enum ProtocolFeature {
  MQ = 0,
  LOG_SHMFD = 1,
  RARP = 2,
  REPLY_ACK = 3,
  NET_MTU = 4,
  BACKEND_REQ = 5,
  CROSS_ENDIAN = 6,
  CRYPTO_SESSION = 7,
  PAGEFAULT = 8,
  CONFIG = 9,
  BACKEND_SEND_FD = 10,
  HOST_NOTIFIER = 11,
  INFLIGHT_SHMFD = 12,
  RESET_DEVICE = 13,
  INBAND_NOTIFICATIONS = 14,
  CONFIGURE_MEM_SLOTS = 15,
  STATUS = 16,
  XEN_MMAP = 17,
  SHARED_OBJECT = 18,
  DEVICE_STATE = 19,
}

/** flags field of SET_CONFIG / GET_CONFIG. */
export enum ConfigFlag {
  FRONTEND = 0,
  MIGRATION = 1,
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

const U8_MAX = 0xff;
const U16_MAX = 0xffff;
const U32_MAX = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;

/** Mask of the given protocol feature bits. */
export function protocolFeatureMask(...bits: ProtocolFeature[]): bigint {
  let m = 0n;
  for (const b of bits) {
    if (!Number.isInteger(b) || b < 0 || b > 63) throw new ProtocolError(`protocol feature bit ${String(b)} is not in 0..63`);
    m |= 1n << BigInt(b);
  }
  return m;
}

/** Names of the protocol feature bits set in a mask, for logs ("MQ", "REPLY_ACK", "UNKNOWN(40)"). */
export function protocolFeatureNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) {
    if (((mask >> BigInt(i)) & 1n) === 0n) continue;
    const n = (ProtocolFeature as Record<number, string>)[i];
    out.push(typeof n === "string" ? n : `UNKNOWN(${i})`);
  }
  return out;
}

// ---------------------------------------------------------------- input guards

/** Accepts any Uint8Array view (e.g. from a worker or msgpack) but nothing else. */
function asBuffer(b: unknown, what: string): Buffer {
  if (Buffer.isBuffer(b)) return b;
  if (b instanceof Uint8Array) return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  throw new ProtocolError(`${what} payload is not a byte buffer`);
}

function sized(b: unknown, n: number, what: string): Buffer {
  const buf = asBuffer(b, what);
  if (buf.length !== n) throw new ProtocolError(`${what} payload is ${buf.length} bytes, expected ${n}`);
  return buf;
}

function checkUint(v: unknown, max: number, field: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
    throw new ProtocolError(`${field} is ${String(v)}, expected an integer in 0..${max}`);
  }
  return v;
}

function checkU64(v: unknown, field: string): bigint {
  if (typeof v !== "bigint" || v < 0n || v > U64_MAX) {
    throw new ProtocolError(`${field} is ${String(v)}, expected a u64 bigint`);
  }
  return v;
}

function hex(v: bigint): string {
  return "0x" + v.toString(16);
}

// ---------------------------------------------------------------- header and framing

export interface Header {
  request: number;
  flags: number;
  size: number;
}

/**
 * Decodes a header; throws ProtocolError only when fewer than 12 bytes are available, so a caller
 * can report a bad version or size in its own words. checkHeader() performs those checks.
 */
export function decodeHeader(buf: Buffer, offset = 0): Header {
  const b = asBuffer(buf, "header");
  if (!Number.isInteger(offset) || offset < 0) throw new ProtocolError(`header offset ${String(offset)} is invalid`);
  if (b.length - offset < HEADER_SIZE) {
    throw new ProtocolError(`header is ${Math.max(0, b.length - offset)} bytes, expected ${HEADER_SIZE}`);
  }
  return { request: b.readUInt32LE(offset), flags: b.readUInt32LE(offset + 4), size: b.readUInt32LE(offset + 8) };
}

/**
 * Validates a decoded header: version must be 1 and size <= MAX_PAYLOAD. Reserved flag bits are
 * tolerated (the version field already guards incompatible formats).
 */
export function checkHeader(h: Header): void {
  if ((h.flags & VERSION_MASK) !== VHOST_USER_VERSION) {
    throw new ProtocolError(`${requestName(h.request)} has protocol version ${h.flags & VERSION_MASK}, expected ${VHOST_USER_VERSION}`);
  }
  if (h.size > MAX_PAYLOAD) {
    throw new ProtocolError(`${requestName(h.request)} payload size ${h.size} exceeds the maximum ${MAX_PAYLOAD}`);
  }
}

export function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.writeUInt32LE(checkUint(h.request, U32_MAX, "header request"), 0);
  b.writeUInt32LE(checkUint(h.flags, U32_MAX, "header flags"), 4);
  b.writeUInt32LE(checkUint(h.size, U32_MAX, "header size"), 8);
  return b;
}

/** Header + payload. Flags default to VERSION (a request without NEED_REPLY). */
export function encodeMessage(request: number, payload: Buffer = Buffer.alloc(0), flags: number = MsgFlag.VERSION): Buffer {
  const p = asBuffer(payload, requestName(request));
  if (p.length > MAX_PAYLOAD) throw new ProtocolError(`${requestName(request)} payload is ${p.length} bytes, over ${MAX_PAYLOAD}`);
  return Buffer.concat([encodeHeader({ request, flags, size: p.length }), p]);
}

/** A reply: QEMU insists on flags == VERSION|REPLY exactly. */
export function encodeReply(request: number, payload?: Buffer): Buffer {
  return encodeMessage(request, payload, MsgFlag.VERSION | MsgFlag.REPLY);
}

/** REPLY_ACK answer: u64 0 on success, non-zero on failure. */
export function encodeAck(request: number, ok: boolean): Buffer {
  return encodeReply(request, codec.u64.encode(ok ? 0n : 1n));
}

export interface Message {
  header: Header;
  payload: Buffer;
}

/**
 * Splits one complete message off the front of buf. Returns null when buf does not yet hold it all
 * (stream framing); throws ProtocolError when the header fails checkHeader().
 */
export function decodeMessage(buf: Buffer, offset = 0): Message | null {
  const b = asBuffer(buf, "message");
  if (!Number.isInteger(offset) || offset < 0) throw new ProtocolError(`message offset ${String(offset)} is invalid`);
  if (b.length - offset < HEADER_SIZE) return null;
  const header = decodeHeader(b, offset);
  checkHeader(header);
  const end = offset + HEADER_SIZE + header.size;
  if (b.length < end) return null;
  return { header, payload: b.subarray(offset + HEADER_SIZE, end) };
}

export function isReply(flags: number): boolean {
  return (flags & MsgFlag.REPLY) !== 0;
}

export function needsReply(flags: number): boolean {
  return (flags & MsgFlag.NEED_REPLY) !== 0;
}

export function requestName(request: number): string {
  const n = (Req as unknown as Record<number, unknown>)[request];
  return typeof n === "string" ? n : `UNKNOWN(${String(request)})`;
}

/** Inverse of requestName for CLIs and tests; accepts an optional VHOST_USER_ prefix, any case. */
export function requestFromName(name: string): Req {
  if (typeof name !== "string") throw new ProtocolError(`request name ${String(name)} is not a string`);
  const key = name.trim().toUpperCase().replace(/^VHOST_USER_/, "");
  const v = (Req as unknown as Record<string, unknown>)[key];
  if (typeof v !== "number") throw new ProtocolError(`unknown vhost-user request name "${name}"`);
  return v as Req;
}

export function backendRequestName(request: number): string {
  const n = (BackendReq as unknown as Record<number, unknown>)[request];
  return typeof n === "string" ? n : `UNKNOWN(${String(request)})`;
}

// ---------------------------------------------------------------- payload types

export interface VringState {
  index: number;
  num: number;
}
export interface VringAddr {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}
export interface MemRegionDesc {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}
export interface LogArea {
  size: bigint;
  offset: bigint;
}
export interface ConfigSpace {
  offset: number;
  size: number;
  flags: number;
  data: Buffer;
}
/**
 * GET/SET_INFLIGHT_FD. QEMU's struct is u64,u64,u16,u16 but sizeof() is 24 (trailing padding to
 * 8-byte alignment), it sends hdr.size = 24 and rejects a GET_INFLIGHT_FD reply of any other size.
 * So we encode 24 and accept 20 or 24 on decode (a packed-struct front-end would send 20).
 */
export interface InflightArea {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}
export interface VringFd {
  index: number;
  noFd: boolean;
}
/** Backend-channel VRING_HOST_NOTIFIER_MSG: u64 (index | NOFD), u64 size, u64 offset. */
export interface VringArea {
  index: number;
  noFd: boolean;
  size: bigint;
  offset: bigint;
}
/** struct vhost_iotlb_msg: u64 iova, u64 size, u64 uaddr, u8 perm, u8 type, 6 bytes padding (32). */
export interface IotlbMsg {
  iova: bigint;
  size: bigint;
  uaddr: bigint;
  perm: number;
  type: number;
}

export const INFLIGHT_SIZE = 24;
export const INFLIGHT_PACKED_SIZE = 20;
export const MEM_REGION_SIZE = 32;
export const IOTLB_MSG_SIZE = 32;

// ---------------------------------------------------------------- codecs

function u64Buf(v: bigint, field: string): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(checkU64(v, field));
  return b;
}

/** A region must be non-empty and none of its three ranges may wrap past 2^64. */
function checkRegion(r: MemRegionDesc, what: string): void {
  if (r.size === 0n) throw new ProtocolError(`${what}: memory region at guest ${hex(r.guestAddr)} has size 0`);
  const last = r.size - 1n;
  if (r.guestAddr + last > U64_MAX) throw new ProtocolError(`${what}: guest range ${hex(r.guestAddr)}+${hex(r.size)} wraps`);
  if (r.userAddr + last > U64_MAX) throw new ProtocolError(`${what}: user range ${hex(r.userAddr)}+${hex(r.size)} wraps`);
  if (r.mmapOffset + last > U64_MAX) throw new ProtocolError(`${what}: mmap range ${hex(r.mmapOffset)}+${hex(r.size)} wraps`);
}

function writeRegion(b: Buffer, off: number, r: MemRegionDesc, what: string): void {
  b.writeBigUInt64LE(checkU64(r.guestAddr, `${what} guestAddr`), off);
  b.writeBigUInt64LE(checkU64(r.size, `${what} size`), off + 8);
  b.writeBigUInt64LE(checkU64(r.userAddr, `${what} userAddr`), off + 16);
  b.writeBigUInt64LE(checkU64(r.mmapOffset, `${what} mmapOffset`), off + 24);
  checkRegion(r, what);
}

function readRegion(b: Buffer, off: number): MemRegionDesc {
  return {
    guestAddr: b.readBigUInt64LE(off),
    size: b.readBigUInt64LE(off + 8),
    userAddr: b.readBigUInt64LE(off + 16),
    mmapOffset: b.readBigUInt64LE(off + 24),
  };
}

function vringFdEncode(index: number, noFd: boolean, what: string): bigint {
  checkUint(index, VRING_INDEX_MASK, `${what} index`);
  return BigInt(index) | (noFd ? BigInt(VRING_NOFD_MASK) : 0n);
}

function vringFdDecode(v: bigint, what: string): VringFd {
  const bad = v & ~BigInt(VRING_INDEX_MASK | VRING_NOFD_MASK);
  if (bad !== 0n) throw new ProtocolError(`${what} value ${hex(v)} has reserved bits ${hex(bad)} set`);
  return { index: Number(v & BigInt(VRING_INDEX_MASK)), noFd: (v & BigInt(VRING_NOFD_MASK)) !== 0n };
}

/** Formats 6 bytes as "aa:bb:cc:dd:ee:ff" (lower case); virtio.ts re-exports it as formatMac. */
export function macToString(b: Buffer): string {
  const buf = sized(b, 6, "MAC address");
  return Array.from(buf, (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** Parses "aa:bb:cc:dd:ee:ff" strictly (six two-digit hex groups, ':' separated). */
export function macFromString(s: string): Buffer {
  if (typeof s !== "string" || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) {
    throw new ProtocolError(`MAC address "${String(s)}" is not of the form aa:bb:cc:dd:ee:ff`);
  }
  return Buffer.from(s.split(":").map((x) => parseInt(x, 16)));
}

export const codec = {
  u64: {
    encode(v: bigint): Buffer {
      return u64Buf(v, "u64");
    },
    decode(b: Buffer, what = "u64"): bigint {
      return sized(b, 8, what).readBigUInt64LE(0);
    },
  },

  vringState: {
    encode(v: VringState): Buffer {
      const b = Buffer.alloc(8);
      b.writeUInt32LE(checkUint(v.index, U32_MAX, "vring state index"), 0);
      b.writeUInt32LE(checkUint(v.num, U32_MAX, "vring state num"), 4);
      return b;
    },
    decode(b: Buffer, what = "vring state"): VringState {
      const buf = sized(b, 8, what);
      return { index: buf.readUInt32LE(0), num: buf.readUInt32LE(4) };
    },
  },

  vringAddr: {
    encode(v: VringAddr): Buffer {
      const b = Buffer.alloc(40);
      b.writeUInt32LE(checkUint(v.index, U32_MAX, "vring addr index"), 0);
      b.writeUInt32LE(checkUint(v.flags, VRING_F_LOG, "vring addr flags"), 4);
      b.writeBigUInt64LE(checkU64(v.desc, "vring addr desc"), 8);
      b.writeBigUInt64LE(checkU64(v.used, "vring addr used"), 16);
      b.writeBigUInt64LE(checkU64(v.avail, "vring addr avail"), 24);
      b.writeBigUInt64LE(checkU64(v.log, "vring addr log"), 32);
      return b;
    },
    decode(b: Buffer, what = "vring address"): VringAddr {
      const buf = sized(b, 40, what);
      const flags = buf.readUInt32LE(4);
      // Only VHOST_VRING_F_LOG is defined; anything else means we misunderstand the sender.
      if ((flags & ~VRING_F_LOG) !== 0) throw new ProtocolError(`${what} flags 0x${flags.toString(16)} has unknown bits set`);
      return {
        index: buf.readUInt32LE(0),
        flags,
        desc: buf.readBigUInt64LE(8),
        used: buf.readBigUInt64LE(16),
        avail: buf.readBigUInt64LE(24),
        log: buf.readBigUInt64LE(32),
      };
    },
  },

  memTable: {
    /** u32 nregions, u32 padding, then exactly nregions regions (what QEMU and DPDK send). */
    encode(regions: MemRegionDesc[]): Buffer {
      if (!Array.isArray(regions) || regions.length > MAX_MEM_REGIONS) {
        throw new ProtocolError(`memory table has ${String(regions?.length)} regions, at most ${MAX_MEM_REGIONS}`);
      }
      const b = Buffer.alloc(8 + MEM_REGION_SIZE * regions.length);
      b.writeUInt32LE(regions.length, 0);
      regions.forEach((r, i) => writeRegion(b, 8 + MEM_REGION_SIZE * i, r, `memory table region ${i}`));
      checkDisjoint(regions, "memory table");
      return b;
    },
    decode(b: Buffer, what = "SET_MEM_TABLE"): MemRegionDesc[] {
      const buf = asBuffer(b, what);
      if (buf.length < 8) throw new ProtocolError(`${what} payload is ${buf.length} bytes, expected at least 8`);
      const n = buf.readUInt32LE(0);
      if (n > MAX_MEM_REGIONS) throw new ProtocolError(`${what} has ${n} regions, at most ${MAX_MEM_REGIONS}`);
      const want = 8 + MEM_REGION_SIZE * n;
      if (buf.length !== want) throw new ProtocolError(`${what} payload is ${buf.length} bytes, expected ${want} for ${n} regions`);
      const regions: MemRegionDesc[] = [];
      for (let i = 0; i < n; i++) {
        const r = readRegion(buf, 8 + MEM_REGION_SIZE * i);
        checkRegion(r, `${what} region ${i}`);
        regions.push(r);
      }
      checkDisjoint(regions, what);
      return regions;
    },
  },

  memRegion: {
    /** ADD_MEM_REG / REM_MEM_REG: u64 padding + one region (40 bytes). */
    encode(r: MemRegionDesc): Buffer {
      const b = Buffer.alloc(8 + MEM_REGION_SIZE);
      writeRegion(b, 8, r, "memory region");
      return b;
    },
    decode(b: Buffer, what = "memory region"): MemRegionDesc {
      const buf = sized(b, 8 + MEM_REGION_SIZE, what);
      const r = readRegion(buf, 8);
      checkRegion(r, what);
      return r;
    },
  },

  vringFd: {
    encode(v: VringFd): Buffer {
      return u64Buf(vringFdEncode(v.index, v.noFd === true, "vring fd"), "vring fd");
    },
    decode(b: Buffer, what = "vring fd"): VringFd {
      return vringFdDecode(sized(b, 8, what).readBigUInt64LE(0), what);
    },
  },

  log: {
    encode(v: LogArea): Buffer {
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(checkU64(v.size, "log mmap_size"), 0);
      b.writeBigUInt64LE(checkU64(v.offset, "log mmap_offset"), 8);
      return b;
    },
    decode(b: Buffer, what = "SET_LOG_BASE"): LogArea {
      const buf = sized(b, 16, what);
      const size = buf.readBigUInt64LE(0);
      const offset = buf.readBigUInt64LE(8);
      if (size === 0n) throw new ProtocolError(`${what} mmap_size is 0`);
      if (offset + size - 1n > U64_MAX) throw new ProtocolError(`${what} range ${hex(offset)}+${hex(size)} wraps`);
      return { size, offset };
    },
  },

  config: {
    /** u32 offset, u32 size, u32 flags, then size bytes; offset+size must stay within 256. */
    encode(v: ConfigSpace): Buffer {
      const data = asBuffer(v.data, "config");
      checkConfig(v.offset, v.size, v.flags, "config");
      if (data.length !== v.size) throw new ProtocolError(`config data is ${data.length} bytes but size says ${v.size}`);
      const b = Buffer.alloc(CONFIG_HEADER_SIZE + v.size);
      b.writeUInt32LE(v.offset, 0);
      b.writeUInt32LE(v.size, 4);
      b.writeUInt32LE(v.flags, 8);
      data.copy(b, CONFIG_HEADER_SIZE);
      return b;
    },
    decode(b: Buffer, what = "config"): ConfigSpace {
      const buf = asBuffer(b, what);
      if (buf.length < CONFIG_HEADER_SIZE) {
        throw new ProtocolError(`${what} payload is ${buf.length} bytes, expected at least ${CONFIG_HEADER_SIZE}`);
      }
      const offset = buf.readUInt32LE(0);
      const size = buf.readUInt32LE(4);
      const flags = buf.readUInt32LE(8);
      checkConfig(offset, size, flags, what);
      if (buf.length !== CONFIG_HEADER_SIZE + size) {
        throw new ProtocolError(`${what} payload is ${buf.length} bytes, expected ${CONFIG_HEADER_SIZE + size} for size ${size}`);
      }
      // Copy: the caller may keep it past the lifetime of the receive buffer.
      return { offset, size, flags, data: Buffer.from(buf.subarray(CONFIG_HEADER_SIZE)) };
    },
  },

  inflight: {
    encode(v: InflightArea): Buffer {
      const b = Buffer.alloc(INFLIGHT_SIZE);
      b.writeBigUInt64LE(checkU64(v.mmapSize, "inflight mmap_size"), 0);
      b.writeBigUInt64LE(checkU64(v.mmapOffset, "inflight mmap_offset"), 8);
      b.writeUInt16LE(checkUint(v.numQueues, U16_MAX, "inflight num_queues"), 16);
      b.writeUInt16LE(checkUint(v.queueSize, U16_MAX, "inflight queue_size"), 18);
      return b;
    },
    decode(b: Buffer, what = "inflight"): InflightArea {
      const buf = asBuffer(b, what);
      if (buf.length !== INFLIGHT_SIZE && buf.length !== INFLIGHT_PACKED_SIZE) {
        throw new ProtocolError(`${what} payload is ${buf.length} bytes, expected ${INFLIGHT_SIZE} (or ${INFLIGHT_PACKED_SIZE})`);
      }
      const mmapSize = buf.readBigUInt64LE(0);
      const mmapOffset = buf.readBigUInt64LE(8);
      // mmap_size 0 is legal: GET_INFLIGHT_FD requests carry 0, and a 0 reply means "no area".
      if (mmapSize !== 0n && mmapOffset + mmapSize - 1n > U64_MAX) {
        throw new ProtocolError(`${what} range ${hex(mmapOffset)}+${hex(mmapSize)} wraps`);
      }
      return { mmapSize, mmapOffset, numQueues: buf.readUInt16LE(16), queueSize: buf.readUInt16LE(18) };
    },
  },

  status: {
    encode(v: number): Buffer {
      return u64Buf(BigInt(checkUint(v, U8_MAX, "device status")), "device status");
    },
    decode(b: Buffer, what = "status"): number {
      const v = sized(b, 8, what).readBigUInt64LE(0);
      if (v > BigInt(U8_MAX)) throw new ProtocolError(`${what} value ${hex(v)} does not fit the u8 device status`);
      return Number(v);
    },
  },

  /** SEND_RARP: u64 whose first 6 bytes are the guest MAC. */
  rarp: {
    encode(mac: string): Buffer {
      const b = Buffer.alloc(8);
      macFromString(mac).copy(b, 0);
      return b;
    },
    decode(b: Buffer, what = "SEND_RARP"): string {
      return macToString(sized(b, 8, what).subarray(0, 6));
    },
  },

  vringArea: {
    encode(v: VringArea): Buffer {
      const b = Buffer.alloc(24);
      b.writeBigUInt64LE(vringFdEncode(v.index, v.noFd === true, "vring area"), 0);
      b.writeBigUInt64LE(checkU64(v.size, "vring area size"), 8);
      b.writeBigUInt64LE(checkU64(v.offset, "vring area offset"), 16);
      return b;
    },
    decode(b: Buffer, what = "vring area"): VringArea {
      const buf = sized(b, 24, what);
      const fd = vringFdDecode(buf.readBigUInt64LE(0), what);
      return { index: fd.index, noFd: fd.noFd, size: buf.readBigUInt64LE(8), offset: buf.readBigUInt64LE(16) };
    },
  },

  iotlb: {
    encode(v: IotlbMsg): Buffer {
      const b = Buffer.alloc(IOTLB_MSG_SIZE);
      b.writeBigUInt64LE(checkU64(v.iova, "iotlb iova"), 0);
      b.writeBigUInt64LE(checkU64(v.size, "iotlb size"), 8);
      b.writeBigUInt64LE(checkU64(v.uaddr, "iotlb uaddr"), 16);
      b.writeUInt8(checkUint(v.perm, U8_MAX, "iotlb perm"), 24);
      b.writeUInt8(checkUint(v.type, U8_MAX, "iotlb type"), 25);
      return b;
    },
    decode(b: Buffer, what = "IOTLB_MSG"): IotlbMsg {
      const buf = sized(b, IOTLB_MSG_SIZE, what);
      return {
        iova: buf.readBigUInt64LE(0),
        size: buf.readBigUInt64LE(8),
        uaddr: buf.readBigUInt64LE(16),
        perm: buf.readUInt8(24),
        type: buf.readUInt8(25),
      };
    },
  },
};

function checkConfig(offset: unknown, size: unknown, flags: unknown, what: string): void {
  checkUint(offset, U32_MAX, `${what} offset`);
  checkUint(size, MAX_CONFIG_SIZE, `${what} size`);
  checkUint(flags, ConfigFlag.MIGRATION, `${what} flags`);
  if ((offset as number) + (size as number) > MAX_CONFIG_SIZE) {
    throw new ProtocolError(`${what} range ${String(offset)}+${String(size)} exceeds the ${MAX_CONFIG_SIZE}-byte config space`);
  }
}

/** Guest-physical ranges of a memory table must not overlap (translation would be ambiguous). */
function checkDisjoint(regions: MemRegionDesc[], what: string): void {
  const sorted = [...regions].sort((a, b) => (a.guestAddr < b.guestAddr ? -1 : a.guestAddr > b.guestAddr ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev.guestAddr + prev.size > cur.guestAddr) {
      throw new ProtocolError(`${what}: guest ranges ${hex(prev.guestAddr)}+${hex(prev.size)} and ${hex(cur.guestAddr)}+${hex(cur.size)} overlap`);
    }
  }
}

// ---------------------------------------------------------------- per-request table

export type PayloadKind =
  | "none"
  | "u64"
  | "vringState"
  | "vringAddr"
  | "memTable"
  | "memRegion"
  | "vringFd"
  | "log"
  | "config"
  | "inflight"
  | "rarp";

export interface MessageSpec {
  name: string;
  payload: PayloadKind;
  /** fds the message must carry: [min, max] */
  fds: [number, number];
  /** "value": the back-end always replies with a payload (GET_*); "ack": replies only when NEED_REPLY and REPLY_ACK are set */
  reply: "value" | "ack";
  /** For reply "value": the payload kind of that reply. */
  replyPayload?: PayloadKind;
  /** The protocol feature that must be negotiated (SET_PROTOCOL_FEATURES) before this request is valid. */
  needs?: ProtocolFeature;
}

function spec(req: Req, payload: PayloadKind, fds: [number, number], reply: "value" | "ack", replyPayload?: PayloadKind, needs?: ProtocolFeature): [number, MessageSpec] {
  const s: MessageSpec = { name: Req[req], payload, fds, reply };
  if (replyPayload !== undefined) s.replyPayload = replyPayload;
  if (needs !== undefined) s.needs = needs;
  return [req, Object.freeze(s)];
}

/**
 * Every front-end request we understand. Absent on purpose: IOTLB_MSG (we never offer
 * ACCESS_PLATFORM; codec.iotlb exists for completeness), crypto, postcopy, GPU, shared objects and
 * device-state transfer (their protocol features are never offered).
 * Notes: SET_STATUS and NET_SET_MTU are "u64" (decode SET_STATUS with codec.status);
 * SET_LOG_BASE always gets a reply (QEMU waits for one with LOG_SHMFD and checks only its request id):
 * a u64 0 as libvhost-user sends, or an empty payload as DPDK sends;
 * GET_INFLIGHT_FD's reply carries one fd when its mmapSize is non-zero.
 * `needs` is the protocol feature the vhost-user spec makes each request depend on ("only valid
 * if ... is negotiated"); the back-end refuses the request before its handler sees it otherwise.
 * (RESET_DEVICE would need RESET_DEVICE, which we never offer: it is kept as an alias of
 * RESET_OWNER for front-ends that send it anyway.)
 */
export const MESSAGES: ReadonlyMap<number, MessageSpec> = new Map<number, MessageSpec>([
  spec(Req.GET_FEATURES, "none", [0, 0], "value", "u64"),
  spec(Req.SET_FEATURES, "u64", [0, 0], "ack"),
  spec(Req.SET_OWNER, "none", [0, 0], "ack"),
  spec(Req.RESET_OWNER, "none", [0, 0], "ack"),
  spec(Req.SET_MEM_TABLE, "memTable", [0, MAX_MEM_REGIONS], "ack"),
  spec(Req.SET_LOG_BASE, "log", [1, 1], "value", "u64", ProtocolFeature.LOG_SHMFD),
  spec(Req.SET_LOG_FD, "none", [1, 1], "ack"),
  spec(Req.SET_VRING_NUM, "vringState", [0, 0], "ack"),
  spec(Req.SET_VRING_ADDR, "vringAddr", [0, 0], "ack"),
  spec(Req.SET_VRING_BASE, "vringState", [0, 0], "ack"),
  spec(Req.GET_VRING_BASE, "vringState", [0, 0], "value", "vringState"),
  spec(Req.SET_VRING_KICK, "vringFd", [0, 1], "ack"),
  spec(Req.SET_VRING_CALL, "vringFd", [0, 1], "ack"),
  spec(Req.SET_VRING_ERR, "vringFd", [0, 1], "ack"),
  spec(Req.GET_PROTOCOL_FEATURES, "none", [0, 0], "value", "u64"),
  spec(Req.SET_PROTOCOL_FEATURES, "u64", [0, 0], "ack"),
  spec(Req.GET_QUEUE_NUM, "none", [0, 0], "value", "u64", ProtocolFeature.MQ),
  spec(Req.SET_VRING_ENABLE, "vringState", [0, 0], "ack"),
  spec(Req.SEND_RARP, "rarp", [0, 0], "ack", undefined, ProtocolFeature.RARP),
  spec(Req.NET_SET_MTU, "u64", [0, 0], "ack", undefined, ProtocolFeature.NET_MTU),
  spec(Req.SET_BACKEND_REQ_FD, "none", [1, 1], "ack", undefined, ProtocolFeature.BACKEND_REQ),
  spec(Req.SET_VRING_ENDIAN, "vringState", [0, 0], "ack"),
  spec(Req.GET_CONFIG, "config", [0, 0], "value", "config", ProtocolFeature.CONFIG),
  spec(Req.SET_CONFIG, "config", [0, 0], "ack", undefined, ProtocolFeature.CONFIG),
  spec(Req.GET_INFLIGHT_FD, "inflight", [0, 0], "value", "inflight", ProtocolFeature.INFLIGHT_SHMFD),
  spec(Req.SET_INFLIGHT_FD, "inflight", [1, 1], "ack", undefined, ProtocolFeature.INFLIGHT_SHMFD),
  spec(Req.RESET_DEVICE, "none", [0, 0], "ack"),
  spec(Req.VRING_KICK, "vringState", [0, 0], "ack", undefined, ProtocolFeature.INBAND_NOTIFICATIONS),
  spec(Req.GET_MAX_MEM_SLOTS, "none", [0, 0], "value", "u64", ProtocolFeature.CONFIGURE_MEM_SLOTS),
  spec(Req.ADD_MEM_REG, "memRegion", [1, 1], "ack", undefined, ProtocolFeature.CONFIGURE_MEM_SLOTS),
  // The spec says REM_MEM_REG SHOULD carry no fd but back-ends MAY accept (and must close) one.
  spec(Req.REM_MEM_REG, "memRegion", [0, 1], "ack", undefined, ProtocolFeature.CONFIGURE_MEM_SLOTS),
  spec(Req.SET_STATUS, "u64", [0, 0], "ack", undefined, ProtocolFeature.STATUS),
  spec(Req.GET_STATUS, "none", [0, 0], "value", "u64", ProtocolFeature.STATUS),
]);

export type Payload =
  | { kind: "none" }
  | { kind: "u64"; value: bigint }
  | { kind: "vringState"; value: VringState }
  | { kind: "vringAddr"; value: VringAddr }
  | { kind: "memTable"; value: MemRegionDesc[] }
  | { kind: "memRegion"; value: MemRegionDesc }
  | { kind: "vringFd"; value: VringFd }
  | { kind: "log"; value: LogArea }
  | { kind: "config"; value: ConfigSpace }
  | { kind: "inflight"; value: InflightArea }
  | { kind: "rarp"; value: string };

/**
 * Decodes a payload of the given kind. "none" accepts an empty payload, and also 8 bytes (ignored):
 * some front-ends send a zero u64 where the spec says N/A, and refusing them would cost a VM its device.
 */
export function decodePayload(kind: PayloadKind, b: Buffer, what: string = kind): Payload {
  switch (kind) {
    case "none": {
      const buf = asBuffer(b, what);
      if (buf.length !== 0 && buf.length !== 8) throw new ProtocolError(`${what} payload is ${buf.length} bytes, expected 0`);
      return { kind };
    }
    case "u64":
      return { kind, value: codec.u64.decode(b, what) };
    case "vringState":
      return { kind, value: codec.vringState.decode(b, what) };
    case "vringAddr":
      return { kind, value: codec.vringAddr.decode(b, what) };
    case "memTable":
      return { kind, value: codec.memTable.decode(b, what) };
    case "memRegion":
      return { kind, value: codec.memRegion.decode(b, what) };
    case "vringFd":
      return { kind, value: codec.vringFd.decode(b, what) };
    case "log":
      return { kind, value: codec.log.decode(b, what) };
    case "config":
      return { kind, value: codec.config.decode(b, what) };
    case "inflight":
      return { kind, value: codec.inflight.decode(b, what) };
    case "rarp":
      return { kind, value: codec.rarp.decode(b, what) };
    default:
      throw new ProtocolError(`${what}: unknown payload kind ${String(kind)}`);
  }
}

/** Looks the request up in MESSAGES and decodes its payload; unknown requests are a ProtocolError. */
export function decodeRequest(request: number, payload: Buffer): Payload {
  const s = MESSAGES.get(request);
  if (s === undefined) throw new ProtocolError(`unsupported request ${requestName(request)}`);
  return decodePayload(s.payload, payload, s.name);
}

/**
 * Checks the number of fds that came with a decoded request: the table's [min, max], plus the
 * exact counts the payload implies (a vring fd with NOFD carries none, without it exactly one;
 * SET_MEM_TABLE carries one per region).
 */
export function checkFdCount(request: number, payload: Payload, nfds: number): void {
  const s = MESSAGES.get(request);
  if (s === undefined) throw new ProtocolError(`unsupported request ${requestName(request)}`);
  if (!Number.isInteger(nfds) || nfds < 0 || nfds > MAX_FDS) throw new ProtocolError(`${s.name} carries ${String(nfds)} fds, at most ${MAX_FDS}`);
  let [min, max] = s.fds;
  if (payload.kind === "vringFd") min = max = payload.value.noFd ? 0 : 1;
  if (payload.kind === "memTable") min = max = payload.value.length;
  if (nfds < min || nfds > max) {
    const want = min === max ? `${min}` : `${min}..${max}`;
    throw new ProtocolError(`${s.name} carries ${nfds} fds, expected ${want}`);
  }
}
