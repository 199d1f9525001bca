// The PF/VF registry: applies vfe-vhostd's rules, allocates devId/switchId/MAC, keeps the
// books, and asks a VfHost to execute (open/close sessions). Every refusal is a VfeError
// carrying the vfe errno; every change is one log line and one "change" event.
//
// Journal before acknowledging. With a journal, every change is durable in it before the
// promise resolves (and so before the RPC reply is sent). Changes are serialized, except that
// VF adds overlap each other: an add checks and reserves its devId, socket, MAC and disk in
// turn with every other change, then opens and journals while the next add is checked (each
// add waits on a round trip to the keeper and an fdatasync, mostly idle time). Every other
// change waits until no add is in flight. The order inside each change is chosen so that a
// kill -9 between any two steps leaves a journal that describes a consistent state (no VF
// without its PF; an add either fully there or not):
//
//   mgmtpf -a: validate -> host.addPf -> journal pf/ -> books -> reply
//              (journal fails: host.removePf, answer EIO; killed before the commit: the PF
//              was never acknowledged and does not come back)
//   vf -a:     validate -> host.open (session up) -> journal vf/ -> books -> reply
//              (journal fails: host.close, answer EIO). Opening first means a VF that cannot
//              be served is never journaled, so restore does not retry a known-bad config;
//              journaling before the books means `vf -l` never shows an unjournaled VF.
//   vf -r:     journal removal -> host.close -> books -> reply. Once the removal is
//              durable the VF never comes back, even if closing fails or we die before
//              replying (a retried `vf -r` then answers -1003, not found).
//   mgmtpf -r: check no VFs -> journal removal -> host.removePf -> books -> reply.
// The journal also enforces "no VF without PF" inside its own write transactions.
import { EventEmitter } from "node:events";
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import {
  LinuxErrno,
  MTU_MAX,
  MTU_MIN,
  QUEUE_PAIRS_MAX,
  DISK_NULL,
  DISK_SIZE_MAX,
  DISK_SIZE_MIN,
  diskPathProblem,
  errnoOf,
  VfeErr,
  VfeError,
  VhostdErr,
  isUuid,
  normalizeMac,
  normalizePciAddr,
  socketPathAliasProblem,
  socketPathProblem,
  DeviceRecordError,
  storedVfRecordValue,
  validateVfRecord,
} from "@vhostd/proto";
import { prepareDisk } from "./disk.js";
import type { Inventory, PfInfo } from "./inventory.js";
import { JournalConflictError, type JournalContents, type PfRecord, type VfRecord } from "./journal.js";
import { portSecurityFields, type FdbRow, type SocketMode, type VfHost, type VfRuntime, type VfSpec } from "@vhostd/runtime";

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
  /** Backing of a blk VF added without a disk: `${diskDir}/${dev}.raw` (none: --disk is required). */
  diskDir?: string;
  /** Where changes are made durable before they are acknowledged (none: in memory only). */
  journal?: RegistryJournal;
}

/** The part of the Journal the registry writes (tests substitute failing ones). */
export interface RegistryJournal {
  putPf(rec: PfRecord): Promise<void>;
  removePf(dev: string): Promise<void>;
  putVf(rec: VfRecord): Promise<void>;
  removeVf(dev: string): Promise<void>;
}

/** What restore() did: one entry per journal record it looked at. */
export interface RestoreReport {
  pfs: { restored: string[]; failed: Array<{ pf: string; reason: string }> };
  vfs: {
    /** Session open again. */
    restored: string[];
    /** Registered (shown by `vf -l` with state "failed"), but the session could not open. */
    failed: Array<{ vf: string; reason: string }>;
    /** Not registered at all (PF missing, conflicts with another record); kept in the journal. */
    skipped: Array<{ vf: string; reason: string }>;
  };
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
  /** blk: backing path or "null" (required for blk VFs). */
  disk?: string;
  disk_size?: number;
  readonly?: boolean;
  direct?: boolean;
  /** net port security (default on / off). */
  spoofchk?: boolean;
  trust?: boolean;
}

export type RegistryEvent =
  | { op: "pf_added"; pf: string; switchId: number }
  | { op: "pf_removed"; pf: string; switchId: number }
  | { op: "vf_added"; spec: VfSpec }
  | { op: "vf_removed"; spec: VfSpec };

const einval = (detail: string) => new VfeError(LinuxErrno.EINVAL, detail);

/** A failed journal write as the RPC answers it: EIO, with the journal's reason. */
function journalFailure(e: unknown): VfeError {
  if (e instanceof VfeError) return e;
  return new VfeError(LinuxErrno.EIO, `journal: ${(e as Error)?.message ?? String(e)}`);
}

/** The journal form of a VF (its kind and switchId are its PF's). */
function vfRecord(s: VfSpec): VfRecord {
  const { kind: _kind, switchId: _switchId, ...stored } = s;
  return storedVfRecordValue(stored);
}

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
  /** VF adds past their checks, opening and journaling: dev -> spec (its devId, socket, MAC, disk are taken). */
  private readonly adding = new Map<string, VfSpec>();
  private readonly addsInFlight = new Set<Promise<unknown>>();
  private closing = false;
  private readonly journal: RegistryJournal | undefined;
  /** VFs restored from the journal whose session could not be opened: dev -> why. */
  private readonly failed = new Map<string, string>();
  /** Journal records restore() could not register (dev -> why); `vf -r`/`mgmtpf -r` clear them. */
  private readonly unrestoredVfs = new Map<string, string>();
  private readonly unrestoredPfs = new Map<string, string>();

  constructor(private readonly opts: RegistryOptions) {
    super();
    this.inv = opts.inventory;
    this.host = opts.host;
    this.log = opts.log;
    this.reserved = new Set(opts.reservedPaths ?? []);
    this.journal = opts.journal;
  }

  /**
   * Runs `fn` after every earlier change finished, including every VF add in flight, so
   * changes never interleave. `addsMayRun`: only the earlier changes' serial parts (a VF
   * add's checks and reservation).
   */
  private serial<T>(fn: () => T | Promise<T>, addsMayRun = false): Promise<T> {
    const run = this.lock.then(async () => {
      if (!addsMayRun) await this.addsSettled();
      if (this.closing) throw new VfeError(VhostdErr.SHUTTING_DOWN);
      return fn();
    });
    this.lock = run.catch(() => undefined);
    return run;
  }

  private async addsSettled(): Promise<void> {
    while (this.addsInFlight.size > 0) await Promise.allSettled([...this.addsInFlight]);
  }

  /* ---------------------------------- PFs ----------------------------------------- */

  addPf(dev: string): Promise<PfEntry> {
    return this.serial(async () => {
      const pf = canonical(dev, "PF");
      if (this.pfs.has(pf)) throw new VfeError(VfeErr.ADD_PF_ALREADY_ADD, `${pf} is already added`);
      const info = this.inv.pf(pf);
      if (!info) {
        const vf = this.inv.vf(pf);
        throw new VfeError(LinuxErrno.ENODEV, vf ? `${pf} is VF ${vf.index} of PF ${vf.pf.dev}, not a PF` : `${pf} is not a PF in the inventory`);
      }
      const switchId = this.lowestFree(new Set([...this.pfs.values()].map((p) => p.switchId)));
      try {
        await this.host.addPf(pf, switchId, info.type, info.uplink?.tap);
      } catch (e) {
        throw this.hostError(e, VfeErr.DEVICE_PROBE_FAIL);
      }
      try {
        await this.journal?.putPf({ dev: pf, type: info.type, switchId });
      } catch (e) {
        this.log.error({ pf, err: (e as Error).message }, `PF ${pf} not added: journal write failed`);
        try {
          await this.host.removePf(pf, switchId, info.type);
        } catch {
          /* best effort: the PF was never acknowledged */
        }
        throw journalFailure(e);
      }
      this.unrestoredPfs.delete(pf);
      const entry: PfEntry = { info, switchId, vfs: new Set() };
      this.pfs.set(pf, entry);
      this.log.info({ event: "pf_added", pf, type: info.type, switchId }, `PF ${pf} added`);
      this.emit("change", { op: "pf_added", pf, switchId } satisfies RegistryEvent);
      return entry;
    });
  }

  removePf(dev: string): Promise<void> {
    return this.serial(async () => {
      const pf = canonical(dev, "PF");
      const entry = this.pfs.get(pf);
      if (!entry) {
        if (this.unrestoredPfs.has(pf)) return this.forgetUnrestoredPf(pf);
        throw new VfeError(VfeErr.NO_PF_DEVICE, `${pf} is not added`);
      }
      if (entry.vfs.size > 0) {
        throw new VfeError(VfeErr.REMOVE_PF_WITH_VF, `${pf} has ${entry.vfs.size} VF(s): ${[...entry.vfs].slice(0, 8).join(", ")}`);
      }
      await this.journalRemovePf(pf);
      try {
        await this.host.removePf(pf, entry.switchId, entry.info.type);
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

  async addVf(request: AddVfRequest): Promise<VfSpec> {
    // In flight from the moment its reservation is made, in the same turn: a change queued
    // behind this one sees it and waits.
    const { done } = await this.serial(() => {
      const r = this.reserveVf(request);
      const p = this.completeAdd(r.spec, r.diskCreated);
      this.addsInFlight.add(p);
      const untrack = () => this.addsInFlight.delete(p);
      p.then(untrack, untrack);
      return { done: p }; // wrapped: the serial part ends here, not when the add does
    }, true);
    return done;
  }

  /** A VF add's checks; on success its devId, socket, MAC and disk are taken (`adding`). */
  private reserveVf(request: AddVfRequest): { spec: VfSpec; diskCreated: boolean } {
    let req = request;
    {
      const dev = canonical(req.vfdev, "VF");
      const where = this.inv.vf(dev);
      if (!where) {
        if (this.inv.pf(dev)) throw new VfeError(LinuxErrno.ENODEV, `${dev} is a PF; add it with mgmtpf -a`);
        throw new VfeError(LinuxErrno.ENODEV, `${dev} is not a VF of any PF in the inventory`);
      }
      const pf = this.pfs.get(where.pf.dev);
      if (!pf) throw new VfeError(VfeErr.NO_PF_DEVICE, `PF ${where.pf.dev} of ${dev} is not added (mgmtpf -a ${where.pf.dev})`);
      if (this.vfs.has(dev)) throw new VfeError(VfeErr.ADD_VF_ALREADY_ADD, `${dev} is already added`);
      if (this.adding.has(dev)) throw new VfeError(VfeErr.ADD_VF_ALREADY_ADD, `${dev} is being added`);
      const info = pf.info;

      // Parameters.
      let socketPath = req.socket_file;
      if (socketPath === undefined || socketPath === null) {
        socketPath = `${this.opts.iface}${dev}`;
        const p = socketPathProblem(socketPath) ?? socketPathAliasProblem(socketPath);
        if (p) throw new VfeError(VfeErr.ADD_VF_NO_ACCESS_SOCKET_PATH, `default socket ${socketPath}: ${p}`);
      } else {
        if (typeof socketPath !== "string") throw einval("socket_file: must be a string");
        const p = socketPathProblem(socketPath) ?? socketPathAliasProblem(socketPath);
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
      if (info.type === "blk" && (req.spoofchk !== undefined || req.trust !== undefined)) throw einval("spoofchk and trust apply to net VFs only");
      for (const f of ["spoofchk", "trust"] as const) if (req[f] !== undefined && typeof req[f] !== "boolean") throw einval(`${f}: must be a boolean`);
      let mac = this.inv.defaultMac(dev);
      if (req.mac !== undefined) {
        const m = typeof req.mac === "string" ? normalizeMac(req.mac) : undefined;
        if (!m) throw einval("mac: must be a unicast, non-zero MAC address xx:xx:xx:xx:xx:xx");
        mac = m;
      }
      if (info.type === "net") {
        for (const other of this.vfsAndAdding()) {
          if (other.kind === "net" && other.mac === mac) throw new VfeError(LinuxErrno.EEXIST, `MAC ${mac} is used by VF ${other.dev}`);
        }
      }
      const mtu = req.mtu ?? info.mtu;
      if (!Number.isInteger(mtu) || mtu < MTU_MIN || mtu > MTU_MAX) throw einval(`mtu: must be in ${MTU_MIN}..${MTU_MAX}`);
      const diskOpts = req.disk !== undefined || req.disk_size !== undefined || req.readonly !== undefined || req.direct !== undefined;
      if (info.type === "net" && diskOpts) throw einval("disk, disk_size, readonly and direct apply to blk VFs only");
      if (info.type === "blk") {
        // vfe's own `vf -a DEV -v SOCK` names no disk: such a VF gets its own file in the state dir.
        if (req.disk === undefined) {
          if (!this.opts.diskDir) throw einval('a blk VF needs a disk: --disk PATH (a raw file or block device) or --disk null');
          fs.mkdirSync(this.opts.diskDir, { recursive: true, mode: 0o700 });
          req = { ...req, disk: path.join(this.opts.diskDir, `${dev}.raw`) };
        }
        const p = typeof req.disk === "string" ? diskPathProblem(req.disk) : "must be a string";
        if (p) throw einval(`disk: ${p}`);
        if (req.disk_size !== undefined && (!Number.isSafeInteger(req.disk_size) || req.disk_size < DISK_SIZE_MIN || req.disk_size > DISK_SIZE_MAX || req.disk_size % 512 !== 0)) {
          throw einval(`disk_size: must be a multiple of 512 in ${DISK_SIZE_MIN}..${DISK_SIZE_MAX}`);
        }
        for (const f of ["readonly", "direct"] as const) if (req[f] !== undefined && typeof req[f] !== "boolean") throw einval(`${f}: must be a boolean`);
        if (req.disk !== DISK_NULL) {
          for (const other of this.vfsAndAdding()) {
            if (other.disk?.path === req.disk) throw new VfeError(LinuxErrno.EEXIST, `disk ${req.disk} is used by VF ${other.dev}`);
          }
        }
      }

      if (this.vfs.size + this.adding.size >= MAX_LIVE_VFS) throw new VfeError(VfeErr.ADD_VF_EXCEED_VPORT_LIMIT, `at most ${MAX_LIVE_VFS} VFs`);
      const devId = this.lowestFree(new Set([...this.vfsAndAdding()].map((v) => v.devId)));
      // Last check before anything changes on disk: a missing backing file is created here.
      const disk =
        info.type === "blk"
          ? prepareDisk({ path: req.disk!, size: req.disk_size, readonly: req.readonly ?? false, direct: req.direct ?? false }, true)
          : undefined;
      if (disk?.created) this.log.info({ vf: dev, disk: disk.spec.path, bytes: disk.spec.size }, `created sparse disk ${disk.spec.path} for ${dev}`);

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
        ...(disk ? { disk: disk.spec } : {}),
        ...portSecurityFields({ spoofchk: req.spoofchk, trust: req.trust, macAdmin: info.type === "net" && req.mac !== undefined }),
      };
      // What every reader (journal, keeper, mirror) will check: never write a record they refuse.
      try {
        validateVfRecord(spec);
      } catch (e) {
        if (disk?.created) fs.rmSync(disk.spec.path, { force: true });
        throw e;
      }
      this.adding.set(dev, spec);
      this.sockets.set(socketPath, dev);
      return { spec, diskCreated: disk?.created ?? false };
    }
  }

  /** A reserved VF add: open its session, journal it, book it; on failure nothing is left. */
  private async completeAdd(spec: VfSpec, diskCreated: boolean): Promise<VfSpec> {
    const { dev, socketPath, mode } = spec;
    const giveUp = () => {
      this.adding.delete(dev);
      this.sockets.delete(socketPath);
      if (diskCreated) fs.rmSync(spec.disk!.path, { force: true }); // never acknowledged: leave nothing behind
    };
    try {
      await this.host.open(spec);
    } catch (e) {
      this.log.warn({ vf: dev, socket: socketPath, err: (e as Error).message }, `VF ${dev} could not be opened`);
      giveUp();
      throw this.hostError(e, VhostdErr.SESSION_START);
    }
    try {
      await this.journal?.putVf(vfRecord(spec));
    } catch (e) {
      this.log.error({ vf: dev, socket: socketPath, err: (e as Error).message }, `VF ${dev} not added: journal write failed; closing its session`);
      await this.host.close(dev).catch(() => undefined);
      giveUp();
      throw journalFailure(e);
    }
    this.adding.delete(dev);
    this.unrestoredVfs.delete(dev);
    this.vfs.set(dev, spec);
    this.pfs.get(spec.pf)!.vfs.add(dev); // a PF is not removed while an add is in flight
    this.log.info(
      { event: "vf_added", vf: dev, pf: spec.pf, socket: socketPath, mode, devId: spec.devId, switchId: spec.switchId, mac: spec.mac, mtu: spec.mtu, queuePairs: spec.queuePairs, uuid: spec.uuid, ...(spec.disk ? { disk: spec.disk } : {}) },
      `VF ${dev} added on ${socketPath} (${mode})`,
    );
    this.emit("change", { op: "vf_added", spec } satisfies RegistryEvent);
    return spec;
  }

  private *vfsAndAdding(): Iterable<VfSpec> {
    yield* this.vfs.values();
    yield* this.adding.values();
  }

  removeVf(vfdev: string): Promise<void> {
    return this.serial(async () => {
      const dev = canonical(vfdev, "VF");
      const spec = this.vfs.get(dev);
      if (!spec) {
        if (this.unrestoredVfs.has(dev)) return this.forgetUnrestoredVf(dev);
        throw new VfeError(VfeErr.NO_VF_DEVICE, `${dev} is not added`);
      }
      try {
        await this.journal?.removeVf(dev);
      } catch (e) {
        this.log.error({ vf: dev, err: (e as Error).message }, `VF ${dev} not removed: journal write failed`);
        throw journalFailure(e);
      }
      this.failed.delete(dev);
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

  /** The VF's runtime when the host answers synchronously (standalone); see runtimeAsync. */
  runtime(dev: string): VfRuntime | undefined {
    const why = this.failed.get(dev);
    if (why !== undefined) return { state: "failed", connected: false, features: "0x0", protocolFeatures: "0x0", reconnects: 0, queues: [], lastError: why };
    try {
      const rt = this.host.runtime(dev);
      return rt instanceof Promise ? undefined : rt;
    } catch {
      return undefined;
    }
  }

  /** The VF's runtime from any host (HA: asked from the keeper); undefined when unknown. */
  async runtimeAsync(dev: string): Promise<VfRuntime | undefined> {
    if (this.failed.has(dev)) return this.runtime(dev);
    try {
      return await this.host.runtime(dev);
    } catch {
      return undefined;
    }
  }

  /**
   * A net PF's switch forwarding table, each entry with the VF behind it; undefined when the
   * host cannot tell now (HA: the keeper is restarting).
   */
  async fdb(pfdev: string): Promise<Array<FdbRow & { vf: string; admin: boolean }> | undefined> {
    const pf = canonical(pfdev, "PF");
    const entry = this.pfs.get(pf);
    if (!entry) throw new VfeError(VfeErr.NO_PF_DEVICE, `${pf} is not added`);
    if (entry.info.type !== "net" || !this.host.fdb) return [];
    const rows = await this.host.fdb(entry.switchId);
    if (!rows) return undefined;
    const byId = new Map([...entry.vfs].map((d) => this.vfs.get(d)!).map((s) => [s.devId, s]));
    return rows
      .map((r) => {
        const s = byId.get(r.devId);
        return { ...r, vf: r.devId < 0 ? "uplink" : s?.dev ?? `devId ${r.devId}`, admin: !!s && r.pinned && s.macAdmin === true && s.mac === r.mac };
      })
      .sort((a, b) => a.devId - b.devId || a.mac.localeCompare(b.mac));
  }

  /** Journal records restore() could not register, by device (VFs and PFs). */
  unrestored(): { pfs: Map<string, string>; vfs: Map<string, string> } {
    return { pfs: new Map(this.unrestoredPfs), vfs: new Map(this.unrestoredVfs) };
  }

  allVfs(): VfSpec[] {
    return [...this.vfs.values()];
  }

  /* -------------------------------- restore --------------------------------------- */

  /**
   * Re-creates the journal's PFs, then its VFs, exactly as they were (same switchId, devId,
   * MAC, socket, mode), before the daemon serves RPC. Writes nothing to the journal: a record
   * that cannot be restored stays in it, because it is configuration, not runtime state.
   *  - a VF whose session cannot open (e.g. its socket directory vanished) is registered
   *    anyway: `vf -l`/`vf -i` show it with state "failed" and last_error, it keeps its devId,
   *    socket and MAC, its PF cannot be removed under it, and `vf -r` removes it as usual;
   *  - a record that cannot be registered (its PF missing or not restorable, the inventory no
   *    longer has it, it collides with another record) is skipped and logged; `vf -r` /
   *    `mgmtpf -r` of that device delete the record, `journal dump` shows it.
   * No "change" events: nothing changed, the configuration merely came back.
   */
  restore(contents: Pick<JournalContents, "pfs" | "vfs">): Promise<RestoreReport> {
    return this.serial(async () => {
      if (this.pfs.size > 0 || this.vfs.size > 0) throw new Error("restore needs an empty registry");
      const report: RestoreReport = { pfs: { restored: [], failed: [] }, vfs: { restored: [], failed: [], skipped: [] } };
      for (const rec of contents.pfs) {
        const why = await this.restorePf(rec);
        if (why === undefined) report.pfs.restored.push(rec.dev);
        else {
          this.unrestoredPfs.set(rec.dev, why);
          report.pfs.failed.push({ pf: rec.dev, reason: why });
          this.log.error({ event: "pf_restore_failed", pf: rec.dev, switchId: rec.switchId, reason: why }, `PF ${rec.dev} not restored: ${why}`);
        }
      }
      for (const rec of contents.vfs) {
        const r = await this.restoreVf(rec);
        if (r.skipped !== undefined) {
          this.unrestoredVfs.set(rec.dev, r.skipped);
          report.vfs.skipped.push({ vf: rec.dev, reason: r.skipped });
          this.log.error({ event: "vf_restore_skipped", vf: rec.dev, pf: rec.pf, socket: rec.socketPath, devId: rec.devId, reason: r.skipped }, `VF ${rec.dev} not restored: ${r.skipped}`);
        } else if (r.failed !== undefined) {
          report.vfs.failed.push({ vf: rec.dev, reason: r.failed });
        } else report.vfs.restored.push(rec.dev);
      }
      return report;
    });
  }

  /** Undefined when restored, else why not. */
  private async restorePf(rec: PfRecord): Promise<string | undefined> {
    const info = this.inv.pf(rec.dev);
    if (!info) return "not a PF in the inventory (was the config changed?)";
    if (info.type !== rec.type) return `journaled as ${rec.type}, the inventory says ${info.type}`;
    for (const [other, e] of this.pfs) if (e.switchId === rec.switchId) return `switch id ${rec.switchId} is already used by PF ${other}`;
    try {
      await this.host.addPf(rec.dev, rec.switchId, rec.type, info.uplink?.tap);
    } catch (e) {
      return `host: ${(e as Error).message}`;
    }
    this.pfs.set(rec.dev, { info, switchId: rec.switchId, vfs: new Set() });
    this.log.info({ event: "pf_restored", pf: rec.dev, type: rec.type, switchId: rec.switchId }, `PF ${rec.dev} restored`);
    return undefined;
  }

  private async restoreVf(rec: VfRecord): Promise<{ skipped?: string; failed?: string }> {
    const pf = this.pfs.get(rec.pf);
    if (!pf) return { skipped: this.unrestoredPfs.has(rec.pf) ? `its PF ${rec.pf} was not restored` : `its PF ${rec.pf} is not in the journal` };
    const where = this.inv.vf(rec.dev);
    if (!where || where.pf.dev !== rec.pf) return { skipped: `not a VF of PF ${rec.pf} in the inventory (was the config changed?)` };
    const info = pf.info;
    if (rec.devId >= MAX_LIVE_VFS) return { skipped: `devId ${rec.devId} is not below ${MAX_LIVE_VFS}` };
    for (const v of this.vfs.values()) {
      if (v.devId === rec.devId) return { skipped: `devId ${rec.devId} is already used by VF ${v.dev}` };
      if (info.type === "net" && v.kind === "net" && v.mac === rec.mac) return { skipped: `MAC ${rec.mac} is already used by VF ${v.dev}` };
    }
    const owner = this.sockets.get(rec.socketPath);
    if (owner) return { skipped: `socket ${rec.socketPath} is already used by VF ${owner}` };
    if (this.reserved.has(rec.socketPath)) return { skipped: `socket ${rec.socketPath} is reserved by vfe-vhostd` };
    if (rec.queuePairs > info.maxQueuePairs) return { skipped: `queue_pairs ${rec.queuePairs} exceeds PF ${info.dev}'s limit ${info.maxQueuePairs}` };
    const spec: VfSpec = {
      dev: rec.dev,
      pf: rec.pf,
      kind: info.type,
      devId: rec.devId,
      switchId: pf.switchId,
      socketPath: rec.socketPath,
      mode: rec.mode,
      ...(rec.uuid ? { uuid: rec.uuid } : {}),
      mac: rec.mac,
      mtu: rec.mtu,
      queuePairs: rec.queuePairs,
      ...(rec.disk ? { disk: { ...rec.disk } } : {}),
      ...(info.type === "net" ? portSecurityFields(rec) : {}),
    };
    // The journal form has no kind: only now, with its PF's, is the whole record checked (a blk
    // VF needs a disk), by the same validator and with the same words as every other reader.
    try {
      validateVfRecord(spec);
    } catch (e) {
      if (e instanceof DeviceRecordError) return { skipped: e.problem };
      throw e;
    }
    let failed: string | undefined;
    try {
      await this.host.open(spec);
    } catch (e) {
      failed = `restore: ${(e as Error).message}`;
      this.failed.set(rec.dev, failed);
    }
    this.vfs.set(rec.dev, spec);
    this.sockets.set(rec.socketPath, rec.dev);
    pf.vfs.add(rec.dev);
    const fields = { vf: rec.dev, pf: rec.pf, socket: rec.socketPath, mode: rec.mode, devId: rec.devId, switchId: pf.switchId, mac: rec.mac };
    if (failed) this.log.warn({ event: "vf_restore_failed", ...fields, reason: failed }, `VF ${rec.dev} restored in state failed: ${failed}`);
    else this.log.info({ event: "vf_restored", ...fields }, `VF ${rec.dev} restored on ${rec.socketPath} (${rec.mode})`);
    return failed ? { failed } : {};
  }

  /** `mgmtpf -r` of a PF whose journal record could not be restored: delete the record. */
  private async forgetUnrestoredPf(pf: string): Promise<void> {
    await this.journalRemovePf(pf);
    this.unrestoredPfs.delete(pf);
    this.log.info({ event: "pf_removed", pf, unrestored: true }, `PF ${pf} removed from the journal (it was not restored)`);
  }

  /** `vf -r` of a VF whose journal record could not be restored: delete the record. */
  private async forgetUnrestoredVf(dev: string): Promise<void> {
    try {
      await this.journal?.removeVf(dev);
    } catch (e) {
      throw journalFailure(e);
    }
    this.unrestoredVfs.delete(dev);
    this.log.info({ event: "vf_removed", vf: dev, unrestored: true }, `VF ${dev} removed from the journal (it was not restored)`);
  }

  private async journalRemovePf(pf: string): Promise<void> {
    try {
      await this.journal?.removePf(pf);
    } catch (e) {
      // A VF record the registry does not hold (one restore skipped) still names the PF.
      if (e instanceof JournalConflictError) throw new VfeError(VfeErr.REMOVE_PF_WITH_VF, `${e.detail}; remove it with vf -r`);
      this.log.error({ pf, err: (e as Error).message }, `PF ${pf} not removed: journal write failed`);
      throw journalFailure(e);
    }
  }

  /** Closes every session (daemon shutdown); further changes are refused. */
  async shutdown(): Promise<void> {
    await this.lock;
    await this.addsSettled();
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
    return new VfeError(errnoOf(e, fallback), (e as Error)?.message ?? String(e));
  }
}
