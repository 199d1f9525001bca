// The management RPC server: JSON-RPC 2.0 on a unix socket (mode 0600).
//
// Framing: a request is one JSON object. Requests end with "\n" (what vfe-vhost-cli of
// vhostd sends); a bare object without newline is accepted too (what NVIDIA's python
// client sends: it writes one object, reads one reply, closes). Several requests per
// connection are answered in order. Each reply is one line.
//
// Untrusted input: requests over RPC_MAX_REQUEST_BYTES, malformed JSON, wrong types,
// unknown methods or params get a JSON-RPC error (with data.errno/errstr), never a crash;
// idle or slow connections are closed; connections are capped.
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { lstatSync, unlinkSync } from "node:fs";
import { serveUnix } from "@vhostd/native";
import type { Logger } from "pino";
import {
  JsonRpcCode,
  LinuxErrno,
  RPC_IDLE_TIMEOUT_MS,
  RPC_MAX_CONNECTIONS,
  RPC_MAX_REQUEST_BYTES,
  RpcParamError,
  VfeError,
  errstr,
  methodSpec,
  validateParams,
  type JsonRpcErrorObject,
  type JsonRpcId,
  type JsonRpcResponse,
  type MethodSpec,
  type ValidatedParams,
} from "@vhostd/proto";

export type Handler = (p: ValidatedParams) => Promise<Record<string, unknown>> | Record<string, unknown>;

export interface RpcServerOptions {
  path: string;
  /** One handler per schema method name; methods without a handler are "not found". */
  handlers: Record<string, Handler>;
  log: Logger;
  maxRequestBytes?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  /** Methods to serve (default: every method of the schema that has a handler). */
  lookup?: (name: string) => MethodSpec | undefined;
}

/** Most reply bytes queued for a client that does not read. */
const MAX_PENDING_WRITE = 1 << 20;

export class RpcServer {
  private server: Server | undefined;
  private readonly conns = new Set<Socket>();
  private readonly maxBytes: number;
  private readonly idleMs: number;
  private readonly maxConns: number;
  private readonly lookup: (name: string) => MethodSpec | undefined;
  private nextConn = 1;

  constructor(private readonly opts: RpcServerOptions) {
    this.maxBytes = opts.maxRequestBytes ?? RPC_MAX_REQUEST_BYTES;
    this.idleMs = opts.idleTimeoutMs ?? RPC_IDLE_TIMEOUT_MS;
    this.maxConns = opts.maxConnections ?? RPC_MAX_CONNECTIONS;
    this.lookup = opts.lookup ?? methodSpec;
  }

  get path(): string {
    return this.opts.path;
  }

  /** Binds the socket; a stale socket file is replaced, a live one is an error. */
  async listen(): Promise<void> {
    await prepareSocketPath(this.opts.path);
    const server = createServer({ allowHalfOpen: true }, (s) => this.onConnection(s));
    server.maxConnections = this.maxConns;
    // Created 0600 by the native bind (no process-wide umask, no chmod that could follow a
    // symlink); Node serves the listening fd.
    await serveUnix(server, this.opts.path);
    server.on("error", (e) => this.opts.log.error({ err: e.message }, "RPC server error"));
    server.on("drop", () => this.opts.log.warn({ max: this.maxConns }, "RPC connection refused: too many connections"));
    this.server = server;
    this.opts.log.info({ socket: this.opts.path }, "RPC listening");
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const c of this.conns) c.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    try {
      if (lstatSync(this.opts.path).isSocket()) unlinkSync(this.opts.path);
    } catch {
      /* already gone */
    }
  }

  private onConnection(sock: Socket): void {
    const id = this.nextConn++;
    const log = this.opts.log.child({ rpcConn: id });
    this.conns.add(sock);
    let buf = "";
    let bytes = 0;
    let chain: Promise<void> = Promise.resolve();
    let dead = false;
    let partialTimer: NodeJS.Timeout | undefined;

    const kill = (why: string) => {
      if (dead) return;
      dead = true;
      log.debug({ why }, "RPC connection closed");
      sock.destroy();
    };
    const send = (resp: JsonRpcResponse) => {
      if (dead) return;
      sock.write(JSON.stringify(resp) + "\n");
      if (sock.writableLength > MAX_PENDING_WRITE) kill("client does not read its replies");
    };
    const enqueue = (text: string) => {
      chain = chain.then(async () => {
        if (dead) return;
        const resp = await this.handleText(text, log);
        if (resp) send(resp);
      });
    };
    const armPartial = () => {
      // A request must be complete within 3 idle periods of its first byte (slow loris).
      if (buf.length > 0 && !partialTimer) partialTimer = setTimeout(() => kill("request not completed in time"), this.idleMs * 3);
      if (buf.length === 0 && partialTimer) {
        clearTimeout(partialTimer);
        partialTimer = undefined;
      }
    };
    const tooLarge = () => {
      send(errorResponse(null, JsonRpcCode.INVALID_REQUEST, `request larger than ${this.maxBytes} bytes`, LinuxErrno.E2BIG));
      log.warn({ limit: this.maxBytes }, "RPC request too large; connection closed");
      dead = true;
      buf = "";
      sock.end();
    };

    sock.setEncoding("utf8");
    sock.setTimeout(this.idleMs, () => kill("idle timeout"));
    sock.on("data", (chunk: string) => {
      if (dead) return;
      buf += chunk;
      bytes = Buffer.byteLength(buf);
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (Buffer.byteLength(line) > this.maxBytes) return tooLarge();
        if (line.trim().length > 0) enqueue(line);
      }
      bytes = Buffer.byteLength(buf);
      if (bytes > this.maxBytes) return tooLarge();
      // vfe's python client: one object, no newline.
      const t = buf.trim();
      if (t.startsWith("{") && t.endsWith("}")) {
        try {
          JSON.parse(t);
          enqueue(t);
          buf = "";
        } catch {
          /* incomplete; wait for more */
        }
      }
      armPartial();
    });
    sock.on("end", () => {
      // Client half-closed: answer what is complete, then end.
      if (!dead && buf.trim().length > 0) enqueue(buf);
      buf = "";
      armPartial();
      chain = chain.then(() => {
        if (!dead) sock.end();
      });
    });
    sock.on("error", (e) => log.debug({ err: e.message }, "RPC connection error"));
    sock.on("close", () => {
      dead = true;
      if (partialTimer) clearTimeout(partialTimer);
      this.conns.delete(sock);
    });
  }

  /** One request text -> its response (undefined for notifications). Never throws. */
  async handleText(text: string, log: Logger = this.opts.log): Promise<JsonRpcResponse | undefined> {
    let req: unknown;
    try {
      req = JSON.parse(text);
    } catch (e) {
      return errorResponse(null, JsonRpcCode.PARSE_ERROR, `Parse error: ${(e as Error).message.slice(0, 200)}`, LinuxErrno.EINVAL);
    }
    return this.handleRequest(req, log);
  }

  async handleRequest(req: unknown, log: Logger = this.opts.log): Promise<JsonRpcResponse | undefined> {
    if (Array.isArray(req)) return errorResponse(null, JsonRpcCode.INVALID_REQUEST, "batch requests are not supported", LinuxErrno.EINVAL);
    if (typeof req !== "object" || req === null) return errorResponse(null, JsonRpcCode.INVALID_REQUEST, "request must be a JSON object", LinuxErrno.EINVAL);
    const r = req as Record<string, unknown>;
    const hasId = Object.prototype.hasOwnProperty.call(r, "id");
    const rawId = r.id;
    const idOk = rawId === null || typeof rawId === "string" || (typeof rawId === "number" && Number.isFinite(rawId));
    const id: JsonRpcId = hasId && idOk ? (rawId as JsonRpcId) : null;
    if (hasId && !idOk) return errorResponse(null, JsonRpcCode.INVALID_REQUEST, "id must be a string, a number or null", LinuxErrno.EINVAL);
    if (typeof rawId === "string" && rawId.length > 256) return errorResponse(null, JsonRpcCode.INVALID_REQUEST, "id too long", LinuxErrno.EINVAL);
    if (r.jsonrpc !== "2.0") return errorResponse(id, JsonRpcCode.INVALID_REQUEST, 'jsonrpc must be "2.0"', LinuxErrno.EINVAL);
    if (typeof r.method !== "string") return errorResponse(id, JsonRpcCode.INVALID_REQUEST, "method must be a string", LinuxErrno.EINVAL);
    const method = r.method;
    const spec = Object.prototype.hasOwnProperty.call(this.opts.handlers, method) ? this.lookup(method) : undefined;
    const handler = spec ? this.opts.handlers[method] : undefined;
    if (!spec || !handler) {
      return hasId ? errorResponse(id, JsonRpcCode.METHOD_NOT_FOUND, `Method not found: ${method.slice(0, 64)}`, LinuxErrno.ENOSYS) : undefined;
    }
    let result: Record<string, unknown>;
    try {
      const p = validateParams(spec, r.params);
      result = await handler(p);
    } catch (e) {
      if (e instanceof RpcParamError) {
        log.info({ method, detail: e.detail }, "RPC invalid params");
        return hasId ? errorResponse(id, JsonRpcCode.INVALID_PARAMS, `Invalid params: ${e.detail}`, e.errno, e.detail) : undefined;
      }
      if (e instanceof VfeError) {
        log.info({ method, errno: e.errno, errstr: e.errstr, detail: e.detail }, `RPC ${method} failed: ${e.message}`);
        result = { ...e.fields() };
      } else {
        log.error({ method, err: (e as Error)?.stack ?? String(e) }, "RPC handler crashed");
        return hasId ? errorResponse(id, JsonRpcCode.INTERNAL_ERROR, "Internal error", LinuxErrno.EIO, (e as Error)?.message) : undefined;
      }
    }
    if (!hasId) return undefined; // notification
    return { jsonrpc: "2.0", id, result };
  }
}

export function errorResponse(id: JsonRpcId, code: number, message: string, errno: number, detail?: string): JsonRpcResponse {
  const n = -Math.abs(errno);
  const error: JsonRpcErrorObject = { code, message, data: { errno: n, errstr: errstr(n), ...(detail ? { detail } : {}) } };
  return { jsonrpc: "2.0", id, error };
}

/** Removes a stale socket at `path`; throws if a daemon answers there or it is not a socket. */
export async function prepareSocketPath(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; not touching it`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = createConnection(path);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
  if (alive) throw new Error(`another vfe-vhostd is already serving ${path}`);
  unlinkSync(path);
}
