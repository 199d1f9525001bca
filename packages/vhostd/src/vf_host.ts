// The seam between the device registry (PF/VF bookkeeping, RPC rules) and whatever runs a
// VF's vhost-user session and datapath. The registry decides; the host executes.

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
  queuePairs: number;
}

/** What the host reports about a live VF (merged into `vf -i` and `state`). */
export interface VfRuntime {
  /** "waiting" | "connecting" | "negotiating" | "running" | "stopped" | "failed" */
  state: string;
  connected: boolean;
  features: string;
  protocolFeatures: string;
  reconnects: number;
  queues: Array<{ index: number; size: number; enabled: boolean; started: boolean; lastAvailIdx: number }>;
  lastError?: string;
}

export interface VfHost {
  /** Start serving the VF; throws (with .errno/.errstr when known) if it cannot. */
  open(vf: VfSpec): void;
  /** Tear the VF's session down and release its datapath. */
  close(dev: string): Promise<void>;
  runtime(dev: string): VfRuntime | undefined;
  /** PF lifecycle for net PFs (the L2 switch); no-ops for blk. */
  addPf(pf: string, switchId: number, kind: VfKind): void;
  removePf(pf: string, switchId: number, kind: VfKind): void;
  /** Stop everything (daemon shutdown). */
  shutdown(): Promise<void>;
}
