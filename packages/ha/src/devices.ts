// The "devices" table as the keeper reads it: pf/<DEV> and vf/<DEV> entries, validated field
// by field (whatever arrives on the sync socket or sits in the replica journal is untrusted).
import { MTU_MAX, MTU_MIN, QUEUE_PAIRS_MAX, diskSpecProblem, isUuid, normalizeMac, normalizePciAddr, socketPathProblem, type DiskSpec } from "@vhostd/proto";
import { portSecurityFields, type PfDeviceValue, type VfSpec } from "@vhostd/runtime";

export type DeviceEntry = { kind: "pf"; dev: string; value: PfDeviceValue } | { kind: "vf"; dev: string; value: VfSpec };

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

function isObj(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

function exact(key: string, v: unknown, required: string[], optional: string[] = []): Record<string, unknown> {
  if (!isObj(v)) throw new Error(`${key}: value is not a map`);
  for (const k of required) if (!Object.hasOwn(v, k)) throw new Error(`${key}: field ${k} missing`);
  for (const k of Object.keys(v)) if (!required.includes(k) && !optional.includes(k)) throw new Error(`${key}: unknown field "${k.slice(0, 32)}"`);
  return v;
}

function int(key: string, o: Record<string, unknown>, f: string, lo: number, hi: number): number {
  const v = o[f];
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) throw new Error(`${key}: ${f} must be an integer in ${lo}..${hi}`);
  return v;
}

function pci(key: string, o: Record<string, unknown>, f: string): string {
  const v = o[f];
  const n = typeof v === "string" ? normalizePciAddr(v) : undefined;
  if (!n || n !== v) throw new Error(`${key}: ${f} is not a canonical PCI address`);
  return n;
}

/** Validates one devices-table entry; throws an Error naming the key and the defect. */
export function parseDeviceEntry(key: string, value: unknown): DeviceEntry {
  if (key.startsWith("pf/")) {
    const o = exact(key, value, ["pf", "switchId", "kind"], ["uplinkTap"]);
    const pf = pci(key, o, "pf");
    if (key !== `pf/${pf}`) throw new Error(`${key}: holds PF ${pf}`);
    if (o.kind !== "net" && o.kind !== "blk") throw new Error(`${key}: kind must be "net" or "blk"`);
    let uplinkTap: string | undefined;
    if (o.uplinkTap !== undefined) {
      if (typeof o.uplinkTap !== "string" || !IFNAME.test(o.uplinkTap)) throw new Error(`${key}: uplinkTap is not an interface name`);
      uplinkTap = o.uplinkTap;
    }
    return { kind: "pf", dev: pf, value: { pf, switchId: int(key, o, "switchId", 0, 0xffff), kind: o.kind, ...(uplinkTap ? { uplinkTap } : {}) } };
  }
  if (key.startsWith("vf/")) {
    const o = exact(key, value, ["dev", "pf", "kind", "devId", "switchId", "socketPath", "mode", "mac", "mtu", "queuePairs"], ["uuid", "disk", "spoofchk", "trust", "macAdmin"]);
    const dev = pci(key, o, "dev");
    if (key !== `vf/${dev}`) throw new Error(`${key}: holds VF ${dev}`);
    const pf = pci(key, o, "pf");
    if (o.kind !== "net" && o.kind !== "blk") throw new Error(`${key}: kind must be "net" or "blk"`);
    const sp = o.socketPath;
    const problem = typeof sp === "string" ? socketPathProblem(sp) : "not a string";
    if (problem) throw new Error(`${key}: socketPath: ${problem}`);
    if (o.mode !== "client" && o.mode !== "server") throw new Error(`${key}: mode must be "client" or "server"`);
    const mac = typeof o.mac === "string" ? normalizeMac(o.mac) : undefined;
    if (!mac || mac !== o.mac) throw new Error(`${key}: mac is not a canonical unicast MAC`);
    let uuid: string | undefined;
    if (o.uuid !== undefined) {
      if (typeof o.uuid !== "string" || !isUuid(o.uuid)) throw new Error(`${key}: uuid is not a UUID`);
      uuid = o.uuid;
    }
    // A blk VF opens (and a keeper restore reopens) the backing this names: same checks as vhostd's.
    let disk: DiskSpec | undefined;
    if (o.disk !== undefined) {
      const problem = diskSpecProblem(o.disk);
      if (problem) throw new Error(`${key}: ${problem}`);
      const d = o.disk as DiskSpec;
      disk = { path: d.path, size: d.size, readonly: d.readonly, direct: d.direct };
    }
    if ((o.kind === "blk") !== (disk !== undefined)) throw new Error(`${key}: ${o.kind === "blk" ? "a blk VF needs a disk" : "only blk VFs have a disk"}`);
    // Port security (absent: the defaults, as in records from before these fields).
    for (const f of ["spoofchk", "trust", "macAdmin"] as const) {
      if (o[f] === undefined) continue;
      if (typeof o[f] !== "boolean") throw new Error(`${key}: ${f} must be a boolean`);
      if (o.kind !== "net") throw new Error(`${key}: ${f} applies to net VFs only`);
    }
    return {
      kind: "vf",
      dev,
      value: {
        dev,
        pf,
        kind: o.kind,
        devId: int(key, o, "devId", 0, 0xffff),
        switchId: int(key, o, "switchId", 0, 0xffff),
        socketPath: sp as string,
        mode: o.mode,
        ...(uuid ? { uuid } : {}),
        mac,
        mtu: int(key, o, "mtu", MTU_MIN, MTU_MAX),
        queuePairs: int(key, o, "queuePairs", 1, QUEUE_PAIRS_MAX),
        ...(disk ? { disk } : {}),
        ...portSecurityFields(o as { spoofchk?: boolean; trust?: boolean; macAdmin?: boolean }),
      },
    };
  }
  throw new Error(`${key.slice(0, 64)}: not a pf/ or vf/ key`);
}

/** Same content, whatever the key order (the keeper's "is this already running?" test). */
export function sameValue(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isObj(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  return JSON.stringify(v) ?? "undefined";
}
