// The PF/VF registry: applies vfe-vhostd's rules, allocates devId/switchId/MAC, keeps the
// books, and asks a VfHost to execute (open/close sessions). Every refusal is a VfeError
// carrying the vfe errno; every change is one log line and one "change" event.
import { EventEmitter } from "node:events";
import type { Logger } from "pino";
import {
  LinuxErrno,
  MTU_MAX,
  MTU_MIN,
  QUEUE_PAIRS_MAX,
  VfeErr,
  VfeError,
  VhostdErr,
  isUuid,
  normalizeMac,
  normalizePciAddr,
  socketPathProblem,
} from "@vhostd/proto";
import type { Inventory, PfInfo } from "./inventory.js";
import type { SocketMode, VfHost, VfRuntime, VfSpec } from "./vf_host.js";

/** Most VFs alive at once (vfe: MAX_VDPA_SAMPLE_PORTS). */
export const MAX_LIVE_VFS = 2048;

export interface RegistryOptions {
  inventory: Inventory;
  host: VfHost;
  log: Logger;
  /** Mode of VFs added without one (vfe-vhostd --server: "server"). */
  defaultMode: SocketMode;
  /** Default socket of a VF added without one: `${iface}${dev}`. */
  iface: string;
  /** Paths no VF may use (the RPC socket, ...). */
  reservedPaths?: string[];
}

export interface PfEntry {
  info: PfInfo;
  switchId: number;
  /** VF addresses added under this PF. */
  vfs: Set<string>;
}

/** What `vf -a` asks for; strings as given (the registry validates again). */
export interface AddVfRequest {
  vfdev: string;
  socket_file?: string;
  uuid?: string;
  mode?: SocketMode;
  queue_pairs?: number;
  mac?: string;
  mtu?: number;
}

export type RegistryEvent =
  | { op: "pf_added"; pf: string; switchId: number }
  | { op: "pf_removed"; pf: string; switchId: number }
  | { op: "vf_added"; spec: VfSpec }
  | { op: "vf_removed"; spec: VfSpec };

const einval = (detail: string) => new VfeError(LinuxErrno.EINVAL, detail);

function canonical(dev: unknown, what: string): string {
  if (typeof dev !== "string" || dev.length === 0) throw new VfeError(what === "PF" ? VfeErr.NO_PF_NAME : VfeErr.NO_VF_NAME);
  const n = normalizePciAddr(dev);
  if (!n) throw einval(`"${dev.slice(0, 64)}" is not a PCI address (domain:bus:slot.func)`);
  return n;
}

export class Registry extends EventEmitter {
  private readonly pfs = new Map<string, PfEntry>();
  private readonly vfs = new Map<string, VfSpec>();
  private readonly sockets = new Map<string, string>(); // socket path -> VF
  private readonly inv: Inventory;
  private readonly host: VfHost;
  private readonly log: Logger;
  private readonly reserved: Set<string>;
  private lock: Promise<unknown> = Promise.resolve();
  private closing = false;

  constructor(private readonly opts: RegistryOptions) {
    super();
    this.inv = opts.inventory;
    this.host = opts.host;
    this.log = opts.log;
    this.reserved = new Set(opts.reservedPaths ?? []);
  }

  /** Runs `fn` after every earlier change finished (changes never interleave). */
  private serial<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.lock.then(() => {
      if (this.closing) throw new VfeError(VhostdErr.SHUTTING_DOWN);
      return fn();
    });
    this.lock = run.catch(() => undefined);
    return run;
  }

  /* ---------------------------------- PFs ----------------------------------------- */

  addPf(dev: string): Promise<PfEntry> {
    return this.serial(() => {
      const pf = canonical(dev, "PF");
      if (this.pfs.has(pf)) throw new VfeError(VfeErr.ADD_PF_ALREADY_ADD, `${pf} is already added`);
      const info = this.inv.pf(pf);
      if (!info) {
        const vf = this.inv.vf(pf);
        throw new VfeError(LinuxErrno.ENODEV, vf ? `${pf} is VF ${vf.index} of PF ${vf.pf.dev}, not a PF` : `${pf} is not a PF in the inventory`);
      }
      const switchId = this.lowestFree(new Set([...this.pfs.values()].map((p) => p.switchId)));
      try {
        this.host.addPf(pf, switchId, info.type, info.uplink?.tap);
      } catch (e) {
        throw this.hostError(e, VfeErr.DEVICE_PROBE_FAIL);
      }
      const entry: PfEntry = { info, switchId, vfs: new Set() };
      this.pfs.set(pf, entry);
      this.log.info({ event: "pf_added", pf, type: info.type, switchId }, `PF ${pf} added`);
      this.emit("change", { op: "pf_added", pf, switchId } satisfies RegistryEvent);
      return entry;
    });
  }

  removePf(dev: string): Promise<void> {
    return this.serial(() => {
      const pf = canonical(dev, "PF");
      const entry = this.pfs.get(pf);
      if (!entry) throw new VfeError(VfeErr.NO_PF_DEVICE, `${pf} is not added`);
      if (entry.vfs.size > 0) {
        throw new VfeError(VfeErr.REMOVE_PF_WITH_VF, `${pf} has ${entry.vfs.size} VF(s): ${[...entry.vfs].slice(0, 8).join(", ")}`);
      }
      try {
        this.host.removePf(pf, entry.switchId, entry.info.type);
      } catch (e) {
        this.log.warn({ pf, err: (e as Error).message }, "host removePf failed; PF removed anyway");
      }
      this.pfs.delete(pf);
      this.log.info({ event: "pf_removed", pf, switchId: entry.switchId }, `PF ${pf} removed`);
      this.emit("change", { op: "pf_removed", pf, switchId: entry.switchId } satisfies RegistryEvent);
    });
  }

  /** Added PFs in the order they were added; with `dev`, just that one (or -1001). */
  listPfs(dev?: string): PfEntry[] {
    if (dev === undefined) return [...this.pfs.values()];
    const pf = canonical(dev, "PF");
    const entry = this.pfs.get(pf);
    if (!entry) throw new VfeError(VfeErr.NO_PF_DEVICE, `${pf} is not added`);
    return [entry];
  }

  /* ---------------------------------- VFs ----------------------------------------- */

  addVf(req: AddVfRequest): Promise<VfSpec> {
    return this.serial(() => {
      const dev = canonical(req.vfdev, "VF");
      const where = this.inv.vf(dev);
      if (!where) {
        if (this.inv.pf(dev)) throw new VfeError(LinuxErrno.ENODEV, `${dev} is a PF; add it with mgmtpf -a`);
        throw new VfeError(LinuxErrno.ENODEV, `${dev} is not a VF of any PF in the inventory`);
      }
      const pf = this.pfs.get(where.pf.dev);
      if (!pf) throw new VfeError(VfeErr.NO_PF_DEVICE, `PF ${where.pf.dev} of ${dev} is not added (mgmtpf -a ${where.pf.dev})`);
      if (this.vfs.has(dev)) throw new VfeError(VfeErr.ADD_VF_ALREADY_ADD, `${dev} is already added`);
      const info = pf.info;

      // Parameters.
      let socketPath = req.socket_file;
      if (socketPath === undefined || socketPath === null) {
        socketPath = `${this.opts.iface}${dev}`;
        const p = socketPathProblem(socketPath);
        if (p) throw new VfeError(VfeErr.ADD_VF_NO_ACCESS_SOCKET_PATH, `default socket ${socketPath}: ${p}`);
      } else {
        if (typeof socketPath !== "string") throw einval("socket_file: must be a string");
        const p = socketPathProblem(socketPath);
        if (p) throw einval(`socket_file: ${p}`);
      }
      const owner = this.sockets.get(socketPath);
      if (owner) throw new VfeError(VfeErr.ADD_VF_VHOST_SOCK_EXIST, `${socketPath} is used by VF ${owner}`);
      if (this.reserved.has(socketPath)) throw new VfeError(VfeErr.ADD_VF_VHOST_SOCK_EXIST, `${socketPath} is reserved by vfe-vhostd`);

      let uuid: string | undefined;
      if (req.uuid !== undefined && req.uuid !== null) {
        if (typeof req.uuid !== "string" || !isUuid(req.uuid)) throw einval("uuid: must be a UUID (8-4-4-4-12 hex digits)");
        uuid = req.uuid.toLowerCase();
      }
      const mode = req.mode ?? this.opts.defaultMode;
      if (mode !== "client" && mode !== "server") throw einval('mode: must be "client" or "server"');

      const queuePairs = req.queue_pairs ?? info.queuePairs;
      if (!Number.isInteger(queuePairs) || queuePairs < 1 || queuePairs > QUEUE_PAIRS_MAX) throw einval(`queue_pairs: must be in 1..${QUEUE_PAIRS_MAX}`);
      if (queuePairs > info.maxQueuePairs) {
        throw new VfeError(VfeErr.EXCEED_LIMIT, `queue_pairs ${queuePairs} exceeds PF ${info.dev}'s limit ${info.maxQueuePairs}`);
      }
      if (info.type === "blk" && (req.mac !== undefined || req.mtu !== undefined)) throw einval("mac and mtu apply to net VFs only");
      let mac = this.inv.defaultMac(dev);
      if (req.mac !== undefined) {
        const m = typeof req.mac === "string" ? normalizeMac(req.mac) : undefined;
        if (!m) throw einval("mac: must be a unicast, non-zero MAC address xx:xx:xx:xx:xx:xx");
        mac = m;
      }
      if (info.type === "net") {
        for (const other of this.vfs.values()) {
          if (other.kind === "net" && other.mac === mac) throw new VfeError(LinuxErrno.EEXIST, `MAC ${mac} is used by VF ${other.dev}`);
        }
      }
      const mtu = req.mtu ?? info.mtu;
      if (!Number.isInteger(mtu) || mtu < MTU_MIN || mtu > MTU_MAX) throw einval(`mtu: must be in ${MTU_MIN}..${MTU_MAX}`);

      if (this.vfs.size >= MAX_LIVE_VFS) throw new VfeError(VfeErr.ADD_VF_EXCEED_VPORT_LIMIT, `at most ${MAX_LIVE_VFS} VFs`);
      const devId = this.lowestFree(new Set([...this.vfs.values()].map((v) => v.devId)));

      const spec: VfSpec = {
        dev,
        pf: info.dev,
        kind: info.type,
        devId,
        switchId: pf.switchId,
        socketPath,
        mode,
        ...(uuid ? { uuid } : {}),
        mac,
        mtu,
        queuePairs,
      };
      try {
        this.host.open(spec);
      } catch (e) {
        this.log.warn({ vf: dev, socket: socketPath, err: (e as Error).message }, `VF ${dev} could not be opened`);
        throw this.hostError(e, VhostdErr.SESSION_START);
      }
      this.vfs.set(dev, spec);
      this.sockets.set(socketPath, dev);
      pf.vfs.add(dev);
      this.log.info(
        { event: "vf_added", vf: dev, pf: info.dev, socket: socketPath, mode, devId, switchId: pf.switchId, mac, mtu, queuePairs, uuid },
        `VF ${dev} added on ${socketPath} (${mode})`,
      );
      this.emit("change", { op: "vf_added", spec } satisfies RegistryEvent);
      return spec;
    });
  }

  removeVf(vfdev: string): Promise<void> {
    return this.serial(async () => {
      const dev = canonical(vfdev, "VF");
      const spec = this.vfs.get(dev);
      if (!spec) throw new VfeError(VfeErr.NO_VF_DEVICE, `${dev} is not added`);
      try {
        await this.host.close(dev);
      } catch (e) {
        this.log.warn({ vf: dev, socket: spec.socketPath, err: (e as Error).message }, "host close failed; VF removed anyway");
      }
      this.vfs.delete(dev);
      this.sockets.delete(spec.socketPath);
      this.pfs.get(spec.pf)?.vfs.delete(dev);
      this.log.info({ event: "vf_removed", vf: dev, pf: spec.pf, socket: spec.socketPath, devId: spec.devId }, `VF ${dev} removed from ${spec.socketPath}`);
      this.emit("change", { op: "vf_removed", spec } satisfies RegistryEvent);
    });
  }

  /** VFs of an added PF, by VF index. */
  listVfs(pfdev: string): VfSpec[] {
    const pf = canonical(pfdev, "PF");
    const entry = this.pfs.get(pf);
    if (!entry) {
      if (this.inv.vf(pf)) throw new VfeError(VfeErr.NO_PF_DEVICE, `${pf} is a VF, not a PF`);
      throw new VfeError(VfeErr.NO_PF_DEVICE, `${pf} is not added`);
    }
    return [...entry.vfs]
      .map((d) => this.vfs.get(d)!)
      .sort((a, b) => this.inv.vf(a.dev)!.index - this.inv.vf(b.dev)!.index);
  }

  getVf(vfdev: string): VfSpec {
    const dev = canonical(vfdev, "VF");
    const spec = this.vfs.get(dev);
    if (!spec) throw new VfeError(VfeErr.NO_VF_DEVICE, `${dev} is not added`);
    return spec;
  }

  runtime(dev: string): VfRuntime | undefined {
    try {
      return this.host.runtime(dev);
    } catch {
      return undefined;
    }
  }

  allVfs(): VfSpec[] {
    return [...this.vfs.values()];
  }

  /** Closes every session (daemon shutdown); further changes are refused. */
  async shutdown(): Promise<void> {
    await this.lock;
    this.closing = true;
    this.log.info({ event: "shutdown", vfs: this.vfs.size, pfs: this.pfs.size }, "registry shutting down");
    await this.host.shutdown();
  }

  /* -------------------------------- helpers --------------------------------------- */

  private lowestFree(used: Set<number>): number {
    let i = 0;
    while (used.has(i)) i++;
    return i;
  }

  private hostError(e: unknown, fallback: number): VfeError {
    if (e instanceof VfeError) return e;
    const err = e as { errno?: unknown; message?: string };
    const msg = err?.message ?? String(e);
    if (typeof err?.errno === "number" && err.errno !== 0) return new VfeError(Math.abs(err.errno), msg);
    return new VfeError(fallback, msg);
  }
}
