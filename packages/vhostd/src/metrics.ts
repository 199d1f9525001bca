// OpenMetrics (Prometheus) text for operators: per-VF and per-queue counters, session state,
// recovery events and daemon health. Off by default; `vfe-vhostd --metrics ADDR` serves
// GET /metrics on a loopback TCP port (127.0.0.1:PORT, [::1]:PORT, localhost:PORT) or a unix
// socket (unix:/path, 0600). Anything else is refused at start: counters of every VM must not
// be one misconfiguration away from the network.
import fs from "node:fs";
import { createServer, type Server } from "node:http";
import type { Logger } from "pino";
import { serveUnix } from "@vhostd/native";
import type { VfRuntime, VfSpec } from "@vhostd/runtime";

export type MetricsAddress = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

export const OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/** Parses --metrics; throws with the reason when the address is not loopback or unix. */
export function parseMetricsAddress(s: string): MetricsAddress {
  if (s.startsWith("unix:")) {
    const path = s.slice(5);
    if (!path.startsWith("/") || path.length > 107) throw new Error(`--metrics ${s}: a unix socket needs an absolute path of at most 107 bytes`);
    return { kind: "unix", path };
  }
  const m = /^(127\.0\.0\.1|localhost|\[::1\]):(\d{1,5})$/.exec(s);
  if (!m) throw new Error(`--metrics ${s}: only 127.0.0.1:PORT, [::1]:PORT, localhost:PORT or unix:/path are allowed (metrics stay on this host)`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new Error(`--metrics ${s}: port out of range`);
  return { kind: "tcp", host: m[1] === "[::1]" ? "::1" : m[1]!, port };
}

export interface MetricsSource {
  version: string;
  mode: "ha" | "standalone";
  epoch: number;
  pfs(): number;
  vfs(): VfSpec[];
  runtime(dev: string): Promise<VfRuntime | undefined>;
  /** ha status (ha mode). */
  ha?: () => Promise<Record<string, unknown>>;
  restoredVfs: number;
  startedAt: number;
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

class Writer {
  private out: string[] = [];
  family(name: string, type: "counter" | "gauge", help: string): void {
    this.out.push(`# TYPE ${name} ${type}`, `# HELP ${name} ${help}`);
  }
  sample(name: string, labels: Record<string, string | number>, value: number): void {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${esc(String(v))}"`);
    this.out.push(`${name}${l.length ? `{${l.join(",")}}` : ""} ${Number.isFinite(value) ? value : 0}`);
  }
  text(): string {
    return this.out.join("\n") + "\n# EOF\n";
  }
}

const QUEUE_COUNTERS = [
  ["packets", "frames taken from (tx) or given to (rx) the front-end"],
  ["bytes", "bytes of those frames"],
  ["drops", "frames lost at the queue (no buffer, stopped, offload not negotiated)"],
  ["kicks", "notifications from the front-end"],
  ["calls", "interrupts signalled to the front-end"],
  ["errors", "malformed descriptor chains rejected"],
] as const;

export async function renderMetrics(src: MetricsSource): Promise<string> {
  const w = new Writer();
  w.family("vhostd_build_info", "gauge", "vfe-vhostd version and mode (always 1)");
  w.sample("vhostd_build_info", { version: src.version, mode: src.mode }, 1);
  w.family("vhostd_start_time_seconds", "gauge", "when vfe-vhostd started (unix time)");
  w.sample("vhostd_start_time_seconds", {}, Math.round(src.startedAt / 1000));
  w.family("vhostd_epoch", "gauge", "vfe-vhostd's epoch, bumped at every start");
  w.sample("vhostd_epoch", {}, src.epoch);
  w.family("vhostd_restored_vfs", "gauge", "VFs restored from the journal at the last start");
  w.sample("vhostd_restored_vfs", {}, src.restoredVfs);
  w.family("vhostd_pfs", "gauge", "PFs added");
  w.sample("vhostd_pfs", {}, src.pfs());
  const specs = src.vfs();
  w.family("vhostd_vfs", "gauge", "VFs added");
  w.sample("vhostd_vfs", {}, specs.length);
  const rts = await Promise.all(specs.map((s) => src.runtime(s.dev)));
  w.family("vhostd_vf_connected", "gauge", "1 while a front-end is connected to the VF");
  specs.forEach((s, i) => w.sample("vhostd_vf_connected", { vf: s.dev, pf: s.pf }, rts[i]?.connected ? 1 : 0));
  w.family("vhostd_vf_running", "gauge", "1 while the VF's datapath runs");
  specs.forEach((s, i) => w.sample("vhostd_vf_running", { vf: s.dev, owner: rts[i]?.owner ?? "" }, rts[i]?.state === "running" ? 1 : 0));
  w.family("vhostd_vf_reconnects", "counter", "front-end connections after the first");
  specs.forEach((s, i) => w.sample("vhostd_vf_reconnects_total", { vf: s.dev }, rts[i]?.reconnects ?? 0));
  for (const [c, help] of QUEUE_COUNTERS) {
    w.family(`vhostd_queue_${c}`, "counter", help);
    specs.forEach((s, i) => {
      for (const q of rts[i]?.queues ?? []) if (q.size > 0) w.sample(`vhostd_queue_${c}_total`, { vf: s.dev, queue: q.index, dir: q.index % 2 === 0 ? "rx" : "tx" }, q[c]);
    });
  }
  // Port security (net TX queues): frames dropped, and frames forwarded with their source unlearned.
  for (const [c, help] of [
    ["spoofed", "frames dropped by port security: source MAC not the VF's, or its forwarding-table share full"],
    ["unlearned", "frames forwarded without learning their source (a trusted VF's forwarding-table share full)"],
  ] as const) {
    w.family(`vhostd_queue_${c}`, "counter", help);
    specs.forEach((s, i) => {
      for (const q of rts[i]?.queues ?? []) if (q.size > 0 && q[c] !== undefined) w.sample(`vhostd_queue_${c}_total`, { vf: s.dev, queue: q.index, dir: "tx" }, q[c]!);
    });
  }
  const ha = await src.ha?.().catch(() => undefined);
  if (ha) {
    const k = ha.keeper as Record<string, unknown> | undefined;
    const m = ha.mirror as Record<string, unknown> | undefined;
    w.family("vhostd_keeper_connected", "gauge", "1 while the keeper vfe-vhostd-ha is connected");
    w.sample("vhostd_keeper_connected", {}, k?.connected ? 1 : 0);
    w.family("vhostd_keeper_reconnects", "counter", "times the keeper came back after being down (vfe-vhostd's view, since it started)");
    w.sample("vhostd_keeper_reconnects_total", {}, Number(k?.reconnects ?? 0));
    w.family("vhostd_keeper_heartbeat_age_seconds", "gauge", "time since the keeper was last heard from");
    w.sample("vhostd_keeper_heartbeat_age_seconds", {}, typeof k?.heartbeat_age_ms === "number" ? k.heartbeat_age_ms / 1000 : NaN);
    w.family("vhostd_mirror_copies", "gauge", "VF sessions vfe-vhostd holds as the keeper's hot standby");
    w.sample("vhostd_mirror_copies", {}, Number(m?.copies ?? 0));
    w.family("vhostd_mirror_fds", "gauge", "fds in those copies");
    w.sample("vhostd_mirror_fds", {}, Number(m?.fds_held ?? 0));
    w.family("vhostd_takeovers", "counter", "times vfe-vhostd adopted the keeper's sessions (keeper died or handed over)");
    w.sample("vhostd_takeovers_total", {}, Number(m?.takeovers ?? 0));
    w.family("vhostd_vfs_run_by_vhostd", "gauge", "VFs vfe-vhostd runs itself since a takeover");
    w.sample("vhostd_vfs_run_by_vhostd", {}, Array.isArray(m?.running) ? m.running.length : 0);
  }
  return w.text();
}

export class MetricsServer {
  private server: Server | undefined;

  constructor(
    private readonly addr: MetricsAddress,
    private readonly src: MetricsSource,
    private readonly log: Logger,
  ) {}

  async listen(): Promise<void> {
    const server = createServer((req, res) => {
      // Scrapers only GET; anything else is refused by name (405), not as a missing page.
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("GET /metrics\n");
        return;
      }
      const path = (req.url ?? "").split("?")[0];
      if (path !== "/metrics" && path !== "/") {
        res.writeHead(404, { "content-type": "text/plain" }).end("GET /metrics\n");
        return;
      }
      renderMetrics(this.src).then(
        (text) => res.writeHead(200, { "content-type": OPENMETRICS_CONTENT_TYPE, "content-length": Buffer.byteLength(text) }).end(req.method === "HEAD" ? undefined : text),
        (e: Error) => {
          this.log.error({ err: e.message }, "metrics rendering failed");
          res.writeHead(500, { "content-type": "text/plain" }).end("error\n");
        },
      );
    });
    server.maxConnections = 16;
    server.requestTimeout = 10_000;
    // A unix socket is created 0600 by the native bind, which replaces only a dead socket (not
    // whatever file an operator's path names) and follows no symlink; Node serves the fd.
    if (this.addr.kind === "unix") await serveUnix(server, this.addr.path);
    else {
      const { port, host } = this.addr;
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolve();
        });
      });
    }
    this.server = server;
    this.log.info({ metrics: this.addr }, "metrics served (OpenMetrics, GET /metrics)");
  }

  close(): void {
    this.server?.close();
    if (this.addr.kind === "unix") {
      try {
        fs.unlinkSync(this.addr.path);
      } catch {
        /* gone */
      }
    }
  }
}
