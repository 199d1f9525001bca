// The PF and VF records: what a device is, as every process and disk carries it. One type and
// one validator each, used by every reader: vfe-vhostd's registry (what it writes) and journal
// (what it reads back at start), the keeper's replica journal and the sync deltas (the
// "devices" table), and the session mirror (its frames name devices and switches).
//
// Two spellings on the wire, one set of rules:
//   - the sync form (sync deltas and snapshots, the keeper's replica): VfRecord and PfRecord
//     exactly as below, keyed vf/<DEV> and pf/<DEV>;
//   - the journal form (vfe-vhostd's journal, whose format predates this file and must keep
//     loading): a VF without kind and switchId (they are its PF's), a PF as {dev, type, switchId}.
// Every refusal is a DeviceRecordError: errno -EINVAL and one sentence naming the field, the
// same sentence from whichever reader met the record.
//
// The rules (the union of what the readers used to check apart):
//   - addresses are canonical PCI addresses (lowercase, 4-digit domain), as normalizePciAddr;
//   - a UUID is stored lowercase (the RPC accepts any case and lowers it, as vfe's CLI does);
//   - a MAC is canonical (lowercase) unicast and non-zero;
//   - a blk VF has a disk and a net VF none; port security fields belong to net VFs;
//   - exactly the known fields: an unknown one is a newer writer, not something to drop.
import { LinuxErrno, VfeError } from "./errors.js";
import { MTU_MAX, MTU_MIN, QUEUE_PAIRS_MAX, diskSpecProblem, isUuid, normalizeMac, normalizePciAddr, socketPathProblem, type DiskSpec } from "./values.js";
import type { DeviceKind } from "./virtio.js";

export type SocketMode = "client" | "server";

/** One VF: everything needed to bring its vhost-user endpoint up, and to bring it back. */
export interface VfRecord {
  /** VF address, e.g. "0000:af:04.5". */
  dev: string;
  /** Its PF, e.g. "0000:af:00.2". */
  pf: string;
  kind: DeviceKind;
  /** Small integer unique among live VFs (engine device id). */
  devId: number;
  /** Engine switch id of the PF (net), one per PF. */
  switchId: number;
  /** The vhost-user unix socket. */
  socketPath: string;
  /** client: we connect to the front-end's socket (default); server: we listen on it. */
  mode: SocketMode;
  /** Lowercase. */
  uuid?: string;
  mac: string;
  mtu: number;
  /** Queue pairs (net) or request queues (blk). */
  queuePairs: number;
  /** blk: the backing (required for blk, absent for net). */
  disk?: DiskSpec;
  /**
   * net port security (docs/operations.md "Port security"). Absent = the default, so records
   * from before these fields (journal, keeper replica, sync) load unchanged:
   * spoofchk true, trust false, macAdmin false.
   */
  spoofchk?: boolean;
  trust?: boolean;
  /** The MAC was set by the operator (vf -a --mac): the port is locked to it from the start. */
  macAdmin?: boolean;
}

/** A VF as vfe-vhostd's journal stores it: its kind and switchId are its PF's, not repeated. */
export type StoredVfRecord = Omit<VfRecord, "kind" | "switchId">;

/** One PF as the sync channel carries it (devices["pf/<DEV>"]). */
export interface PfRecord {
  pf: string;
  switchId: number;
  kind: DeviceKind;
  /** net: the TAP interface its switch uplinks to. */
  uplinkTap?: string;
}

/** A PF as vfe-vhostd's journal stores it (the uplink comes from the inventory). */
export interface StoredPfRecord {
  dev: string;
  type: DeviceKind;
  switchId: number;
}

/** A record refused by its validator: errno -EINVAL; `problem` is the sentence every reader gives. */
export class DeviceRecordError extends VfeError {
  constructor(readonly problem: string) {
    super(LinuxErrno.EINVAL, problem);
    this.name = "DeviceRecordError";
  }
}

const refuse = (problem: string): never => {
  throw new DeviceRecordError(problem);
};

/* -------------------------------------------------------------------- field checks */

type Raw = Record<string, unknown>;

function isPlainMap(v: unknown): v is Raw {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

/** The record as a map with exactly `required` (+ `optional`) fields. */
function recordMap(v: unknown, required: readonly string[], optional: readonly string[]): Raw {
  if (!isPlainMap(v)) return refuse("record is not a msgpack map");
  for (const k of required) if (!Object.hasOwn(v, k)) refuse(`field ${k} missing`);
  for (const k of Object.keys(v)) if (!required.includes(k) && !optional.includes(k)) refuse(`unknown field "${k.slice(0, 32)}"`);
  return v;
}

/** Why `v` is not a canonical PCI address (undefined if it is). */
export function pciAddrProblem(field: string, v: unknown): string | undefined {
  const n = typeof v === "string" ? normalizePciAddr(v) : undefined;
  return !n || n !== v ? `${field} is not a canonical PCI address` : undefined;
}

/** Why `v` is not a canonical unicast MAC (undefined if it is). */
export function macProblem(field: string, v: unknown): string | undefined {
  const m = typeof v === "string" ? normalizeMac(v) : undefined;
  return !m || m !== v ? `${field} is not a canonical unicast MAC` : undefined;
}

/** Why `v` is not an integer in lo..hi (undefined if it is). */
export function intProblem(field: string, v: unknown, lo: number, hi: number): string | undefined {
  return typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi ? `${field} must be an integer in ${lo}..${hi}` : undefined;
}

export const SWITCH_ID_MAX = 0xffff;
export const DEV_ID_MAX = 0xffff;

function pci(o: Raw, field: string): string {
  const p = pciAddrProblem(field, o[field]);
  return p ? refuse(p) : (o[field] as string);
}

function int(o: Raw, field: string, lo: number, hi: number): number {
  const p = intProblem(field, o[field], lo, hi);
  return p ? refuse(p) : (o[field] as number);
}

function kindField(o: Raw, field: string): DeviceKind {
  const k = o[field];
  return k === "net" || k === "blk" ? k : refuse(`${field} must be "net" or "blk"`);
}

/** A record under `key` must describe the device the key names. */
function keyNames(key: string | undefined, prefix: "pf/" | "vf/", dev: string): void {
  if (key !== undefined && key !== prefix + dev) refuse(`holds ${prefix === "pf/" ? "PF" : "VF"} ${dev}, not the ${prefix === "pf/" ? "PF" : "VF"} its key names`);
}

/* ------------------------------------------------------------------------------- VF */

const VF_REQUIRED = ["dev", "pf", "kind", "devId", "switchId", "socketPath", "mode", "mac", "mtu", "queuePairs"] as const;
const VF_OPTIONAL = ["uuid", "disk", "spoofchk", "trust", "macAdmin"] as const;
const PORT_SECURITY = ["spoofchk", "trust", "macAdmin"] as const;

/**
 * The one VF check. `stored`: the journal form, without kind and switchId (a record with a disk
 * is then a blk VF's, one without a net VF's; the registry checks that against its PF).
 */
function checkVf(v: unknown, stored: boolean, key: string | undefined): VfRecord {
  const required = stored ? VF_REQUIRED.filter((f) => f !== "kind" && f !== "switchId") : VF_REQUIRED;
  const o = recordMap(v, required, VF_OPTIONAL);
  const dev = pci(o, "dev");
  keyNames(key, "vf/", dev);
  const pf = pci(o, "pf");
  const kind = stored ? (o.disk !== undefined ? "blk" : "net") : kindField(o, "kind");
  const devId = int(o, "devId", 0, DEV_ID_MAX);
  const switchId = stored ? 0 : int(o, "switchId", 0, SWITCH_ID_MAX);
  const sp = o.socketPath;
  const spProblem = typeof sp === "string" ? socketPathProblem(sp) : "not a string";
  if (spProblem) refuse(`socketPath: ${spProblem}`);
  if (o.mode !== "client" && o.mode !== "server") refuse('mode must be "client" or "server"');
  if (o.uuid !== undefined && (typeof o.uuid !== "string" || !isUuid(o.uuid) || o.uuid !== o.uuid.toLowerCase())) refuse("uuid is not a lowercase UUID");
  const macP = macProblem("mac", o.mac);
  if (macP) refuse(macP);
  const mtu = int(o, "mtu", MTU_MIN, MTU_MAX);
  const queuePairs = int(o, "queuePairs", 1, QUEUE_PAIRS_MAX);
  if (o.disk !== undefined) {
    const p = diskSpecProblem(o.disk);
    if (p) refuse(p);
  }
  if ((kind === "blk") !== (o.disk !== undefined)) refuse(kind === "blk" ? "a blk VF needs a disk" : "only blk VFs have a disk");
  for (const f of PORT_SECURITY) {
    if (o[f] === undefined) continue;
    if (typeof o[f] !== "boolean") refuse(`${f} must be a boolean`);
    if (kind !== "net") refuse(`${f} applies to net VFs only`);
  }
  return {
    dev,
    pf,
    kind,
    devId,
    switchId,
    socketPath: sp as string,
    mode: o.mode as SocketMode,
    ...(o.uuid !== undefined ? { uuid: o.uuid as string } : {}),
    mac: o.mac as string,
    mtu,
    queuePairs,
    ...(o.disk !== undefined ? { disk: copyDisk(o.disk as DiskSpec) } : {}),
    ...portSecurityFields(o as Pick<VfRecord, "spoofchk" | "trust" | "macAdmin">),
  };
}

/** Validates a VF record (sync form); `key` (vf/<DEV>) must name it. Throws DeviceRecordError. */
export function validateVfRecord(v: unknown, key?: string): VfRecord {
  return checkVf(v, false, key);
}

/** Validates a VF in the journal form (no kind, no switchId); same rules, same errors. */
export function validateStoredVfRecord(v: unknown, key?: string): StoredVfRecord {
  const { kind: _kind, switchId: _switchId, ...rest } = checkVf(v, true, key);
  return storedVfRecordValue(rest); // the journal's field order (journal dump shows it)
}

// Field order of each form: the journal's is older and kept, so `journal dump` stays the same.
const WIRE_FIELDS = ["dev", "pf", "kind", "devId", "switchId", "socketPath", "mode", "uuid", "mac", "mtu", "queuePairs", "disk"] as const;
const STORED_FIELDS = ["dev", "pf", "socketPath", "mode", "uuid", "mac", "mtu", "queuePairs", "devId", "disk"] as const;

/** `fields` of r in that order (an empty uuid and undefined ones left out, disk copied), then the non-default port security. */
function orderedRecord<T extends StoredVfRecord>(r: T, fields: readonly string[]): T {
  const out: Record<string, unknown> = {};
  const src = r as unknown as Record<string, unknown>;
  for (const f of fields) {
    const v = src[f];
    if (v === undefined || (f === "uuid" && !v)) continue;
    out[f] = f === "disk" ? copyDisk(v as DiskSpec) : v;
  }
  return { ...out, ...portSecurityFields(r) } as T;
}

/** A VF record as it goes on the wire (exact fields, no undefined ones, fixed order). */
export function vfRecordValue(r: VfRecord): VfRecord {
  return orderedRecord(r, WIRE_FIELDS);
}

/** The journal form of a VF (exact fields, fixed order). */
export function storedVfRecordValue(r: StoredVfRecord): StoredVfRecord {
  return orderedRecord(r, STORED_FIELDS);
}

/** Exactly the DiskSpec fields, in a fixed order. */
export function copyDisk(d: DiskSpec): DiskSpec {
  return { path: d.path, size: d.size, readonly: d.readonly, direct: d.direct };
}

/** Port security of a net VF, defaults filled in. */
export function portSecurityOf(r: Pick<VfRecord, "spoofchk" | "trust" | "macAdmin">): { spoofchk: boolean; trust: boolean; macAdmin: boolean } {
  return { spoofchk: r.spoofchk ?? true, trust: r.trust ?? false, macAdmin: r.macAdmin ?? false };
}

/** The non-default port security fields only (records stay as before for a default VF). */
export function portSecurityFields(s: { spoofchk?: boolean; trust?: boolean; macAdmin?: boolean }): { spoofchk?: false; trust?: true; macAdmin?: true } {
  return { ...(s.spoofchk === false ? { spoofchk: false as const } : {}), ...(s.trust ? { trust: true as const } : {}), ...(s.macAdmin ? { macAdmin: true as const } : {}) };
}

/* ------------------------------------------------------------------------------- PF */

/** A network interface name (IFNAMSIZ 16 with the NUL). */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

/** Validates a PF record (sync form); `key` (pf/<DEV>) must name it. Throws DeviceRecordError. */
export function validatePfRecord(v: unknown, key?: string): PfRecord {
  const o = recordMap(v, ["pf", "switchId", "kind"], ["uplinkTap"]);
  const pf = pci(o, "pf");
  keyNames(key, "pf/", pf);
  const kind = kindField(o, "kind");
  const switchId = int(o, "switchId", 0, SWITCH_ID_MAX);
  if (o.uplinkTap !== undefined && (typeof o.uplinkTap !== "string" || !IFNAME.test(o.uplinkTap))) refuse("uplinkTap is not an interface name");
  return { pf, switchId, kind, ...(o.uplinkTap !== undefined ? { uplinkTap: o.uplinkTap as string } : {}) };
}

/** Validates a PF in the journal form ({dev, type, switchId}); same rules, same errors. */
export function validateStoredPfRecord(v: unknown, key?: string): StoredPfRecord {
  const o = recordMap(v, ["dev", "type", "switchId"], []);
  const dev = pci(o, "dev");
  keyNames(key, "pf/", dev);
  return { dev, type: kindField(o, "type"), switchId: int(o, "switchId", 0, SWITCH_ID_MAX) };
}

/** A PF record as it goes on the wire. */
export function pfRecordValue(pf: string, switchId: number, kind: DeviceKind, uplinkTap?: string): PfRecord {
  return { pf, switchId, kind, ...(uplinkTap ? { uplinkTap } : {}) };
}

/* ------------------------------------------------------------------ devices table */

/** One entry of the sync protocol's "devices" table. */
export type DeviceEntry = { kind: "pf"; dev: string; value: PfRecord } | { kind: "vf"; dev: string; value: VfRecord };

export function pfKey(dev: string): string {
  return `pf/${dev}`;
}
export function vfKey(dev: string): string {
  return `vf/${dev}`;
}

/** Validates one devices-table entry (a sync delta's put, a snapshot's or the replica's entry). */
export function parseDeviceEntry(key: string, value: unknown): DeviceEntry {
  if (key.startsWith("pf/")) {
    const v = validatePfRecord(value, key);
    return { kind: "pf", dev: v.pf, value: v };
  }
  if (key.startsWith("vf/")) {
    const v = validateVfRecord(value, key);
    return { kind: "vf", dev: v.dev, value: v };
  }
  return refuse("not a pf/ or vf/ key");
}

/** The device a devices-table key names, for a del (undefined: not a pf/ or vf/ key of a canonical address). */
export function deviceKeyOf(key: string): { kind: "pf" | "vf"; dev: string } | undefined {
  const m = /^(pf|vf)\/(.+)$/.exec(key);
  if (!m || pciAddrProblem("dev", m[2])) return undefined;
  return { kind: m[1] as "pf" | "vf", dev: m[2]! };
}
