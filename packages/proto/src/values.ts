// Value formats that cross a process or a disk: PCI addresses, MACs, UUIDs, socket and disk
// paths, sizes, and their limits. The RPC's params, the device records (device_record.ts) and
// the configuration file all check values with these.

export interface PciAddr {
  domain: number;
  bus: number;
  device: number;
  fn: number;
}

const PCI_RE = /^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/;

/** Parses "DDDD:BB:DD.F" or "BB:DD.F" (domain 0). Returns undefined if malformed. */
export function parsePciAddr(s: string): PciAddr | undefined {
  if (typeof s !== "string" || s.length > 16) return undefined;
  const m = PCI_RE.exec(s);
  if (!m) return undefined;
  const domain = m[1] === undefined ? 0 : parseInt(m[1], 16);
  const bus = parseInt(m[2]!, 16);
  const device = parseInt(m[3]!, 16);
  const fn = parseInt(m[4]!, 10);
  if (device > 0x1f) return undefined;
  return { domain, bus, device, fn };
}

const hex = (n: number, w: number) => n.toString(16).padStart(w, "0");

export function formatPciAddr(a: PciAddr): string {
  return `${hex(a.domain, 4)}:${hex(a.bus, 2)}:${hex(a.device, 2)}.${a.fn}`;
}

/** Canonical form (lowercase, 4-digit domain), or undefined if malformed. */
export function normalizePciAddr(s: string): string | undefined {
  const a = parsePciAddr(s);
  return a ? formatPciAddr(a) : undefined;
}

/** 16-bit routing id bus<<8 | device<<3 | fn. */
export function pciRid(a: PciAddr): number {
  return (a.bus << 8) | (a.device << 3) | a.fn;
}

export function pciFromRid(domain: number, rid: number): PciAddr {
  return { domain, bus: (rid >> 8) & 0xff, device: (rid >> 3) & 0x1f, fn: rid & 7 };
}

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
export function isUuid(s: string): boolean {
  return UUID_RE.test(s);
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
/** Canonical lowercase MAC if `s` is a unicast, non-zero MAC; else undefined. */
export function normalizeMac(s: string): string | undefined {
  if (!MAC_RE.test(s)) return undefined;
  const b = s.toLowerCase().split(":").map((x) => parseInt(x, 16));
  if (b[0]! & 1) return undefined; // multicast / broadcast
  if (b.every((x) => x === 0)) return undefined;
  return s.toLowerCase();
}

/** sun_path is 108 bytes including the terminating NUL. */
export const SOCKET_PATH_MAX_BYTES = 107;

export function socketPathProblem(s: string): string | undefined {
  if (s.length === 0) return "socket path is empty";
  if (!s.startsWith("/")) return "socket path must be absolute";
  if (s.includes("\0")) return "socket path contains a NUL byte";
  const n = new TextEncoder().encode(s).length;
  if (n > SOCKET_PATH_MAX_BYTES) return `socket path is ${n} bytes, the limit is ${SOCKET_PATH_MAX_BYTES}`;
  if (s.endsWith("/")) return "socket path names a directory";
  return undefined;
}

/**
 * Why a socket path given for a new VF is not in its one spelling (undefined if it is). VFs
 * and the reserved sockets are compared as strings, and "/run/x/../vf.sock" or "/run//vf.sock"
 * would alias another VF's socket. Only new VFs are held to it: a journal written before this
 * rule may name such a path, and its VF must still come back.
 */
export function socketPathAliasProblem(s: string): string | undefined {
  if (s.slice(1).split("/").some((c) => c === "" || c === "." || c === "..")) return 'socket path has an empty, "." or ".." component';
  return undefined;
}

/* ---------------------------------- blk disks ---------------------------------------- */

/** `--disk null`: a disk without storage (reads return whatever the buffers held, writes vanish). */
export const DISK_NULL = "null";
/** A backing path, as open(2) takes it (PATH_MAX includes the NUL). */
export const DISK_PATH_MAX_BYTES = 4095;
export const DISK_SIZE_MIN = 1 << 20;
/** 1 PiB: far beyond any test, still a safe integer. */
export const DISK_SIZE_MAX = 2 ** 50;
export const DISK_SIZE_DEFAULT = 1 << 30;
export const DISK_SIZE_DEFAULT_TEXT = "1G";

/** Why `s` cannot name a disk backing (undefined if it can). */
export function diskPathProblem(s: string): string | undefined {
  if (s === DISK_NULL) return undefined;
  if (s.length === 0) return "disk path is empty";
  if (!s.startsWith("/")) return 'disk path must be absolute (or "null")';
  if (s.includes("\0")) return "disk path contains a NUL byte";
  const n = new TextEncoder().encode(s).length;
  if (n > DISK_PATH_MAX_BYTES) return `disk path is ${n} bytes, the limit is ${DISK_PATH_MAX_BYTES}`;
  if (s.endsWith("/")) return "disk path names a directory";
  if (s.split("/").some((c) => c === "." || c === "..")) return 'disk path has a "." or ".." component';
  return undefined;
}

/** "4096", "64K", "256M", "10G", "1T" (binary multiples; "KiB"/"MB"-style spellings too) -> bytes. */
export function parseSize(s: string): number | undefined {
  const m = /^(\d{1,16})\s*([kKmMgGtTpP]?)(?:i?[bB])?$/.exec(s.trim());
  if (!m) return undefined;
  const mult = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t" | "p"];
  const v = Number(m[1]) * mult;
  return Number.isSafeInteger(v) ? v : undefined;
}

/** A blk VF's backing as the registry, the journal and the keeper carry it. */
export interface DiskSpec {
  /** Absolute path of a raw file or block device, or "null". */
  path: string;
  /** Bytes: the null disk's size; a file's size when it was added (its capacity comes from the file). */
  size: number;
  readonly: boolean;
  /** O_DIRECT reads and writes. */
  direct: boolean;
}

/** Validates a DiskSpec from an untrusted source (journal, sync channel); undefined if fine. */
export function diskSpecProblem(v: unknown): string | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "disk is not a map";
  const o = v as Record<string, unknown>;
  const keys = ["path", "size", "readonly", "direct"];
  for (const k of Object.keys(o)) if (!keys.includes(k)) return `disk has an unknown field "${k.slice(0, 32)}"`;
  if (typeof o.path !== "string") return "disk.path is not a string";
  const p = diskPathProblem(o.path);
  if (p) return `disk.path: ${p}`;
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0 || o.size > DISK_SIZE_MAX) return `disk.size must be an integer in 0..${DISK_SIZE_MAX}`;
  if (o.path === DISK_NULL && (o.size < DISK_SIZE_MIN || o.size % 512 !== 0)) return `disk.size of a null disk must be a multiple of 512 in ${DISK_SIZE_MIN}..${DISK_SIZE_MAX}`;
  if (typeof o.readonly !== "boolean") return "disk.readonly is not a boolean";
  if (typeof o.direct !== "boolean") return "disk.direct is not a boolean";
  return undefined;
}

export const MTU_MIN = 68;
export const MTU_MAX = 9000;
export const QUEUE_PAIRS_MAX = 16;
