// vfe-vhostd: wires paths, logging, inventory, the journal, the VfHost, the registry and the
// RPC server together, and takes them down cleanly.
//
// Start order (restore configuration before serving a socket):
//   1. refuse early if another vfe-vhostd serves this run dir (before touching the journal:
//      a second daemon must neither bump the epoch nor open anybody's VF sockets);
//   2. open the journal and read + validate every record (a newer format refuses to start,
//      leaving the journal untouched; a corrupt record is logged by key and skipped);
//   3. bump the epoch durably (the keeper rejects a stale one);
//   4. restore every PF, then every VF, through the registry and the VfHost;
//   5. only then serve RPC. (HA: the snapshot of the restored state goes to the keeper as the
//      first step of KeeperVfHost's serial part, so every change waits behind it; the keeper
//      runs every VF throughout.)
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import {
  LinuxErrno,
  RPC_PROTOCOL,
  VfeError,
  featureObject,
  ok,
  type VfDeviceResult,
  type VfInfoResult,
  type PfDeviceResult,
} from "@vhostd/proto";
import { loadConfig } from "./config.js";
import { Inventory } from "./inventory.js";
import { createLogger, createVfHost, notifyReady, notifyStopping, portSecurityOf, resolvePaths, startWatchdog, VF_SOCKET_PREFIX, type Paths, type SocketMode, type VfHost, type VfRuntime, type VfSpec, type Watchdog } from "@vhostd/runtime";
import { Journal } from "./journal.js";
import { Registry, type PfEntry } from "./registry.js";
import { RpcServer, prepareSocketPath, type Handler } from "./rpc_server.js";
import { KeeperVfHost } from "./keeper_host.js";
import { MetricsServer, parseMetricsAddress } from "./metrics.js";
import type { LevelWithSilent } from "pino";

export interface DaemonOptions {
  runDir?: string;
  stateDir?: string;
  configFile?: string;
  /** New VFs default to server mode (vhostd listens). */
  server?: boolean;
  logLevel?: LevelWithSilent;
  /** Default VF socket prefix (vfe-vhostd --iface); default <run-dir>/vf-. */
  iface?: string;
  log?: Logger;
  /** Tests inject a fake host; default the engine host of @vhostd/runtime. */
  hostFactory?: (opts: { log: Logger; runDir: string }) => VfHost;
  /** Keeper versions for `version` (undefined when no keeper is connected). */
  haInfo?: () => { version: string; buildTime: string } | undefined;
  /** HA phase 1 (vfe-vhostd --ha): the keeper runs every VF; vhostd only decides. */
  ha?: boolean;
  /** Serve OpenMetrics text here (vfe-vhostd --metrics); off when absent. */
  metrics?: string;
  env?: NodeJS.ProcessEnv;
}

export interface VersionInfo {
  version: string;
  buildTime: string;
}

export function daemonVersion(): VersionInfo {
  let version = "0.0.0";
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
    version = pkg.version ?? version;
  } catch {
    /* keep default */
  }
  let buildTime = "unknown";
  try {
    buildTime = statSync(fileURLToPath(import.meta.url)).mtime.toISOString();
  } catch {
    /* keep default */
  }
  return { version: `vhostd ${version}`, buildTime };
}

/* ----------------------------- result builders --------------------------------------- */

function parseFeatures(s: string | undefined): bigint {
  if (!s) return 0n;
  try {
    return BigInt(/^[0-9a-fA-F]+$/.test(s) && !/^\d+$/.test(s) ? "0x" + s : s);
  } catch {
    return 0n;
  }
}

export function vfDeviceResult(spec: VfSpec, rt: VfRuntime | undefined): VfDeviceResult {
  const net = spec.kind === "net";
  const d: VfDeviceResult = {
    vf: spec.dev,
    pf: spec.pf,
    type: spec.kind,
    probed: true,
    msix_num: net ? 2 * spec.queuePairs + 2 : spec.queuePairs + 1,
    queue_num: net ? 2 * spec.queuePairs : spec.queuePairs,
    queue_size: rt?.queues.find((q) => q.size > 0)?.size ?? 256,
    device_feature: featureObject(parseFeatures(rt?.features)),
    mtu: spec.mtu,
    mac: spec.mac.toUpperCase(),
    vm_uuid: spec.uuid ?? "",
    socket_file: spec.socketPath,
    configured: rt?.state === "running",
    mode: spec.mode,
    queue_pairs: spec.queuePairs,
    dev_id: spec.devId,
    switch_id: spec.switchId,
    state: rt?.state ?? "unknown",
    connected: rt?.connected ?? false,
    reconnects: rt?.reconnects ?? 0,
  };
  if (spec.disk) {
    d.disk = spec.disk.path;
    d.disk_size = spec.disk.size;
    d.readonly = spec.disk.readonly;
    d.direct = spec.disk.direct;
    if (rt?.writeback !== undefined) d.write_back = rt.writeback;
  }
  if (net) {
    const ps = portSecurityOf(spec);
    d.spoofchk = ps.spoofchk;
    d.trust = ps.trust;
    d.mac_admin = ps.macAdmin;
    d.mac_locked = (rt?.lockedMac ?? (ps.macAdmin ? spec.mac : "")).toUpperCase();
  }
  if (rt?.lastError) d.last_error = rt.lastError;
  return d;
}

export function vfInfoResult(spec: VfSpec, rt: VfRuntime | undefined): VfInfoResult {
  return {
    ...vfDeviceResult(spec, rt),
    features: "0x" + parseFeatures(rt?.features).toString(16),
    protocol_features: "0x" + parseFeatures(rt?.protocolFeatures).toString(16),
    queues: (rt?.queues ?? []).map(({ lastAvailIdx, ...q }) => ({ ...q, last_avail_idx: lastAvailIdx })),
  };
}

export function pfDeviceResult(e: PfEntry, debug: boolean): PfDeviceResult {
  const r: PfDeviceResult = { pf: e.info.dev, type: e.info.type, switch_id: e.switchId, vfs: e.vfs.size, num_vfs: e.info.numVfs, first_vf: e.info.firstVf };
  if (debug) {
    r.vf_stride = e.info.vfStride;
    r.first_vf_offset = e.info.firstVfOffset;
    r.mtu = e.info.mtu;
    r.queue_pairs = e.info.queuePairs;
    r.max_queue_pairs = e.info.maxQueuePairs;
  }
  return r;
}

/** The vfe-compatible method handlers over a registry. */
export function createHandlers(
  registry: Registry,
  version: VersionInfo,
  haInfo?: () => { version: string; buildTime: string } | undefined,
  haStatus: () => Promise<Record<string, unknown>> = async () => ({ mode: "standalone" }),
): Record<string, Handler> {
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  const num = (v: unknown) => (typeof v === "number" ? v : undefined);
  return {
    version: () => {
      const ha = haInfo?.();
      const unknown = "Not Known Due to HA Disconnected";
      return {
        "vfe-vhostd version": version.version,
        "vfe-vhostd build time": version.buildTime,
        "vfe-vhostd-ha version": ha?.version ?? unknown,
        "vfe-vhostd-ha build time": ha?.buildTime ?? unknown,
        protocol: { name: RPC_PROTOCOL.name, version: RPC_PROTOCOL.version, jsonrpc: RPC_PROTOCOL.jsonrpc },
        pid: process.pid,
        ...ok(),
      };
    },
    mgmtpf: async ({ action, values }) => {
      const dev = str(values.dev);
      switch (action) {
        case "add":
          await registry.addPf(dev!);
          return { ...ok() };
        case "remove":
          await registry.removePf(dev!);
          return { ...ok() };
        case "info": {
          const [pf] = registry.listPfs(dev);
          const rows = await registry.fdb(dev!);
          if (!rows) throw new VfeError(LinuxErrno.EAGAIN, "the switch's table is unknown now (the keeper is restarting); try again");
          const fdb = rows.map((r) => ({ mac: r.mac.toUpperCase(), port: r.vf, dev_id: r.devId, age_ms: r.ageMs, locked: r.pinned, admin: r.admin }));
          return { device: pfDeviceResult(pf!, values.debug === true), fdb, ...ok() };
        }
        default:
          return { devices: registry.listPfs(dev).map((e) => pfDeviceResult(e, values.debug === true)), ...ok() };
      }
    },
    vf: async ({ action, values }) => {
      switch (action) {
        case "add": {
          const spec = await registry.addVf({
            vfdev: str(values.vfdev)!,
            socket_file: str(values.socket_file),
            uuid: str(values.uuid),
            mode: str(values.mode) as SocketMode | undefined,
            queue_pairs: num(values.queue_pairs),
            mac: str(values.mac),
            mtu: num(values.mtu),
            disk: str(values.disk),
            disk_size: num(values.disk_size),
            readonly: typeof values.readonly === "boolean" ? values.readonly : undefined,
            direct: typeof values.direct === "boolean" ? values.direct : undefined,
            spoofchk: typeof values.spoofchk === "boolean" ? values.spoofchk : undefined,
            trust: typeof values.trust === "boolean" ? values.trust : undefined,
          });
          return { device: vfDeviceResult(spec, await registry.runtimeAsync(spec.dev)), ...ok() };
        }
        case "remove":
          await registry.removeVf(str(values.vfdev)!);
          return { ...ok() };
        case "list":
          return { devices: await Promise.all(registry.listVfs(str(values.mgmtpf)!).map(async (s) => vfDeviceResult(s, await registry.runtimeAsync(s.dev)))), ...ok() };
        default: {
          const spec = registry.getVf(str(values.vfdev)!);
          return { device: vfInfoResult(spec, await registry.runtimeAsync(spec.dev)), ...ok() };
        }
      }
    },
    state: async ({ values }) => {
      const dev = str(values.dev);
      // dev_id order: stable across restarts and config load (insertion order is not).
      const specs = dev ? [registry.getVf(dev)] : registry.allVfs().sort((a, b) => a.devId - b.devId);
      return { devices: await Promise.all(specs.map(async (s) => vfStateResult(s, await registry.runtimeAsync(s.dev)))), ...ok() };
    },
    ha: async () => ({ ...(await haStatus()), ...ok() }),
    stats: async ({ values }) => {
      const dev = str(values.dev);
      const interval = num(values.interval) ?? 0;
      const specs = dev ? [registry.getVf(dev)] : registry.allVfs().sort((a, b) => a.devId - b.devId);
      const sample = () => Promise.all(specs.map(async (s) => [s.dev, await registry.runtimeAsync(s.dev)] as const));
      const first = await sample();
      if (interval === 0) return { interval_ms: 0, devices: first.map(([d, rt]) => vfStatsResult(d, rt)), ...ok() };
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, interval));
      const second = await sample();
      const dt = (performance.now() - t0) / 1000;
      return { interval_ms: interval, devices: second.map(([d, rt], i) => vfStatsResult(d, rt, first[i]![1], dt)), ...ok() };
    },
  };
}

/** One VF for `stats`; with an earlier sample and the seconds between, rates too. */
export function vfStatsResult(dev: string, rt: VfRuntime | undefined, before?: VfRuntime, dt?: number): Record<string, unknown> {
  const queues = (rt?.queues ?? []).map((q) => {
    const b = before?.queues.find((x) => x.index === q.index);
    const rates = b && dt ? { pps: Math.round(Math.max(0, q.packets - b.packets) / dt), bps: Math.round((8 * Math.max(0, q.bytes - b.bytes)) / dt) } : {};
    return { index: q.index, dir: q.index % 2 === 0 ? "rx" : "tx", packets: q.packets, bytes: q.bytes, drops: q.drops, kicks: q.kicks, calls: q.calls, errors: q.errors, ...rates };
  });
  const sum = (dir: string, f: "packets" | "bytes" | "pps") => queues.filter((q) => q.dir === dir).reduce((s, q) => s + ((q as Record<string, number | string>)[f] as number ?? 0), 0);
  return {
    vf: dev,
    state: rt?.state ?? "unknown",
    rx_packets: sum("rx", "packets"),
    tx_packets: sum("tx", "packets"),
    rx_bytes: sum("rx", "bytes"),
    tx_bytes: sum("tx", "bytes"),
    drops: queues.reduce((s, q) => s + q.drops, 0),
    errors: queues.reduce((s, q) => s + q.errors, 0),
    ...(before && dt ? { rx_pps: sum("rx", "pps"), tx_pps: sum("tx", "pps") } : {}),
    queues,
  };
}

/** One VF for `state`: its spec and the live session as its runner reports it. */
export function vfStateResult(spec: VfSpec, rt: VfRuntime | undefined): Record<string, unknown> {
  const owner = rt?.owner ?? "";
  return {
    vf: spec.dev,
    pf: spec.pf,
    type: spec.kind,
    socket_file: spec.socketPath,
    mode: spec.mode,
    owner,
    state: rt?.state ?? "unknown",
    connected: rt?.connected ?? false,
    reconnects: rt?.reconnects ?? 0,
    features: rt?.features ?? "0x0",
    protocol_features: rt?.protocolFeatures ?? "0x0",
    memory_regions: (rt?.regions ?? []).map((r) => ({ guest_addr: r.guestAddr, size: r.size, user_addr: r.userAddr, mmap_offset: r.mmapOffset })),
    vrings: (rt?.queues ?? [])
      .filter((q) => q.size > 0)
      .map((q) => ({
        index: q.index,
        size: q.size,
        enabled: q.enabled,
        started: q.started,
        ...(q.desc ? { desc: q.desc, avail: q.avail, used: q.used } : {}),
        last_avail_idx: q.lastAvailIdx,
        owner: q.started ? owner : "",
        packets: q.packets,
        drops: q.drops,
      })),
    ...(rt?.lastError ? { last_error: rt.lastError } : {}),
  };
}

/* ------------------------------------ daemon ----------------------------------------- */

export class Daemon {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly paths: Paths,
    readonly log: Logger,
    readonly registry: Registry,
    readonly rpc: RpcServer,
    readonly journal: Journal,
    private readonly watchdog: Watchdog,
    private readonly metrics?: MetricsServer,
  ) {}

  static async start(opts: DaemonOptions = {}): Promise<Daemon> {
    const paths = resolvePaths({ runDir: opts.runDir, stateDir: opts.stateDir }, opts.env ?? process.env);
    const metricsAddr = opts.metrics ? parseMetricsAddress(opts.metrics) : undefined; // refuse a bad address before anything starts
    const log = opts.log ?? createLogger({ level: opts.logLevel ?? "info" });
    makeDir(paths.runDir);
    makeDir(paths.stateDir);

    const config = loadConfig(opts.configFile);
    const inventory = new Inventory(config);
    await prepareSocketPath(paths.rpcSocket);
    const defaultMode: SocketMode = opts.server ? "server" : "client";

    const journal = Journal.open(paths.journalDir);
    let host: VfHost | undefined;
    let haInfo = opts.haInfo;
    let keeperHost: KeeperVfHost | undefined;
    let metricsEpoch = 0;
    let restoredVfs = 0;
    let registry: Registry;
    let rpc: RpcServer;
    const version = daemonVersion();
    // systemd (Type=notify): watchdog pings from now on, READY=1 once restored and serving RPC.
    const watchdog = startWatchdog({ log });
    let ready = "";
    try {
      const t0 = performance.now();
      const contents = journal.read();
      for (const { key, error } of contents.errors) log.error({ event: "journal_record_unusable", key, err: error }, `journal record ${key} ignored: ${error}`);
      const epoch = await journal.bumpEpoch();
      metricsEpoch = epoch;
      let keeper: KeeperVfHost | undefined;
      if (opts.ha && !opts.hostFactory) {
        // HA phase 1: the keeper runs sessions and engine; a newer vhostd fencing us means exit.
        keeper = new KeeperVfHost({ runDir: paths.runDir, log: log.child({ component: "keeper" }), epoch, version: version.version.slice(0, 64) });
        keeper.on("fenced", () => {
          log.fatal({ event: "fenced", epoch }, "a newer vfe-vhostd took over the keeper: exiting");
          process.exit(1);
        });
        host = keeper;
        keeperHost = keeper;
        haInfo = opts.haInfo ?? (() => keeper!.keeperInfo());
      } else host = (opts.hostFactory ?? createVfHost)({ log: log.child({ component: "host" }), runDir: paths.runDir });
      registry = new Registry({
        inventory,
        host,
        log: log.child({ component: "registry" }),
        defaultMode,
        iface: opts.iface ?? `${paths.runDir}/${VF_SOCKET_PREFIX}`,
        reservedPaths: [paths.rpcSocket, paths.pidFile, paths.haPidFile],
        diskDir: join(paths.stateDir, "disks"),
        journal,
      });
      const r = await registry.restore(contents);
      restoredVfs = r.vfs.restored.length;
      await keeper?.start();
      log.info(
        {
          event: "restore_done",
          epoch,
          journal: paths.journalDir,
          pfs: r.pfs.restored.length,
          pfsFailed: r.pfs.failed.length,
          vfs: r.vfs.restored.length,
          vfsFailed: r.vfs.failed.length,
          vfsSkipped: r.vfs.skipped.length,
          unusableRecords: contents.errors.length,
          ms: Math.round((performance.now() - t0) * 100) / 100,
        },
        `restored ${r.pfs.restored.length} PF(s) and ${r.vfs.restored.length} VF(s) from the journal` +
          ` (${r.pfs.failed.length} PF(s) and ${r.vfs.failed.length + r.vfs.skipped.length} VF(s) failed, ${contents.errors.length} unusable record(s)) in ${Math.round(performance.now() - t0)} ms, epoch ${epoch}`,
      );
      ready = `serving RPC on ${paths.rpcSocket}; restored ${r.pfs.restored.length} PF(s), ${r.vfs.restored.length} VF(s), epoch ${epoch}`;
      rpc = new RpcServer({ path: paths.rpcSocket, handlers: createHandlers(registry, version, haInfo, keeperHost ? () => keeperHost!.haStatus() : undefined), log: log.child({ component: "rpc" }) });
      await rpc.listen();
    } catch (e) {
      watchdog.stop();
      await host?.shutdown().catch(() => undefined);
      await journal.close().catch(() => undefined);
      throw e;
    }
    // Whole or absent, never empty: a reader may look the moment the RPC socket appears.
    writeFileSync(`${paths.pidFile}.tmp`, `${process.pid}\n`, { mode: 0o644 });
    renameSync(`${paths.pidFile}.tmp`, paths.pidFile);
    log.info(
      {
        version: version.version,
        runDir: paths.runDir,
        stateDir: paths.stateDir,
        socket: paths.rpcSocket,
        config: opts.configFile ?? "(default)",
        pfs: inventory.allPfs().map((p) => `${p.dev} ${p.type} first VF ${p.firstVf} x${p.numVfs}`),
        defaultMode,
        ha: opts.ha === true,
      },
      "vfe-vhostd started",
    );
    let metrics: MetricsServer | undefined;
    if (opts.metrics) {
      metrics = new MetricsServer(
        metricsAddr!,
        {
          version: version.version,
          mode: keeperHost ? "ha" : "standalone",
          epoch: metricsEpoch,
          pfs: () => registry.listPfs().length,
          vfs: () => registry.allVfs(),
          runtime: (dev) => registry.runtimeAsync(dev),
          ...(keeperHost ? { ha: () => keeperHost!.haStatus() } : {}),
          restoredVfs,
          startedAt: Date.now(),
        },
        log.child({ component: "metrics" }),
      );
      try {
        await metrics.listen();
      } catch (e) {
        await rpc.close();
        throw new Error(`metrics: ${(e as Error).message}`);
      }
    }
    notifyReady(ready, log);
    return new Daemon(paths, log, registry, rpc, journal, watchdog, metrics);
  }

  /** Stops serving RPC, closes every session, removes the socket and the pid file. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info("vfe-vhostd stopping");
      notifyStopping("vfe-vhostd stopping", this.log);
      this.metrics?.close();
      await this.rpc.close();
      try {
        await this.registry.shutdown();
      } catch (e) {
        this.log.error({ err: (e as Error).message }, "shutdown of sessions failed");
      }
      // Shutdown is not removal: the journal keeps every device for the next start.
      await this.journal.close().catch((e: Error) => this.log.error({ err: e.message }, "closing the journal failed"));
      try {
        if (existsSync(this.paths.pidFile) && readFileSync(this.paths.pidFile, "utf8").trim() === String(process.pid)) unlinkSync(this.paths.pidFile);
      } catch {
        /* gone */
      }
      this.watchdog.stop();
      this.log.info("vfe-vhostd stopped");
    })();
    return this.stopping;
  }
}

/** mkdir -p with mode 0700 for what we create; existing directories are left as they are. */
function makeDir(dir: string): void {
  if (existsSync(dir)) return;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}
