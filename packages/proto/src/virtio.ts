// virtio constants and config-space layouts (virtio 1.2 spec): feature bits, device status,
// virtio-net and virtio-blk headers and config structures. Little-endian throughout (VERSION_1).

import { ProtocolError, macFromString, macToString } from "./vhost_user.js";

/**
 * Feature bit numbers. A const object, not an enum: NET_ and BLK_ bits share numbers, and an
 * enum's reverse mapping would then name only one of them.
 */
export const VirtioFeatureBit = {
  NET_CSUM: 0,
  NET_GUEST_CSUM: 1,
  NET_CTRL_GUEST_OFFLOADS: 2,
  NET_MTU: 3,
  NET_MAC: 5,
  NET_GUEST_TSO4: 7,
  NET_GUEST_TSO6: 8,
  NET_GUEST_ECN: 9,
  NET_GUEST_UFO: 10,
  NET_HOST_TSO4: 11,
  NET_HOST_TSO6: 12,
  NET_HOST_ECN: 13,
  NET_HOST_UFO: 14,
  NET_MRG_RXBUF: 15,
  NET_STATUS: 16,
  NET_CTRL_VQ: 17,
  NET_CTRL_RX: 18,
  NET_CTRL_VLAN: 19,
  NET_CTRL_RX_EXTRA: 20,
  NET_GUEST_ANNOUNCE: 21,
  NET_MQ: 22,
  NET_CTRL_MAC_ADDR: 23,
  NET_VQ_NOTF_COAL: 52,
  NET_NOTF_COAL: 53,
  NET_GUEST_USO4: 54,
  NET_GUEST_USO6: 55,
  NET_HOST_USO: 56,
  NET_HASH_REPORT: 57,
  NET_GUEST_HDRLEN: 59,
  NET_RSS: 60,
  NET_RSC_EXT: 61,
  NET_STANDBY: 62,
  NET_SPEED_DUPLEX: 63,

  BLK_BARRIER: 0,
  BLK_SIZE_MAX: 1,
  BLK_SEG_MAX: 2,
  BLK_GEOMETRY: 4,
  BLK_RO: 5,
  BLK_BLK_SIZE: 6,
  BLK_SCSI: 7,
  BLK_FLUSH: 9,
  BLK_TOPOLOGY: 10,
  BLK_CONFIG_WCE: 11,
  BLK_MQ: 12,
  BLK_DISCARD: 13,
  BLK_WRITE_ZEROES: 14,
  BLK_LIFETIME: 15,
  BLK_SECURE_ERASE: 16,
  BLK_ZONED: 17,

  NOTIFY_ON_EMPTY: 24,
  LOG_ALL: 26, // VHOST_F_LOG_ALL: a vhost feature, not a virtio one, but it travels in the same mask
  ANY_LAYOUT: 27,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VHOST_USER_PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
  ADMIN_VQ: 41,
} as const;
export type VirtioFeatureBit = (typeof VirtioFeatureBit)[keyof typeof VirtioFeatureBit];

export const VHOST_F_LOG_ALL = 26;

export function bit(n: number): bigint {
  if (!Number.isInteger(n) || n < 0 || n > 63) throw new ProtocolError(`feature bit ${String(n)} is not in 0..63`);
  return 1n << BigInt(n);
}

export function hasFeature(features: bigint, n: number): boolean {
  return (features & bit(n)) !== 0n;
}

export type DeviceKind = "net" | "blk";

// Name tables per device kind, built once: transport bits (24..41) are common, others per device.
function nameTable(kind: DeviceKind): Map<number, string> {
  const own = kind === "net" ? "NET_" : "BLK_";
  const other = kind === "net" ? "BLK_" : "NET_";
  const m = new Map<number, string>();
  for (const [k, v] of Object.entries(VirtioFeatureBit)) {
    if (k.startsWith(other)) continue;
    m.set(v, k.startsWith(own) ? k.slice(own.length) : k);
  }
  return m;
}
const NAMES: Record<DeviceKind, Map<number, string>> = { net: nameTable("net"), blk: nameTable("blk") };

function checkKind(kind: unknown): DeviceKind {
  if (kind !== "net" && kind !== "blk") throw new ProtocolError(`device kind ${String(kind)} is not "net" or "blk"`);
  return kind;
}

/** Names of the bits set, lowest first, for logs and the CLI ("MRG_RXBUF", "VERSION_1", "UNKNOWN(45)"). */
export function featureNames(features: bigint, kind: DeviceKind): string[] {
  const names = NAMES[checkKind(kind)];
  const out: string[] = [];
  for (let i = 0; i < 64; i++) {
    if (((features >> BigInt(i)) & 1n) !== 0n) out.push(names.get(i) ?? `UNKNOWN(${i})`);
  }
  return out;
}

/** Inverse of featureNames: accepts the short names, the prefixed keys, or VIRTIO_*_F_ spellings. */
export function featureMask(names: readonly string[], kind: DeviceKind): bigint {
  const table = NAMES[checkKind(kind)];
  const byName = new Map<string, number>();
  for (const [n, name] of table) byName.set(name, n);
  let m = 0n;
  for (const raw of names) {
    const key = String(raw)
      .trim()
      .toUpperCase()
      .replace(/^VHOST_F_/, "")
      .replace(/^VIRTIO_(NET_|BLK_|RING_)?F_/, (_s, p: string | undefined) => (p === "RING_" ? "RING_" : ""))
      .replace(kind === "net" ? /^NET_/ : /^BLK_/, "");
    const n = byName.get(key);
    if (n === undefined) throw new ProtocolError(`unknown ${kind} feature "${String(raw)}"`);
    m |= bit(n);
  }
  return m;
}

export enum DeviceStatus {
  ACKNOWLEDGE = 1,
  DRIVER = 2,
  DRIVER_OK = 4,
  FEATURES_OK = 8,
  DEVICE_NEEDS_RESET = 64,
  FAILED = 128,
}

export function deviceStatusNames(status: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < 8; i++) {
    if ((status & (1 << i)) === 0) continue;
    const n = (DeviceStatus as unknown as Record<number, unknown>)[1 << i];
    out.push(typeof n === "string" ? n : `UNKNOWN(${1 << i})`);
  }
  return out;
}

export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;

// ---------------------------------------------------------------- virtqueues

/** Split rings must be a power of two no larger than this; packed rings any size up to it. */
export const VIRTQUEUE_MAX_SIZE = 32768;
export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
export const VRING_PACKED_DESC_F_USED = 1 << 15;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const VRING_USED_F_NO_NOTIFY = 1;
export const VRING_PACKED_EVENT_FLAG_ENABLE = 0;
export const VRING_PACKED_EVENT_FLAG_DISABLE = 1;
export const VRING_PACKED_EVENT_FLAG_DESC = 2;
/** In SET/GET_VRING_BASE for packed rings: bit 15 is the wrap counter, bits 0..14 the index. */
export const VRING_PACKED_WRAP_BIT = 15;
export const VRING_DESC_SIZE = 16;

/** Byte sizes of the three split-ring areas for a ring of num entries (event-idx words included). */
export function splitRingSizes(num: number): { desc: number; avail: number; used: number } {
  if (!Number.isInteger(num) || num < 1 || num > VIRTQUEUE_MAX_SIZE) {
    throw new ProtocolError(`ring size ${String(num)} is not in 1..${VIRTQUEUE_MAX_SIZE}`);
  }
  return { desc: VRING_DESC_SIZE * num, avail: 4 + 2 * num + 2, used: 4 + 8 * num + 2 };
}

// ---------------------------------------------------------------- virtio-net

/** virtio_net_hdr with num_buffers: used with VERSION_1 or MRG_RXBUF. */
export const VIRTIO_NET_HDR_SIZE = 12;
export const VIRTIO_NET_HDR_LEGACY_SIZE = 10;
/** With HASH_REPORT: + u32 hash_value, u16 hash_report, u16 padding. */
export const VIRTIO_NET_HDR_HASH_SIZE = 20;

export function netHeaderSize(features: bigint): number {
  if (hasFeature(features, VirtioFeatureBit.NET_HASH_REPORT)) return VIRTIO_NET_HDR_HASH_SIZE;
  if (hasFeature(features, VirtioFeatureBit.VERSION_1) || hasFeature(features, VirtioFeatureBit.NET_MRG_RXBUF)) {
    return VIRTIO_NET_HDR_SIZE;
  }
  return VIRTIO_NET_HDR_LEGACY_SIZE;
}

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

// Control virtqueue: class, then command; the device answers one ack byte.
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;
export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;

export interface NetConfig {
  mac: string;
  status: number;
  maxVirtqueuePairs: number;
  mtu: number;
  /** Only with SPEED_DUPLEX: Mb/s, 0xffffffff = unknown. Giving speed or duplex makes the layout 24 bytes. */
  speed?: number;
  /** 0 half, 1 full, 0xff unknown. */
  duplex?: number;
}

/** mac[6] @0, u16 status @6, u16 max_virtqueue_pairs @8, u16 mtu @10. */
export const NET_CONFIG_SIZE = 12;
/** ... u32 speed @12, u8 duplex @16, u8 rss_max_key_size @17, u16 rss_max_indirection_table_length @18, u32 supported_hash_types @20. */
export const NET_CONFIG_FULL_SIZE = 24;
export const VIRTIO_NET_SPEED_UNKNOWN = 0xffff_ffff;
export const VIRTIO_NET_DUPLEX_UNKNOWN = 0xff;

function uint(v: unknown, max: number, field: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
    throw new ProtocolError(`${field} is ${String(v)}, expected an integer in 0..${max}`);
  }
  return v;
}

export function encodeNetConfig(c: NetConfig): Buffer {
  const full = c.speed !== undefined || c.duplex !== undefined;
  const b = Buffer.alloc(full ? NET_CONFIG_FULL_SIZE : NET_CONFIG_SIZE);
  parseMac(c.mac).copy(b, 0);
  b.writeUInt16LE(uint(c.status, 0xffff, "net status"), 6);
  b.writeUInt16LE(uint(c.maxVirtqueuePairs, 0xffff, "net max_virtqueue_pairs"), 8);
  b.writeUInt16LE(uint(c.mtu, 0xffff, "net mtu"), 10);
  if (full) {
    b.writeUInt32LE(uint(c.speed ?? VIRTIO_NET_SPEED_UNKNOWN, 0xffff_ffff, "net speed"), 12);
    b.writeUInt8(uint(c.duplex ?? VIRTIO_NET_DUPLEX_UNKNOWN, 0xff, "net duplex"), 16);
  }
  return b;
}

export function decodeNetConfig(b: Buffer): NetConfig {
  if (!(b instanceof Uint8Array) || (b.length !== NET_CONFIG_SIZE && b.length !== NET_CONFIG_FULL_SIZE)) {
    throw new ProtocolError(`net config is ${String((b as { length?: unknown })?.length)} bytes, expected ${NET_CONFIG_SIZE} or ${NET_CONFIG_FULL_SIZE}`);
  }
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const c: NetConfig = {
    mac: formatMac(buf.subarray(0, 6)),
    status: buf.readUInt16LE(6),
    maxVirtqueuePairs: buf.readUInt16LE(8),
    mtu: buf.readUInt16LE(10),
  };
  if (buf.length === NET_CONFIG_FULL_SIZE) {
    c.speed = buf.readUInt32LE(12);
    c.duplex = buf.readUInt8(16);
  }
  return c;
}

/** "aa:bb:cc:dd:ee:ff" (either case) to 6 bytes; anything else is a ProtocolError. */
export function parseMac(s: string): Buffer {
  return macFromString(s);
}

/** 6 bytes to lower-case "aa:bb:cc:dd:ee:ff". */
export function formatMac(b: Buffer): string {
  return macToString(b);
}

// ---------------------------------------------------------------- virtio-blk

export const VIRTIO_BLK_SECTOR_SIZE = 512;
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
/** Request header: u32 type, u32 reserved, u64 sector. The status byte ends the chain. */
export const VIRTIO_BLK_OUTHDR_SIZE = 16;
/** GET_ID answers a 20-byte serial, NUL-padded (not terminated when exactly 20). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Discard / write-zeroes / secure-erase segment: u64 sector, u32 num_sectors, u32 flags. */
export const VIRTIO_BLK_DISCARD_SEG_SIZE = 16;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

export interface BlkGeometry {
  cylinders: number;
  heads: number;
  sectors: number;
}
export interface BlkTopology {
  physicalBlockExp: number;
  alignmentOffset: number;
  minIoSize: number;
  optIoSize: number;
}
/** virtio_blk_config. Optional fields encode as 0; they only mean something with their feature bit. */
export interface BlkConfig {
  /** In 512-byte sectors, whatever blkSize is. */
  capacity: bigint;
  sizeMax?: number;
  segMax?: number;
  geometry?: BlkGeometry;
  blkSize?: number;
  topology?: BlkTopology;
  writeback?: number;
  numQueues?: number;
  maxDiscardSectors?: number;
  maxDiscardSeg?: number;
  discardSectorAlignment?: number;
  maxWriteZeroesSectors?: number;
  maxWriteZeroesSeg?: number;
  writeZeroesMayUnmap?: number;
  maxSecureEraseSectors?: number;
  maxSecureEraseSeg?: number;
  secureEraseSectorAlignment?: number;
}

/**
 * Offsets of virtio_blk_config (virtio 1.2 §5.2.4). The struct ends with the 24-byte zoned
 * characteristics at 72; we never offer ZONED, so those encode as zeros. Front-ends ask for
 * different lengths (QEMU uses its own sizeof): GET_CONFIG answers slice this, zero-filled.
 */
export const BLK_CONFIG_OFFSETS = {
  capacity: 0,
  sizeMax: 8,
  segMax: 12,
  cylinders: 16,
  heads: 18,
  sectors: 19,
  blkSize: 20,
  physicalBlockExp: 24,
  alignmentOffset: 25,
  minIoSize: 26,
  optIoSize: 28,
  writeback: 32,
  numQueues: 34,
  maxDiscardSectors: 36,
  maxDiscardSeg: 40,
  discardSectorAlignment: 44,
  maxWriteZeroesSectors: 48,
  maxWriteZeroesSeg: 52,
  writeZeroesMayUnmap: 56,
  maxSecureEraseSectors: 60,
  maxSecureEraseSeg: 64,
  secureEraseSectorAlignment: 68,
  zoned: 72,
} as const;
export const BLK_CONFIG_SIZE = 96;

const U64_MAX = (1n << 64n) - 1n;

export function encodeBlkConfig(c: BlkConfig): Buffer {
  const o = BLK_CONFIG_OFFSETS;
  const b = Buffer.alloc(BLK_CONFIG_SIZE);
  if (typeof c.capacity !== "bigint" || c.capacity < 0n || c.capacity > U64_MAX) {
    throw new ProtocolError(`blk capacity ${String(c.capacity)} is not a u64 bigint`);
  }
  b.writeBigUInt64LE(c.capacity, o.capacity);
  const u32 = (v: number | undefined, off: number, f: string) => b.writeUInt32LE(uint(v ?? 0, 0xffff_ffff, `blk ${f}`), off);
  const u16 = (v: number | undefined, off: number, f: string) => b.writeUInt16LE(uint(v ?? 0, 0xffff, `blk ${f}`), off);
  const u8 = (v: number | undefined, off: number, f: string) => b.writeUInt8(uint(v ?? 0, 0xff, `blk ${f}`), off);
  u32(c.sizeMax, o.sizeMax, "size_max");
  u32(c.segMax, o.segMax, "seg_max");
  u16(c.geometry?.cylinders, o.cylinders, "cylinders");
  u8(c.geometry?.heads, o.heads, "heads");
  u8(c.geometry?.sectors, o.sectors, "sectors");
  u32(c.blkSize, o.blkSize, "blk_size");
  u8(c.topology?.physicalBlockExp, o.physicalBlockExp, "physical_block_exp");
  u8(c.topology?.alignmentOffset, o.alignmentOffset, "alignment_offset");
  u16(c.topology?.minIoSize, o.minIoSize, "min_io_size");
  u32(c.topology?.optIoSize, o.optIoSize, "opt_io_size");
  u8(c.writeback, o.writeback, "writeback");
  u16(c.numQueues, o.numQueues, "num_queues");
  u32(c.maxDiscardSectors, o.maxDiscardSectors, "max_discard_sectors");
  u32(c.maxDiscardSeg, o.maxDiscardSeg, "max_discard_seg");
  u32(c.discardSectorAlignment, o.discardSectorAlignment, "discard_sector_alignment");
  u32(c.maxWriteZeroesSectors, o.maxWriteZeroesSectors, "max_write_zeroes_sectors");
  u32(c.maxWriteZeroesSeg, o.maxWriteZeroesSeg, "max_write_zeroes_seg");
  u8(c.writeZeroesMayUnmap, o.writeZeroesMayUnmap, "write_zeroes_may_unmap");
  u32(c.maxSecureEraseSectors, o.maxSecureEraseSectors, "max_secure_erase_sectors");
  u32(c.maxSecureEraseSeg, o.maxSecureEraseSeg, "max_secure_erase_seg");
  u32(c.secureEraseSectorAlignment, o.secureEraseSectorAlignment, "secure_erase_sector_alignment");
  return b;
}

/** Decodes a full virtio_blk_config (every field present, zeros included). */
export function decodeBlkConfig(b: Buffer): Required<BlkConfig> {
  if (!(b instanceof Uint8Array) || b.length !== BLK_CONFIG_SIZE) {
    throw new ProtocolError(`blk config is ${String((b as { length?: unknown })?.length)} bytes, expected ${BLK_CONFIG_SIZE}`);
  }
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const o = BLK_CONFIG_OFFSETS;
  return {
    capacity: buf.readBigUInt64LE(o.capacity),
    sizeMax: buf.readUInt32LE(o.sizeMax),
    segMax: buf.readUInt32LE(o.segMax),
    geometry: { cylinders: buf.readUInt16LE(o.cylinders), heads: buf.readUInt8(o.heads), sectors: buf.readUInt8(o.sectors) },
    blkSize: buf.readUInt32LE(o.blkSize),
    topology: {
      physicalBlockExp: buf.readUInt8(o.physicalBlockExp),
      alignmentOffset: buf.readUInt8(o.alignmentOffset),
      minIoSize: buf.readUInt16LE(o.minIoSize),
      optIoSize: buf.readUInt32LE(o.optIoSize),
    },
    writeback: buf.readUInt8(o.writeback),
    numQueues: buf.readUInt16LE(o.numQueues),
    maxDiscardSectors: buf.readUInt32LE(o.maxDiscardSectors),
    maxDiscardSeg: buf.readUInt32LE(o.maxDiscardSeg),
    discardSectorAlignment: buf.readUInt32LE(o.discardSectorAlignment),
    maxWriteZeroesSectors: buf.readUInt32LE(o.maxWriteZeroesSectors),
    maxWriteZeroesSeg: buf.readUInt32LE(o.maxWriteZeroesSeg),
    writeZeroesMayUnmap: buf.readUInt8(o.writeZeroesMayUnmap),
    maxSecureEraseSectors: buf.readUInt32LE(o.maxSecureEraseSectors),
    maxSecureEraseSeg: buf.readUInt32LE(o.maxSecureEraseSeg),
    secureEraseSectorAlignment: buf.readUInt32LE(o.secureEraseSectorAlignment),
  };
}

/**
 * Serves a GET_CONFIG window [offset, offset+size) of a config blob; bytes past the blob's end read
 * as zero (front-ends size their request by their own struct, which may be longer than ours).
 */
export function configWindow(blob: Buffer, offset: number, size: number): Buffer {
  uint(offset, 256, "config offset");
  uint(size, 256, "config size");
  const out = Buffer.alloc(size);
  if (offset < blob.length) blob.copy(out, 0, offset, Math.min(blob.length, offset + size));
  return out;
}
