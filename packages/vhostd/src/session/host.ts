// The VfHost that runs VFs for real: one native engine for the daemon, and per VF an
// endpoint (client or server), the live connection and its vhost-user session.
import type { Logger } from "pino";
import { counterIndex, native, type EngineEvent, type NativeEngine } from "@vhostd/native";
import type { VfHost, VfKind, VfRuntime, VfSpec } from "../vf_host.js";
import { VhostUserConnection } from "./connection.js";
import { ClientEndpoint, ServerEndpoint, type Endpoint } from "./endpoint.js";
import { NetModel } from "./net_model.js";
import { VhostSession } from "./session.js";

export interface VfHostOptions {
  log: Logger;
  runDir: string;
  /** Datapath worker threads (default 1, or VHOSTD_WORKERS). */
  workers?: number;
}

class HostError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

/** One VF's endpoint, connection and session. */
class VfSession {
  state: VfRuntime["state"] = "waiting";
  reconnects = 0;
  lastError: string | undefined;
  private conn: VhostUserConnection | null = null;
  private readonly endpoint: Endpoint;
  readonly session: VhostSession;
  private readonly log: Logger;
  private everConnected = false;

  constructor(
    readonly spec: VfSpec,
    private readonly engine: NativeEngine,
    parentLog: Logger,
  ) {
    this.log = parentLog.child({ vf: spec.dev, socket: spec.socketPath });
    const model = new NetModel(spec.mac, spec.mtu, spec.queuePairs);
    this.session = new VhostSession(spec.devId, model, engine, this.log, {
      reply: (req, payload) => this.conn?.reply(req, payload),
      fail: (reason) => this.conn?.close(reason, true),
    });
    const onConnected = (fd: number) => this.connected(fd);
    this.endpoint = spec.mode === "server" ? new ServerEndpoint(spec.socketPath, onConnected) : new ClientEndpoint(spec.socketPath, onConnected);
  }

  start(): void {
    this.state = this.spec.mode === "server" ? "waiting" : "connecting";
    this.endpoint.start();
    this.log.info({ mode: this.spec.mode }, `vhost-user endpoint up (${this.endpoint.description})`);
  }

  private connected(fd: number): void {
    if (this.everConnected) this.reconnects++;
    this.everConnected = true;
    this.state = "negotiating";
    this.log.info({ reconnects: this.reconnects }, "front-end connected");
    this.conn = new VhostUserConnection(fd, {
      onMessage: (msg) => {
        this.session.handle(msg);
        if (this.state === "negotiating" && this.session.vrings.some((v) => v.started)) this.state = "running";
      },
      onClose: (reason, violation) => this.disconnected(reason, violation),
    });
  }

  private disconnected(reason: string, violation: boolean): void {
    this.conn = null;
    this.session.reset();
    if (violation) this.lastError = reason;
    this.log[violation ? "error" : "info"]({ reason }, "front-end disconnected");
    if (this.state === "stopped") return;
    this.state = this.spec.mode === "server" ? "waiting" : "connecting";
    this.endpoint.start();
  }

  stop(): void {
    this.state = "stopped";
    this.endpoint.stop();
    this.conn?.close("VF removed", false);
    this.session.reset();
  }

  /** Reads the engine's shared counters for one queue (no native call). */
  private counters(queue: number) {
    const c = this.engine.counters;
    const at = (field: number) => Number(c[counterIndex(this.engine.maxQueues, this.spec.devId, queue, field)]);
    return { packets: at(0), bytes: at(1), drops: at(2), kicks: at(3), calls: at(4), errors: at(5) };
  }

  runtime(): VfRuntime {
    const s = this.session;
    return {
      state: this.state,
      connected: this.conn !== null,
      features: `0x${s.features.toString(16)}`,
      protocolFeatures: `0x${s.protocolFeatures.toString(16)}`,
      reconnects: this.reconnects,
      queues: s.vrings.map((v) => ({ index: v.index, size: v.num, enabled: v.enabled, started: v.started, lastAvailIdx: v.base, ...this.counters(v.index) })),
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }
}

export class EngineVfHost implements VfHost {
  readonly engine: NativeEngine;
  private readonly vfs = new Map<string, VfSession>();
  private readonly byDevId = new Map<number, VfSession>();
  /** TAP uplink fd per switch, owned here. */
  private readonly taps = new Map<number, number>();
  private readonly log: Logger;

  constructor(opts: VfHostOptions) {
    this.log = opts.log;
    const workers = opts.workers ?? (Number(process.env.VHOSTD_WORKERS) || 1);
    this.engine = new native.Engine({ workers }, (ev) => this.onEngineEvent(ev));
  }

  addPf(pf: string, switchId: number, kind: VfKind, uplinkTap?: string): void {
    if (kind !== "net") return;
    this.engine.addSwitch(switchId);
    if (uplinkTap) {
      let fd: number;
      try {
        fd = native.openTap(uplinkTap);
        this.engine.setSwitchUplink(switchId, fd);
      } catch (err) {
        this.engine.removeSwitch(switchId);
        throw new HostError(`uplink ${uplinkTap}: ${(err as Error).message}`, -19 /* ENODEV */);
      }
      this.taps.set(switchId, fd);
    }
    this.log.info({ pf, switchId, kind, uplink: uplinkTap }, "PF datapath ready");
  }

  removePf(pf: string, switchId: number, kind: VfKind): void {
    if (kind !== "net") return;
    const tap = this.taps.get(switchId);
    if (tap !== undefined) {
      this.engine.setSwitchUplink(switchId, -1);
      native.closeFd(tap); // the engine keeps no copy after detaching; the TAP device goes away
      this.taps.delete(switchId);
    }
    this.engine.removeSwitch(switchId);
  }

  open(spec: VfSpec): void {
    if (spec.kind !== "net") throw new HostError(`${spec.kind} VFs are not implemented yet`, -95 /* EOPNOTSUPP */);
    if (this.vfs.has(spec.dev)) throw new HostError(`VF ${spec.dev} is already open`, -17);
    this.engine.addNetDevice(spec.devId, { switchId: spec.switchId, mac: spec.mac, mtu: spec.mtu, maxQueuePairs: spec.queuePairs });
    const vf = new VfSession(spec, this.engine, this.log);
    try {
      vf.start();
    } catch (err) {
      this.engine.removeDevice(spec.devId);
      throw new HostError(`cannot serve ${spec.socketPath}: ${(err as Error).message}`, -5);
    }
    this.vfs.set(spec.dev, vf);
    this.byDevId.set(spec.devId, vf);
  }

  async close(dev: string): Promise<void> {
    const vf = this.vfs.get(dev);
    if (!vf) return;
    vf.stop();
    this.engine.removeDevice(vf.spec.devId);
    this.vfs.delete(dev);
    this.byDevId.delete(vf.spec.devId);
    this.log.info({ vf: dev, socket: vf.spec.socketPath }, "VF datapath released");
  }

  runtime(dev: string): VfRuntime | undefined {
    return this.vfs.get(dev)?.runtime();
  }

  session(dev: string): VhostSession | undefined {
    return this.vfs.get(dev)?.session;
  }

  async shutdown(): Promise<void> {
    for (const dev of [...this.vfs.keys()]) await this.close(dev);
    this.engine.close();
  }

  private onEngineEvent(ev: EngineEvent): void {
    const vf = this.byDevId.get(ev.devId);
    this.log.warn({ vf: vf?.spec.dev ?? `devId ${ev.devId}`, socket: vf?.spec.socketPath, queue: ev.queue, kind: ev.kind }, ev.reason);
  }
}

export function createVfHost(opts: VfHostOptions): EngineVfHost {
  return new EngineVfHost(opts);
}
