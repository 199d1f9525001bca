// vfe-vhostd-ha: the keeper runs every VF's vhost-user session and the datapath
// engine (the same EngineVfHost vfe-vhostd runs in-process when standalone); vfe-vhostd only
// decides. Because vhostd never touches a vhost-user connection, killing it at any moment is
// invisible to the front-ends.
//
// Start order: refuse if another keeper serves this run dir -> open the replica journal ->
// bring back every PF and VF it holds -> only then serve the sync socket (and the local
// inspection socket). So the keeper alone restores every VF after its own restart or a reboot.
//
// Deltas (table "devices": pf/<DEV> -> addPf/removePf, vf/<DEV> -> open/close): validated as a
// whole, made durable in the replica, applied, and only then acknowledged. Idempotent: a put
// identical to what runs changes nothing (a restarted vhostd re-sending its state is
// harmless); a different spec for a running VF is close + open. A put that cannot be applied
// is taken out of the replica again and nacked with the host's errno (a number in the nack) so
// vfe-vhostd answers the RPC with it, exactly as standalone.
//
// Snapshots (vhostd's whole desired state, pushed at every vhostd start and keeper
// reappearance): reconcile — close what is not in it, open what is missing, leave identical
// ones untouched. A VF that cannot open stays desired and is shown "failed" by its runtime.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { closeFds, native } from "@vhostd/native";
import { DeviceRecordError, LinuxErrno, deviceKeyOf, emptyState, errnoOf, haSyncEndpoint, normalizePciAddr, type DeltaMsg, type HaOp, type HaState, type PfRecord, type SnapshotMsg } from "@vhostd/proto";
import { createVfHost, EngineVfHost, inboxPath, keeperBeaconPath, keeperSocketPath, mirrorLockDir, MirrorSender, mirrorSharedPath, type VfHost, type VfRuntime, type VfSpec } from "@vhostd/runtime";
import { parseDeviceEntry, sameValue, type DeviceEntry } from "./devices.js";
import { InspectServer, answers } from "./inspect_server.js";
import { ReplicaJournal } from "./replica.js";
import { SyncServer } from "./sync_server.js";

export const REPLICA_DIR_NAME = "keeper-journal";

export interface KeeperOptions {
  runDir: string;
  stateDir: string;
  log: Logger;
  /** Tests inject a fake host; default the engine host of @vhostd/runtime. */
  host?: VfHost;
  heartbeatMs?: number;
  peerTimeoutMs?: number;
}

export function keeperVersion(): { version: string; buildTime: string } {
  let version = "0.0.0";
  try {
    version = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string }).version ?? version;
  } catch {
    /* default */
  }
  let buildTime = "unknown";
  try {
    buildTime = statSync(fileURLToPath(import.meta.url)).mtime.toISOString();
  } catch {
    /* default */
  }
  return { version: `vfe-vhostd-ha ${version}`, buildTime };
}

class KeeperError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}


export class Keeper {
  /** What runs now. */
  private readonly pfs = new Map<string, PfRecord>();
  private readonly vfs = new Map<string, VfSpec>();
  /** Desired VFs the host could not open: dev -> why. */
  private readonly failed = new Map<string, string>();
  /** The replica in memory (what getSnapshot hands out). */
  private state: HaState = emptyState();
  private sync!: SyncServer;
  private inspect!: InspectServer;
  private stopped: Promise<void> | undefined;
  /** Mirrors every session to vfe-vhostd (its hot standby); absent with an injected host. */
  private mirror: MirrorSender | undefined;
  readonly version = keeperVersion();

  private constructor(
    private readonly opts: KeeperOptions,
    readonly host: VfHost,
    private readonly replica: ReplicaJournal,
    private readonly log: Logger,
  ) {}

  static async start(opts: KeeperOptions): Promise<Keeper> {
    const log = opts.log;
    const sockPath = keeperSocketPath(opts.runDir);
    // A second keeper must neither open the replica nor touch anybody's VF sockets.
    if (await answers(sockPath)) throw new Error(`another vfe-vhostd-ha serves ${opts.runDir} (${sockPath} answers)`);
    const t0 = performance.now();
    const replica = ReplicaJournal.open(join(opts.stateDir, REPLICA_DIR_NAME));
    const host = opts.host ?? createVfHost({ log: log.child({ component: "host" }), runDir: opts.runDir, lockDir: mirrorLockDir(opts.runDir), sharedPath: mirrorSharedPath(opts.runDir), inboxPath: inboxPath(opts.runDir), owner: "vfe-vhostd-ha",
      guestChoices: { writeback: (dev) => replica.writeback(dev), setWriteback: (dev, wb) => replica.setWriteback(dev, wb), forget: (dev) => replica.forgetGuest(dev) },
    });
    const k = new Keeper(opts, host, replica, log);
    try {
      const contents = replica.read();
      for (const e of contents.errors) log.error({ event: "replica_record_unusable", key: e.key, err: e.error }, `replica record ${e.key} ignored: ${e.error}`);
      const desired = k.validState(contents.state, "replica", true);
      k.state = desired.state;
      if (host instanceof EngineVfHost) {
        // A crash of ours (or of vfe-vhostd while it ran the VFs) that nobody judged yet: count
        // it against the VF it names before running anything (session/crash_ledger.ts in @vhostd/runtime).
        const vfById = new Map(desired.entries.flatMap((e) => (e.kind === "vf" ? [[e.value.devId, e.value] as const] : [])));
        host.claimCrashes((id) => vfById.get(id));
        // Sessions vfe-vhostd took over while we were down come back first, in place; only
        // then is anything else opened (reconcile leaves the adopted ones untouched).
        // Before the mirror connects: vfe-vhostd looks for it when it starts watching us.
        native.armExitBeacon(keeperBeaconPath(opts.runDir));
        k.mirror = new MirrorSender(opts.runDir, log.child({ component: "mirror" }));
        await k.adoptTakenBack(host, desired.entries);
      }
      const r = await k.reconcile(desired.entries);
      if (host instanceof EngineVfHost) k.mirror!.start(host);
      log.info(
        { event: "keeper_restore_done", epoch: contents.epoch, seq: contents.seq, pfs: k.pfs.size, vfs: k.vfs.size, failed: k.failed.size, ...r, ms: Math.round(performance.now() - t0) },
        `restored ${k.pfs.size} PF(s) and ${k.vfs.size} VF(s) from the replica journal (${k.failed.size} failed) in ${Math.round(performance.now() - t0)} ms`,
      );
      k.inspect = new InspectServer(sockPath, log, (req) => k.answer(req));
      await k.inspect.listen();
      k.sync = new SyncServer({
        endpoint: haSyncEndpoint(opts.runDir),
        log: log.child({ component: "sync" }),
        version: k.version.version.slice(0, 64),
        initial: { epoch: contents.epoch, seq: contents.seq },
        hasState: () => Object.keys(k.state.devices).length > 0,
        journalDeltas: (ds) => k.journalDeltas(ds),
        onDelta: (d) => k.onDelta(d),
        onSnapshot: (s) => k.onSnapshot(s),
        getSnapshot: () => ({ devices: { ...k.state.devices }, sessions: {}, fds: {} }),
        heartbeatMs: opts.heartbeatMs,
        peerTimeoutMs: opts.peerTimeoutMs,
      });
      await k.sync.start();
    } catch (e) {
      k.inspect?.close();
      await host.shutdown().catch(() => undefined);
      await replica.close().catch(() => undefined);
      throw e;
    }
    return k;
  }

  /**
   * Takes back the sessions vfe-vhostd ran while we were down: prepare all of them while its
   * rings still run, let it stop, start ours. The datapath pauses only for that last exchange.
   */
  private async adoptTakenBack(host: EngineVfHost, entries: DeviceEntry[]): Promise<void> {
    const back = await this.mirror!.takeBack(2000);
    if (back.vfs.length === 0 && back.pfs.length === 0) return;
    const t0 = performance.now();
    const want = new Map(entries.map((e) => [e.dev, e]));
    for (const p of back.pfs) {
      const e = want.get(p.dev);
      if (e?.kind !== "pf" || e.value.switchId !== p.switchId || this.pfs.has(p.dev)) {
        if (p.fd >= 0) closeFds([p.fd]);
        continue;
      }
      host.adoptPf(p.dev, p.switchId, p.fd, true);
      this.pfs.set(p.dev, e.value);
    }
    // A blk PF has no switch, so vfe-vhostd's mirror never hands it back: add it here from the
    // replica, or its VFs below would be dropped and reopened afresh (a front-end reconnect and
    // per-queue counters from zero) instead of taken back in place.
    for (const e of entries) {
      if (e.kind === "pf" && e.value.kind === "blk" && !this.pfs.has(e.dev)) await this.applyPf(e.dev, e.value, "takeback");
    }
    const adopted: VfSpec[] = [];
    for (const v of back.vfs) {
      const e = want.get(v.dev);
      if (e?.kind !== "vf" || !this.pfs.has(e.value.pf)) {
        closeFds(v.fds); // not ours any more: closing our copies lets vfe-vhostd's be the last
        continue;
      }
      try {
        host.adopt(e.value, v.rec, v.fds);
        adopted.push(e.value);
      } catch (err) {
        this.log.error({ vf: v.dev, err: (err as Error).message }, "taking a VF back failed; it is opened afresh");
      }
    }
    const t1 = performance.now();
    const released = await this.mirror!.release(2000);
    const t2 = performance.now();
    // If vfe-vhostd went away meanwhile, its locks go with it: resumeAdopted waits for them.
    const failed = new Set(await host.resumeAdopted(released ? 500 : 3000));
    for (const spec of adopted) if (!failed.has(spec.dev)) this.vfs.set(spec.dev, spec);
    this.log.info(
      { event: "takeback_done", vfs: adopted.length - failed.size, failed: failed.size, prepareMs: Math.round(t1 - t0), pauseMs: Math.round((performance.now() - t2 + (t2 - t1)) * 10) / 10 },
      `took ${adopted.length - failed.size} running session(s) back from vfe-vhostd in place`,
    );
  }

  /** Graceful stop with vfe-vhostd present: it takes every VF over; false when it cannot. */
  handover(): boolean {
    if (!this.mirror?.handover()) return false;
    // Close the channels but not the sessions; an open ZeroMQ socket would hold the process
    // (and with it every VF lock vfe-vhostd waits for) at exit.
    this.sync?.close();
    this.inspect?.close();
    return true;
  }

  /** Running VFs and PFs (tests, inspection). */
  list(): { pfs: string[]; vfs: string[]; failed: string[] } {
    return { pfs: [...this.pfs.keys()], vfs: [...this.vfs.keys()], failed: [...this.failed.keys()] };
  }

  async runtime(dev: string): Promise<VfRuntime | undefined> {
    const why = this.failed.get(dev);
    if (why !== undefined) return { state: "failed", connected: false, features: "0x0", protocolFeatures: "0x0", reconnects: 0, queues: [], lastError: why };
    if (!this.vfs.has(dev)) return undefined;
    return await this.host.runtime(dev);
  }

  /** Stops serving; with `closeSessions` (SIGTERM) every session and the engine go down too. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.mirror?.close();
      this.sync?.close();
      this.inspect?.close();
      await this.host.shutdown().catch((e: Error) => this.log.error({ err: e.message }, "host shutdown failed"));
      await this.replica.close().catch(() => undefined);
    })();
    return this.stopped;
  }

  /* ------------------------------------------------------------------------ sync */

  /** Validates a delta: a bad op refuses the whole delta, which then changes nothing. */
  private deltaEntries(d: DeltaMsg): Array<{ op: HaOp; entry?: DeviceEntry; kind: "pf" | "vf"; dev: string }> {
    return d.ops.map((op) => {
      if (op.table !== "devices") throw new KeeperError(`table ${op.table} is not used by this keeper`, -22);
      if (op.op === "put") {
        const entry = this.validEntry(op.key, op.value);
        return { op, entry, kind: entry.kind, dev: entry.dev };
      }
      const k = deviceKeyOf(op.key);
      if (!k) throw new KeeperError(`${op.key.slice(0, 64)}: not a pf/ or vf/ key`, -22);
      return { op, kind: k.kind, dev: k.dev };
    });
  }

  /** The valid ones of a run of deltas go to the replica in one transaction (one flush). */
  private async journalDeltas(ds: DeltaMsg[]): Promise<Array<Error | null>> {
    const refused = ds.map((d) => {
      try {
        this.deltaEntries(d);
        return null;
      } catch (e) {
        return e as Error;
      }
    });
    const last = ds[ds.length - 1]!;
    await this.replica.apply(last.epoch, last.seq, ds.flatMap((d, i) => (refused[i] ? [] : d.ops)));
    return refused;
  }

  /** Applies a journaled delta; one that fails is taken back in the replica and refused. */
  private async onDelta(d: DeltaMsg): Promise<void> {
    const entries = this.deltaEntries(d);
    for (const { op, entry, kind, dev } of entries) {
      try {
        if (kind === "pf") await this.applyPf(dev, entry?.kind === "pf" ? entry.value : undefined, "delta");
        else await this.applyVf(dev, entry?.kind === "vf" ? entry.value : undefined, "delta");
        if (op.op === "put") this.state.devices[op.key] = op.value;
        else delete this.state.devices[op.key];
      } catch (e) {
        // The replica must describe what runs: the old value if it still runs, else nothing.
        const still: unknown = kind === "pf" ? this.pfs.get(dev) : this.vfs.get(dev);
        if (still !== undefined) this.state.devices[op.key] = still;
        else delete this.state.devices[op.key];
        await this.replica
          .set("devices", op.key, still)
          .catch((err: Error) => this.log.error({ key: op.key, err: err.message }, "replica: taking back a failed change failed"));
        throw e instanceof KeeperError ? e : new KeeperError((e as Error).message, errnoOf(e, LinuxErrno.EIO));
      }
    }
  }

  private async onSnapshot(s: SnapshotMsg): Promise<void> {
    const desired = this.validState(s.state, "snapshot", false);
    await this.replica.replace(s.epoch, s.seq, desired.state);
    this.state = desired.state;
    const t0 = performance.now();
    const r = await this.reconcile(desired.entries);
    this.log.info({ event: "keeper_reconciled", epoch: s.epoch, seq: s.seq, ...r, vfs: this.vfs.size, failed: this.failed.size, ms: Math.round(performance.now() - t0) }, "snapshot from vfe-vhostd reconciled");
  }

  /** Validates a whole state; `lenient` (the replica) logs and skips bad entries, else throws. */
  private validState(state: HaState, from: string, lenient: boolean): { state: HaState; entries: DeviceEntry[] } {
    const out = emptyState();
    const entries: DeviceEntry[] = [];
    for (const table of ["sessions", "fds"] as const) {
      if (Object.keys(state[table]).length > 0) {
        const why = `table ${table} is not used by this keeper`;
        if (!lenient) throw new Error(why);
        this.log.error({ from, table }, `${from}: ${why}; ignored`);
      }
    }
    for (const [key, value] of Object.entries(state.devices)) {
      try {
        entries.push(this.validEntry(key, value));
        out.devices[key] = value;
      } catch (e) {
        if (!lenient) throw e;
        this.log.error({ event: "replica_record_unusable", key: key.slice(0, 128), err: (e as Error).message, errno: (e as KeeperError).errno }, `${from}: ${key.slice(0, 64)} ignored`);
      }
    }
    return { state: out, entries };
  }

  private validEntry(key: string, value: unknown): DeviceEntry {
    try {
      return parseDeviceEntry(key, value);
    } catch (e) {
      if (!(e instanceof DeviceRecordError)) throw e;
      throw new KeeperError(`${key.slice(0, 64)}: ${e.problem}`, e.errno);
    }
  }

  /** Makes what runs equal to `entries`; identical devices are not touched. */
  private async reconcile(entries: DeviceEntry[]): Promise<{ opened: number; closed: number; unchanged: number }> {
    const wantPf = new Map<string, PfRecord>();
    const wantVf = new Map<string, VfSpec>();
    for (const e of entries) {
      if (e.kind === "pf") wantPf.set(e.dev, e.value);
      else wantVf.set(e.dev, e.value);
    }
    const pfChanging = new Set([...this.pfs].filter(([dev, v]) => !sameValue(wantPf.get(dev), v)).map(([dev]) => dev));
    let opened = 0;
    let closed = 0;
    let unchanged = 0;
    for (const [dev, spec] of [...this.vfs]) {
      const want = wantVf.get(dev);
      if (want && sameValue(want, spec) && !pfChanging.has(spec.pf)) continue;
      await this.applyVf(dev, undefined, "snapshot");
      closed++;
    }
    for (const dev of [...this.failed.keys()]) if (!wantVf.has(dev)) this.failed.delete(dev);
    for (const dev of pfChanging) await this.applyPf(dev, undefined, "snapshot").catch((e: Error) => this.log.error({ pf: dev, err: e.message }, "removing PF failed"));
    for (const [dev, v] of wantPf) {
      if (this.pfs.has(dev)) continue;
      await this.applyPf(dev, v, "snapshot").catch((e: Error) => this.log.error({ event: "pf_failed", pf: dev, err: e.message }, `PF ${dev} could not be added: ${e.message}`));
    }
    for (const [dev, spec] of wantVf) {
      if (this.vfs.has(dev)) {
        unchanged++;
        continue;
      }
      try {
        await this.applyVf(dev, spec, "snapshot");
        opened++;
      } catch (e) {
        const why = (e as Error).message;
        this.failed.set(dev, why);
        this.log.error({ event: "vf_failed", vf: dev, socket: spec.socketPath, err: why }, `VF ${dev} on ${spec.socketPath} could not be opened: ${why}`);
      }
    }
    return { opened, closed, unchanged };
  }

  private async applyPf(dev: string, want: PfRecord | undefined, why: string): Promise<void> {
    const cur = this.pfs.get(dev);
    if (want && cur && sameValue(want, cur)) return;
    if (cur) {
      const vfs = [...this.vfs.values()].filter((v) => v.pf === dev);
      if (vfs.length > 0) throw new KeeperError(`PF ${dev} still has ${vfs.length} VF(s) running`, -16);
      await this.host.removePf(dev, cur.switchId, cur.kind);
      this.pfs.delete(dev);
      this.log.info({ event: "keeper_pf_removed", pf: dev, switchId: cur.switchId, why }, `PF ${dev} removed`);
    }
    if (want) {
      await this.host.addPf(dev, want.switchId, want.kind, want.uplinkTap);
      this.pfs.set(dev, want);
      this.log.info({ event: "keeper_pf_added", pf: dev, switchId: want.switchId, kind: want.kind, uplink: want.uplinkTap, why }, `PF ${dev} added`);
    }
  }

  private async applyVf(dev: string, want: VfSpec | undefined, why: string): Promise<void> {
    const cur = this.vfs.get(dev);
    if (want && cur && sameValue(want, cur)) return;
    if (cur) {
      await this.host.close(dev);
      this.vfs.delete(dev);
      this.log.info({ event: "keeper_vf_closed", vf: dev, socket: cur.socketPath, why }, `VF ${dev} closed (${cur.socketPath})`);
    }
    this.failed.delete(dev);
    if (want) {
      const pf = this.pfs.get(want.pf);
      if (!pf) throw new KeeperError(`PF ${want.pf} of VF ${dev} is not added at the keeper`, -19);
      if (pf.switchId !== want.switchId) throw new KeeperError(`VF ${dev} names switch ${want.switchId}, its PF has ${pf.switchId}`, -22);
      for (const v of this.vfs.values()) {
        if (v.devId === want.devId) throw new KeeperError(`devId ${want.devId} is used by VF ${v.dev}`, -17);
        if (v.socketPath === want.socketPath) throw new KeeperError(`socket ${want.socketPath} is used by VF ${v.dev}`, -17);
      }
      await this.host.open(want);
      this.vfs.set(dev, want);
      this.log.info({ event: "keeper_vf_opened", vf: dev, socket: want.socketPath, mode: want.mode, devId: want.devId, why }, `VF ${dev} serving ${want.socketPath} (${want.mode})`);
    }
  }

  /* ------------------------------------------------------------------ inspection */

  private async answer(req: { method: string; dev?: string; switchId?: number }): Promise<unknown> {
    switch (req.method) {
      case "runtime":
        return (await this.runtime(req.dev!)) ?? null;
      case "fdb":
        return (await this.host.fdb?.(req.switchId!)) ?? [];
      case "version":
        return this.version;
      case "list":
        return { ...this.list(), epoch: this.sync?.epoch ?? 0, seq: this.sync?.lastSeq ?? 0, peer: this.sync?.peer ?? null, pid: process.pid };
      default:
        throw new Error("unknown method");
    }
  }
}
