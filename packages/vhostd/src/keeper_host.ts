// vfe-vhostd --ha: the VfHost that asks the keeper (vfe-vhostd-ha) to run every VF.
//
// HA mode (docs/architecture.md, "HA channels" and walk 1): the keeper runs the vhost-user
// sessions and the engine; vhostd only decides. Every change the registry makes is one
// delta on the HA state channel (HaClient), table "devices":
//   pf/<DEV>  {pf, switchId, kind, uplinkTap?}   addPf / removePf
//   vf/<DEV>  the VfSpec                         open / close
// and resolves once the keeper made it durable in its replica journal and applied it.
//
// Restore: while the registry restores from vhostd's own journal, nothing is sent; the
// desired state is only collected. start() then pushes it as one snapshot and the keeper
// reconciles (VFs it already runs with the same spec are left untouched, so a vhostd
// restart is invisible to front-ends; VFs vhostd never acknowledged are closed). The same
// snapshot is pushed again whenever the keeper (re)appears.
//
// Keeper down: changes fail at once with EAGAIN "keeper unavailable" (never hang); removals
// are recorded and reach the keeper with the next snapshot. Runtime (vf -i / vf -l) is asked
// from the keeper over its local socket (<run-dir>/vfe-vhostd-ha.sock, newline-delimited
// JSON), bounded by a short timeout; unknown while the keeper restarts.
import { EventEmitter } from "node:events";
import { createConnection, type Socket } from "node:net";
import type { Logger } from "pino";
import { LinuxErrno, VfeError, emptyState, haSyncEndpoint, pfKey, pfRecordValue, vfKey, vfRecordValue, type DeviceKind, type HaOp, type HaState, type PfRecord, type WelcomeMsg } from "@vhostd/proto";
import { KEEPER_MAX_LINE_BYTES, keeperSocketPath, MirrorHolder, type FdbRow, type VfHost, type VfRuntime, type VfSpec } from "@vhostd/runtime";
import { HaClient, HaSyncError } from "./keeper_sync_client.js";

/** A refusal by the keeper, with the host's errno that its nack carries. */
export function keeperError(e: unknown): Error {
  if (e instanceof HaSyncError) {
    if (e.code === "apply_failed") {
      const err = new Error(`keeper: ${e.message.replace(/^delta \d+ not applied: /, "")}`) as Error & { errno?: number };
      const errno = e.errno ?? legacyNackErrno(e.message);
      if (errno !== undefined) err.errno = errno;
      return err;
    }
    if (e.code === "timeout") return new VfeError(LinuxErrno.ETIMEDOUT, `keeper did not answer: ${e.message}`);
    return new VfeError(LinuxErrno.EAGAIN, `keeper unavailable: ${e.message}`);
  }
  return e as Error;
}

/**
 * A keeper older than the nack's errno field wrote it as "[errno N]" in the reason. Read for one
 * release, so vfe-vhostd may be upgraded first (docs/operations.md "Upgrade"); then delete.
 */
function legacyNackErrno(reason: string): number | undefined {
  const m = /\[errno (-?\d+)\]/.exec(reason);
  return m ? Number(m[1]) : undefined;
}

export interface KeeperVfHostOptions {
  runDir: string;
  log: Logger;
  /** vhostd's epoch (its journal's, bumped at this start). */
  epoch: number;
  version?: string;
  /** A change not acknowledged in this long fails (ETIMEDOUT). Default 4000 (the RPC server gives up on a connection after 10 s). */
  requestTimeoutMs?: number;
  /** How long start() waits for the keeper before serving without it. Default 3000. */
  startWaitMs?: number;
  /** A runtime question not answered in this long is "unknown". Default 1000. */
  runtimeTimeoutMs?: number;
  heartbeatMs?: number;
  peerTimeoutMs?: number;
}

/**
 * Events: "fenced" (a newer vhostd took over the keeper: this process must stop),
 * "keeper_up" / "keeper_down".
 */
export class KeeperVfHost extends EventEmitter implements VfHost {
  private readonly client: HaClient;
  private readonly log: Logger;
  /** What vhostd wants the keeper to run: the "devices" table. */
  private readonly desired: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  private restoring = true;
  /** The keeper may differ from `desired` (a change failed or timed out, keeper restarted). */
  private needSync = true;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly runtimes: RuntimeClient;
  private keeperVersion: { version: string; buildTime: string } | undefined;
  /** Hot standby for keeper crashes: holds the keeper's session copies, adopts them if it dies. */
  readonly mirror: MirrorHolder;

  constructor(private readonly opts: KeeperVfHostOptions) {
    super();
    this.log = opts.log;
    this.client = new HaClient({
      endpoint: haSyncEndpoint(opts.runDir),
      log: opts.log.child({ component: "ha" }),
      epoch: opts.epoch,
      version: opts.version,
      requestTimeoutMs: opts.requestTimeoutMs ?? 4000,
      heartbeatMs: opts.heartbeatMs,
      peerTimeoutMs: opts.peerTimeoutMs,
      getState: () => this.state(),
    });
    this.runtimes = new RuntimeClient(keeperSocketPath(opts.runDir), opts.runtimeTimeoutMs ?? 1000);
    this.mirror = new MirrorHolder({
      runDir: opts.runDir,
      log: opts.log.child({ component: "mirror" }),
      specOf: (dev) => this.desired[vfKey(dev)] as VfSpec | undefined,
      pfSwitchOf: (dev) => (this.desired[pfKey(dev)] as PfRecord | undefined)?.switchId,
      onKeeperGone: (why) => this.client.keeperGone(why),
    });
    this.client.on("keeper_up", (w: WelcomeMsg) => {
      this.needSync = true;
      this.keeperUps++;
      this.keeperVersion = { version: w.version, buildTime: "unknown" };
      void this.runtimes.call({ method: "version" }).then((v) => {
        const o = v as { version?: unknown; buildTime?: unknown } | undefined;
        if (o && typeof o.version === "string" && typeof o.buildTime === "string") this.keeperVersion = { version: o.version, buildTime: o.buildTime };
      }, () => undefined);
      if (!this.restoring) void this.serial(() => this.sync("keeper up")).catch(() => undefined);
      this.emit("keeper_up", w);
    });
    this.client.on("keeper_down", (e) => {
      this.needSync = true;
      this.keeperVersion = undefined;
      this.emit("keeper_down", e);
    });
    this.client.on("fenced", (e) => this.emit("fenced", e));
  }

  /** Welcomes from a keeper: the first is the connection, each later one a keeper that came back. */
  private keeperUps = 0;

  get keeperUp(): boolean {
    return this.client.keeperUp;
  }

  /** The keeper's version for `version` (undefined while disconnected). */
  keeperInfo(): { version: string; buildTime: string } | undefined {
    return this.client.keeperUp ? this.keeperVersion : undefined;
  }

  /** `ha status`: the keeper as we see it, and the session mirror we hold. */
  async haStatus(): Promise<Record<string, unknown>> {
    const age = this.client.heartbeatAgeMs;
    let list: { vfs?: unknown; pid?: unknown } | undefined;
    if (this.client.keeperUp) list = (await this.runtimes.call({ method: "list" }).catch(() => undefined)) as typeof list;
    const m = this.mirror.status();
    return {
      mode: "ha",
      keeper: {
        connected: this.client.keeperUp,
        ...(this.keeperInfo() ? { version: this.keeperInfo()!.version } : {}),
        ...(typeof list?.pid === "number" ? { pid: list.pid } : {}),
        epoch: this.client.epoch,
        last_seq: this.client.lastAcked,
        ...(Number.isFinite(age) ? { heartbeat_age_ms: Math.round(age) } : {}),
        ...(Array.isArray(list?.vfs) ? { vfs: list.vfs.length } : {}),
        reconnects: Math.max(0, this.keeperUps - 1),
      },
      mirror: {
        connected: m.connected,
        ...(m.keeperPid !== null ? { keeper_pid: m.keeperPid } : {}),
        copies: m.copies,
        fds_held: m.fdsHeld,
        fds_per_vf: m.fdsPerVf,
        running: m.running,
        // VFs a keeper crash was attributed to, held (not run) until the keeper is back (issue 17)
        ...(m.held.length ? { held: m.held } : {}),
        takeovers: m.takeovers,
        ...(m.exitWatch ? { exit_watch: m.exitWatch } : {}),
        ...(m.lastTakeover ? { last_takeover: m.lastTakeover } : {}),
      },
    };
  }

  /** The whole desired state (what a snapshot carries). */
  state(): HaState {
    return { ...emptyState(), devices: { ...this.desired } };
  }

  /**
   * Ends the restore phase and connects. The desired state goes to the keeper as a snapshot
   * once it welcomes us (waiting at most startWaitMs), as the first step of the serial part:
   * so RPC can be served at once, and every change waits behind that snapshot. The keeper
   * runs every VF meanwhile (a vhostd restart is invisible to front-ends). Without a keeper
   * the snapshot goes out when it appears.
   */
  async start(): Promise<void> {
    this.restoring = false;
    this.mirror.listen();
    await this.client.connect();
    const t0 = performance.now();
    void this.serial(async () => {
      try {
        await withTimeout(this.client.hello(), this.opts.startWaitMs ?? 3000, "keeper did not welcome us");
      } catch (e) {
        this.log.warn({ event: "keeper_unavailable", err: (e as Error).message }, "keeper unavailable at start; changes fail until it is up, the state follows when it comes");
        return;
      }
      try {
        await this.sync("start");
        this.log.info({ event: "keeper_synced", devices: Object.keys(this.desired).length, ms: Math.round(performance.now() - t0) }, "keeper runs the journaled state");
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, "snapshot to the keeper failed; retried when the keeper is up again");
      }
    });
  }

  addPf(pf: string, switchId: number, kind: DeviceKind, uplinkTap?: string): Promise<void> {
    return this.change({ op: "put", table: "devices", key: pfKey(pf), value: pfRecordValue(pf, switchId, kind, uplinkTap) }, true);
  }

  async removePf(pf: string): Promise<void> {
    await this.mirror.removePf(pf); // if we run it since a takeover, it goes now, not at hand-back
    return this.change({ op: "del", table: "devices", key: pfKey(pf) }, false);
  }

  open(vf: VfSpec): Promise<void> {
    return this.change({ op: "put", table: "devices", key: vfKey(vf.dev), value: vfRecordValue(vf) }, true);
  }

  async close(dev: string): Promise<void> {
    await this.mirror.closeVf(dev); // if we run it since a takeover, the session ends now
    return this.change({ op: "del", table: "devices", key: vfKey(dev) }, false);
  }

  async runtime(dev: string): Promise<VfRuntime | undefined> {
    if (this.closed) return undefined;
    if (this.mirror.runs(dev)) return this.mirror.runtime(dev); // we took over from a dead keeper
    try {
      const r = await this.runtimes.call({ method: "runtime", dev });
      return r === null || r === undefined ? undefined : (r as VfRuntime);
    } catch {
      return undefined; // keeper restarting: runtime unknown for a moment
    }
  }

  /** The switch's table from whoever runs the PF's VFs now (undefined while the keeper restarts). */
  async fdb(switchId: number): Promise<FdbRow[] | undefined> {
    if (this.closed) return undefined;
    if (this.mirror.runsSwitch(switchId)) return this.mirror.fdb(switchId);
    try {
      const r = await this.runtimes.call({ method: "fdb", switchId });
      return Array.isArray(r) ? (r as FdbRow[]) : undefined;
    } catch {
      return undefined;
    }
  }

  /** vhostd stops; the keeper keeps running every VF (that is the point). */
  async shutdown(): Promise<void> {
    this.closed = true;
    await this.chain.catch(() => undefined);
    this.client.close();
    this.runtimes.close();
    await this.mirror.close();
  }

  /* ---------------------------------------------------------------------- internals */

  /**
   * Applies one op to the desired state and to the keeper. A put that fails is taken back
   * (the registry will not journal it); a del stays (the registry removes anyway) and reaches
   * the keeper with the next snapshot.
   *
   * The desired state and the delta's seq follow call order (the serial part), but the
   * keeper's answer is awaited outside it: concurrent changes (adds from several RPC clients)
   * travel together and the keeper journals them in one flush.
   */
  private async change(op: HaOp, revertOnFailure: boolean): Promise<void> {
    let had = false;
    let prev: unknown;
    const revert = () => {
      // Only if nothing changed the key since: a later change of it must not be undone.
      if (!revertOnFailure || this.desired[op.key] !== op.value) return;
      if (had) this.desired[op.key] = prev;
      else delete this.desired[op.key];
    };
    const sent = await this.serial(async () => {
      had = Object.hasOwn(this.desired, op.key);
      prev = this.desired[op.key];
      if (op.op === "put") this.desired[op.key] = op.value;
      else delete this.desired[op.key];
      if (this.restoring) return undefined;
      if (this.closed || !this.client.keeperUp) {
        revert();
        this.needSync = true;
        throw new VfeError(LinuxErrno.EAGAIN, "keeper unavailable: vfe-vhostd-ha is not connected (is it running?)");
      }
      try {
        if (this.needSync) await this.sync("before a change");
      } catch (e) {
        revert();
        this.needSync = true;
        throw keeperError(e);
      }
      return { acked: this.client.send([op]) }; // wrapped: not awaited inside the serial part
    });
    if (!sent) return;
    try {
      await sent.acked;
    } catch (e) {
      revert();
      this.needSync = true;
      // The keeper answered (it refused): bring it back in step with the desired state before
      // answering. A keeper that did not answer gets the snapshot when it is up again
      // (keeper_up), so the RPC's answer is never delayed by a second timeout.
      if (e instanceof HaSyncError && e.code === "apply_failed") await this.serial(() => this.sync("after a refused change")).catch(() => undefined);
      throw keeperError(e);
    }
  }

  private async sync(why: string): Promise<void> {
    if (this.closed || this.client.fenced) return;
    if (!this.needSync) return;
    await this.client.sendSnapshot(this.state());
    this.needSync = false;
    this.log.debug({ why, devices: Object.keys(this.desired).length }, "desired state pushed to the keeper");
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    );
  });
}

/** One persistent connection to the keeper socket; requests pipelined, matched by id. */
class RuntimeClient {
  private sock: Socket | null = null;
  private buf = "";
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly timeoutMs: number,
  ) {}

  call(req: Record<string, unknown>): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error("closed"));
    const id = this.nextId++;
    const sock = this.connection();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`keeper socket: no answer in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      sock.write(JSON.stringify({ id, ...req }) + "\n");
    });
  }

  close(): void {
    this.closed = true;
    this.drop(new Error("closed"));
  }

  private connection(): Socket {
    if (this.sock) return this.sock;
    const s = createConnection(this.path);
    s.setEncoding("utf8");
    s.unref();
    s.on("data", (d: string) => this.onData(d));
    s.on("error", (e) => this.drop(e));
    s.on("close", () => this.drop(new Error("keeper socket closed")));
    this.sock = s;
    return s;
  }

  private onData(d: string): void {
    this.buf += d;
    if (this.buf.length > KEEPER_MAX_LINE_BYTES) {
      this.drop(new Error("keeper socket: reply too long"));
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let msg: { id?: unknown; result?: unknown; error?: unknown };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue;
      }
      const w = typeof msg.id === "number" ? this.pending.get(msg.id) : undefined;
      if (!w) continue;
      this.pending.delete(msg.id as number);
      clearTimeout(w.timer);
      if (typeof msg.error === "string") w.reject(new Error(msg.error));
      else w.resolve(msg.result);
    }
  }

  private drop(err: Error): void {
    const s = this.sock;
    this.sock = null;
    this.buf = "";
    if (s && !s.destroyed) s.destroy();
    for (const [id, w] of this.pending) {
      this.pending.delete(id);
      clearTimeout(w.timer);
      w.reject(err);
    }
  }
}
