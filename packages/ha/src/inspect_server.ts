// The keeper's inspection socket, <run-dir>/vfe-vhostd-ha.sock: how vfe-vhostd (and the drill)
// ask the keeper about the VFs it runs. The keeper answers; this file only serves the lines.
import { existsSync, unlinkSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import { serveUnix } from "@vhostd/native";
import { normalizePciAddr } from "@vhostd/proto";
import { KEEPER_MAX_LINE_BYTES } from "@vhostd/runtime";

/** True if something accepts connections on the unix socket at `path`. */
export function answers(path: string): Promise<boolean> {
  if (!existsSync(path)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const s = createConnection(path);
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}

const INSPECT_MAX_CONNECTIONS = 16;
const INSPECT_MAX_PENDING_WRITE = 4 << 20;

/**
 * <run-dir>/vfe-vhostd-ha.sock (0600): newline-delimited JSON, `{"id":N,"method":"runtime","dev":D}`
 * → `{"id":N,"result":VfRuntime|null}`; also "version" and "list". Untrusted input: lines over
 * 1 MiB, non-JSON, wrong fields and unknown methods get an error or the connection closed;
 * connections are capped; a client that does not read is dropped.
 */
export class InspectServer {
  private server: Server | undefined;
  private readonly conns = new Set<Socket>();

  constructor(
    readonly path: string,
    private readonly log: Logger,
    private readonly handler: (req: { method: string; dev?: string; switchId?: number }) => Promise<unknown>,
  ) {}

  async listen(): Promise<void> {
    if (existsSync(this.path)) unlinkSync(this.path); // stale: answers() said nobody serves it
    const server = createServer((s) => this.onConnection(s));
    server.maxConnections = INSPECT_MAX_CONNECTIONS;
    // Created 0600 by the native bind (no process-wide umask, no chmod that follows a symlink).
    await serveUnix(server, this.path);
    this.server = server;
  }

  close(): void {
    for (const c of this.conns) c.destroy();
    this.server?.close();
    try {
      unlinkSync(this.path);
    } catch {
      /* gone */
    }
  }

  private onConnection(s: Socket): void {
    this.conns.add(s);
    s.on("close", () => this.conns.delete(s));
    s.on("error", () => undefined);
    s.setEncoding("utf8");
    let buf = "";
    s.on("data", (d: string) => {
      buf += d;
      if (buf.length > KEEPER_MAX_LINE_BYTES) {
        this.log.warn({ bytes: buf.length }, "inspection socket: request too long; connection closed");
        s.destroy();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        void this.onLine(s, line);
      }
    });
  }

  private async onLine(s: Socket, line: string): Promise<void> {
    let id: number | null = null;
    let reply: Record<string, unknown>;
    try {
      const req = JSON.parse(line) as unknown;
      if (typeof req !== "object" || req === null || Array.isArray(req)) throw new Error("request is not an object");
      const r = req as Record<string, unknown>;
      if (typeof r.id === "number" && Number.isSafeInteger(r.id)) id = r.id;
      else throw new Error("id must be an integer");
      if (typeof r.method !== "string" || !["runtime", "version", "list", "fdb"].includes(r.method)) throw new Error("unknown method");
      let dev: string | undefined;
      if (r.method === "runtime") {
        dev = typeof r.dev === "string" ? normalizePciAddr(r.dev) : undefined;
        if (!dev) throw new Error("dev must be a PCI address");
      }
      let switchId: number | undefined;
      if (r.method === "fdb") {
        if (typeof r.switchId !== "number" || !Number.isInteger(r.switchId) || r.switchId < 0 || r.switchId > 0xffff) throw new Error("switchId must be an integer in 0..65535");
        switchId = r.switchId;
      }
      reply = { id, result: await this.handler({ method: r.method, ...(dev ? { dev } : {}), ...(switchId !== undefined ? { switchId } : {}) }) };
    } catch (e) {
      reply = { id, error: (e as Error).message.slice(0, 200) };
    }
    if (s.destroyed) return;
    if (s.writableLength > INSPECT_MAX_PENDING_WRITE) {
      s.destroy();
      return;
    }
    s.write(JSON.stringify(reply) + "\n");
  }
}
