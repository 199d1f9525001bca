// The seam between the device registry (PF/VF bookkeeping, RPC rules) and whatever runs a
// VF's vhost-user session and datapath. The registry decides; the host executes.
import type { DeviceKind, VfRecord } from "@vhostd/proto";

export { portSecurityFields, portSecurityOf, type SocketMode } from "@vhostd/proto";

/** Everything needed to bring one VF's vhost-user endpoint up: the VF record (@vhostd/proto). */
export type VfSpec = VfRecord;

/** One forwarding table entry of a PF's switch. */
export interface FdbRow {
  mac: string;
  /** Engine device id behind it, -1 for the uplink. */
  devId: number;
  ageMs: number;
  /** A port's own MAC (admin or locked). */
  pinned: boolean;
}

/** What the host reports about a live VF (merged into `vf -i` and `state`). */
export interface VfRuntime {
  /** "waiting" | "connecting" | "negotiating" | "running" | "stopped" | "failed" */
  state: string;
  connected: boolean;
  features: string;
  protocolFeatures: string;
  reconnects: number;
  /** blk: the cache mode the guest set (CONFIG_WCE; true write-back, false write-through). */
  writeback?: boolean;
  queues: VfQueueRuntime[];
  lastError?: string;
  /** The process running the session and its queues ("vfe-vhostd-ha", "vfe-vhostd"). */
  owner?: string;
  /** Guest memory the session maps (hex strings). */
  regions?: Array<{ guestAddr: string; size: string; userAddr: string; mmapOffset: string }>;
  /** net: the MAC the switch port is locked to ("" not yet). */
  lockedMac?: string;
}

/** One virtqueue as the session and the engine's shared counters see it. */
export interface VfQueueRuntime {
  index: number;
  size: number;
  enabled: boolean;
  started: boolean;
  lastAvailIdx: number;
  /** Ring addresses in the front-end's address space (hex), once SET_VRING_ADDR came. */
  desc?: string;
  avail?: string;
  used?: string;
  /** Frames the device took from (TX) or gave to (RX) the front-end. */
  packets: number;
  bytes: number;
  /** Frames lost at this queue (no RX buffer, queue stopped, offload not negotiated). */
  drops: number;
  kicks: number;
  calls: number;
  /** Descriptor chains rejected as malformed. */
  errors: number;
  /** net TX: frames dropped by port security; frames forwarded with their source unlearned. */
  spoofed?: number;
  unlearned?: number;
}

/**
 * Standalone, the host runs sessions in-process and answers at once; in HA mode it is a proxy
 * to the keeper, so every change may be asynchronous.
 */
export interface VfHost {
  /** Start serving the VF; throws (with .errno/.errstr when known) if it cannot. */
  open(vf: VfSpec): void | Promise<void>;
  /** Tear the VF's session down and release its datapath. */
  close(dev: string): Promise<void>;
  /** In HA mode the keeper runs the session, so the answer may come asynchronously. */
  runtime(dev: string): VfRuntime | undefined | Promise<VfRuntime | undefined>;
  /** PF lifecycle for net PFs (the L2 switch, and its TAP uplink if named); no-ops for blk. */
  addPf(pf: string, switchId: number, kind: DeviceKind, uplinkTap?: string): void | Promise<void>;
  removePf(pf: string, switchId: number, kind: DeviceKind): void | Promise<void>;
  /** A net PF's switch forwarding table (undefined: unknown, e.g. the keeper is restarting). */
  fdb?(switchId: number): FdbRow[] | undefined | Promise<FdbRow[] | undefined>;
  /** Stop everything (daemon shutdown). */
  shutdown(): Promise<void>;
}
