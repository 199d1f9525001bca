// The daemon's configuration file: the soft inventory of PFs and their SR-IOV layout.
// Optional; without --config the embedded DEFAULT_CONFIG is used. Validated strictly:
// unknown keys, wrong types and out-of-range values are errors naming the offending path.
import { readFileSync } from "node:fs";
import { MTU_MAX, MTU_MIN, QUEUE_PAIRS_MAX, normalizePciAddr, type DeviceKind } from "@vhostd/proto";

export interface PfConfig {
  /** PF address "DDDD:BB:DD.F". */
  dev: string;
  type: DeviceKind;
  /** SR-IOV First VF Offset: RID(VF n) = RID(PF) + firstVfOffset + n * vfStride. */
  firstVfOffset: number;
  vfStride: number;
  numVfs: number;
  /** Defaults of new VFs. */
  mtu: number;
  queuePairs: number;
  maxQueuePairs: number;
  /** First three MAC bytes of derived VF MACs; must be locally administered unicast. */
  macPrefix: string;
  /** net only: a TAP device the PF's switch uses as its uplink to the host. */
  uplink?: { tap: string };
}

export interface VhostdConfig {
  pfs: PfConfig[];
}

export const PF_DEFAULTS = {
  vfStride: 8,
  numVfs: 512,
  mtu: 1500,
  queuePairs: 1,
  maxQueuePairs: QUEUE_PAIRS_MAX,
  macPrefix: "52:54:00",
} as const;

/**
 * NVIDIA's guide: net PF 0000:af:00.2 whose first VF is 0000:af:04.5, blk PF
 * 0000:af:00.3 whose first VF is 0000:af:05.1. RID(af:00.2)=0xaf02, RID(af:04.5)=0xaf25:
 * offset 35; RID(af:00.3)=0xaf03, RID(af:05.1)=0xaf29: offset 38. With stride 8 the net VFs
 * have RID = 5 (mod 8) and the blk VFs RID = 1 (mod 8), so they never collide.
 */
export const DEFAULT_CONFIG: VhostdConfig = {
  pfs: [
    { dev: "0000:af:00.2", type: "net", firstVfOffset: 35, ...PF_DEFAULTS },
    { dev: "0000:af:00.3", type: "blk", firstVfOffset: 38, ...PF_DEFAULTS },
  ],
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

const PF_KEYS = ["dev", "type", "firstVfOffset", "vfStride", "numVfs", "mtu", "queuePairs", "maxQueuePairs", "macPrefix", "uplink"] as const;

/** Linux interface names: at most 15 bytes, no slash or whitespace. */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

function parseUplink(v: unknown, path: string, type: DeviceKind): { tap: string } | undefined {
  if (v === undefined) return undefined;
  if (type !== "net") throw new ConfigError(`${path}: only net PFs have an uplink`);
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ConfigError(`${path}: must be an object like {"tap": "vhostd0"}`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== "tap") throw new ConfigError(`${path}: unknown key "${k}"`);
  if (typeof o.tap !== "string" || !IFNAME.test(o.tap)) throw new ConfigError(`${path}.tap: must be an interface name of 1-15 characters [A-Za-z0-9_.-]`);
  return { tap: o.tap };
}

function int(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw new ConfigError(`${path}: must be an integer`);
  if (v < min || v > max) throw new ConfigError(`${path}: ${v} is out of range ${min}..${max}`);
  return v;
}

/** Validates a parsed config object; fills per-PF defaults. `where` names the source. */
export function parseConfig(raw: unknown, where = "config"): VhostdConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError(`${where}: must be a JSON object`);
  const top = raw as Record<string, unknown>;
  for (const k of Object.keys(top)) if (k !== "pfs" && k !== "$comment") throw new ConfigError(`${where}: unknown key "${k}"`);
  if (!Array.isArray(top.pfs)) throw new ConfigError(`${where}.pfs: must be an array`);
  if (top.pfs.length > 64) throw new ConfigError(`${where}.pfs: at most 64 PFs`);
  const pfs = top.pfs.map((p, i): PfConfig => {
    const path = `${where}.pfs[${i}]`;
    if (typeof p !== "object" || p === null || Array.isArray(p)) throw new ConfigError(`${path}: must be an object`);
    const o = p as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!(PF_KEYS as readonly string[]).includes(k) && k !== "$comment") throw new ConfigError(`${path}: unknown key "${k}"`);
    }
    if (typeof o.dev !== "string") throw new ConfigError(`${path}.dev: must be a PCI address string`);
    const dev = normalizePciAddr(o.dev);
    if (!dev) throw new ConfigError(`${path}.dev: "${o.dev}" is not a PCI address (domain:bus:slot.func)`);
    if (o.type !== "net" && o.type !== "blk") throw new ConfigError(`${path}.type: must be "net" or "blk"`);
    if (o.firstVfOffset === undefined) throw new ConfigError(`${path}.firstVfOffset: required`);
    const firstVfOffset = int(o.firstVfOffset, `${path}.firstVfOffset`, 1, 0xffff);
    const vfStride = o.vfStride === undefined ? PF_DEFAULTS.vfStride : int(o.vfStride, `${path}.vfStride`, 1, 0xffff);
    const numVfs = o.numVfs === undefined ? PF_DEFAULTS.numVfs : int(o.numVfs, `${path}.numVfs`, 0, 0xffff);
    const mtu = o.mtu === undefined ? PF_DEFAULTS.mtu : int(o.mtu, `${path}.mtu`, MTU_MIN, MTU_MAX);
    const maxQueuePairs = o.maxQueuePairs === undefined ? PF_DEFAULTS.maxQueuePairs : int(o.maxQueuePairs, `${path}.maxQueuePairs`, 1, QUEUE_PAIRS_MAX);
    const queuePairs = o.queuePairs === undefined ? PF_DEFAULTS.queuePairs : int(o.queuePairs, `${path}.queuePairs`, 1, maxQueuePairs);
    let macPrefix: string = PF_DEFAULTS.macPrefix;
    if (o.macPrefix !== undefined) {
      if (typeof o.macPrefix !== "string" || !/^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}$/.test(o.macPrefix)) {
        throw new ConfigError(`${path}.macPrefix: must be three hex bytes "xx:xx:xx"`);
      }
      const b0 = parseInt(o.macPrefix.slice(0, 2), 16);
      if (b0 & 1) throw new ConfigError(`${path}.macPrefix: must be unicast (first byte even)`);
      if (!(b0 & 2)) throw new ConfigError(`${path}.macPrefix: must be locally administered (first byte has bit 0x02)`);
      macPrefix = o.macPrefix.toLowerCase();
    }
    const uplink = parseUplink(o.uplink, `${path}.uplink`, o.type);
    return { dev, type: o.type, firstVfOffset, vfStride, numVfs, mtu, queuePairs, maxQueuePairs, macPrefix, ...(uplink ? { uplink } : {}) };
  });
  return { pfs };
}

/** Reads and validates a config file; without a path, the embedded default. */
export function loadConfig(file?: string): VhostdConfig {
  if (!file) return parseConfig(JSON.parse(JSON.stringify(DEFAULT_CONFIG)), "default config");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError(`${file}: cannot read: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return parseConfig(raw, file);
}
