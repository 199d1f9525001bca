// The device records both daemons exchange: the VF spec a VfHost opens, and the entries of the
// sync channel's "devices" table (pf/<DEV>, vf/<DEV>) vhostd writes and the keeper replays.
// Kept together so that one schema can replace them (packages/proto).
import type { DiskSpec } from "@vhostd/proto";

export type VfKind = "net" | "blk";
export type SocketMode = "client" | "server";

/** Everything needed to bring one VF's vhost-user endpoint up. */
export interface VfSpec {
  /** VF address, e.g. "0000:af:04.5". */
  dev: string;
  /** Its PF, e.g. "0000:af:00.2". */
  pf: string;
  kind: VfKind;
  /** Small integer unique among live VFs (engine device id). */
  devId: number;
  /** Engine switch id of the PF (net), one per PF. */
  switchId: number;
  /** The vhost-user unix socket. */
  socketPath: string;
  /** client: we connect to the front-end's socket (default); server: we listen on it. */
  mode: SocketMode;
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

/** Port security of a net VF spec, defaults filled in. */
export function portSecurityOf(spec: VfSpec): { spoofchk: boolean; trust: boolean; macAdmin: boolean } {
  return { spoofchk: spec.spoofchk ?? true, trust: spec.trust ?? false, macAdmin: spec.macAdmin ?? false };
}

/** The non-default port security fields only (records stay as before for a default VF). */
export function portSecurityFields(s: { spoofchk?: boolean; trust?: boolean; macAdmin?: boolean }): { spoofchk?: false; trust?: true; macAdmin?: true } {
  return { ...(s.spoofchk === false ? { spoofchk: false as const } : {}), ...(s.trust ? { trust: true as const } : {}), ...(s.macAdmin ? { macAdmin: true as const } : {}) };
}

/** Value of devices["pf/<DEV>"]. */
export interface PfDeviceValue {
  pf: string;
  switchId: number;
  kind: VfKind;
  uplinkTap?: string;
}

export function pfKey(dev: string): string {
  return `pf/${dev}`;
}
export function vfKey(dev: string): string {
  return `vf/${dev}`;
}

/** A VfSpec as the sync channel carries it (no undefined fields). */
export function vfValue(s: VfSpec): Record<string, unknown> {
  return {
    dev: s.dev,
    pf: s.pf,
    kind: s.kind,
    devId: s.devId,
    switchId: s.switchId,
    socketPath: s.socketPath,
    mode: s.mode,
    ...(s.uuid ? { uuid: s.uuid } : {}),
    mac: s.mac,
    mtu: s.mtu,
    queuePairs: s.queuePairs,
    ...(s.disk ? { disk: { path: s.disk.path, size: s.disk.size, readonly: s.disk.readonly, direct: s.disk.direct } } : {}),
    ...portSecurityFields(s),
  };
}

export function pfValue(pf: string, switchId: number, kind: VfKind, uplinkTap?: string): PfDeviceValue {
  return { pf, switchId, kind, ...(uplinkTap ? { uplinkTap } : {}) };
}

