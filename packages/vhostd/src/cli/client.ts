// A one-shot JSON-RPC client on vfe-vhostd's unix socket: connect, send one request
// line, read one reply line, close.
import { createConnection } from "node:net";
import { RPC_MAX_REQUEST_BYTES, type JsonRpcResponse } from "@vhostd/proto";

/** The daemon could not be reached, or did not answer properly. */
export class ConnectError extends Error {
  constructor(
    message: string,
    readonly socketPath: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = "ConnectError";
  }
}

/** Most reply bytes accepted (a list of 2048 VFs fits easily). */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;

let nextId = 1;

export function call(socketPath: string, method: string, params: Record<string, unknown> | undefined, timeoutMs: number): Promise<JsonRpcResponse> {
  const id = nextId++;
  const req = JSON.stringify({ jsonrpc: "2.0", method, id, ...(params ? { params } : {}) });
  if (Buffer.byteLength(req) > RPC_MAX_REQUEST_BYTES) return Promise.reject(new ConnectError("request too large", socketPath));
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    let buf = "";
    let done = false;
    const finish = (err: Error | undefined, resp?: JsonRpcResponse) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(resp!);
    };
    const timer = setTimeout(() => finish(new ConnectError(`no reply from vfe-vhostd at ${socketPath} within ${timeoutMs / 1000} s`, socketPath, "ETIMEDOUT")), timeoutMs);
    sock.setEncoding("utf8");
    sock.on("connect", () => sock.write(req + "\n"));
    sock.on("data", (d: string) => {
      buf += d;
      if (buf.length > MAX_REPLY_BYTES) return finish(new ConnectError("reply too large", socketPath));
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      try {
        const resp = JSON.parse(buf.slice(0, nl)) as JsonRpcResponse;
        if (typeof resp !== "object" || resp === null || !("result" in resp || "error" in resp)) throw new Error("not a JSON-RPC response");
        finish(undefined, resp);
      } catch (e) {
        finish(new ConnectError(`bad reply from vfe-vhostd: ${(e as Error).message}`, socketPath));
      }
    });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      const hint = e.code === "ENOENT" || e.code === "ECONNREFUSED" ? " (is vfe-vhostd running?)" : "";
      finish(new ConnectError(`cannot connect to vfe-vhostd at ${socketPath}: ${e.code ?? e.message}${hint}`, socketPath, e.code));
    });
    sock.on("close", () => finish(new ConnectError(`vfe-vhostd at ${socketPath} closed the connection without a reply`, socketPath)));
  });
}
