// The drill's control-plane access: vfe-vhost-cli argument lists turned into RPC calls by the
// CLI's own parser and client (so the drill speaks exactly what an operator types, schema
// checks included), without spawning a node process per call: a spawned CLI costs ~0.3 s on a
// busy host, which would swamp the recovery times the drill measures.
import { join } from "node:path";
import { createConnection } from "node:net";
import { RPC_SOCKET_NAME } from "@vhostd/proto";
import { native } from "@vhostd/native";
import { parseArgs } from "../cli/args.js";
import { call } from "../cli/client.js";
import { keeperSocketPath } from "@vhostd/runtime";

/** An RPC answered with errno != 0 or a JSON-RPC error. */
export class RpcError extends Error {
  constructor(
    message: string,
    readonly errno?: number,
  ) {
    super(message);
    this.name = "RpcError";
  }
}

/**
 * `vf -l` fields that follow the front-end (negotiation, connection), not the configuration:
 * left out when the drill asks "is the configuration the same?".
 */
export const VF_RUNTIME_FIELDS: ReadonlySet<string> = new Set(["state", "connected", "reconnects", "configured", "last_error", "queue_size", "device_feature", "mac_locked"]);

export const HA_UNKNOWN = "Not Known Due to HA Disconnected";

export function rpcSocket(runDir: string): string {
  return join(runDir, RPC_SOCKET_NAME);
}

/**
 * One RPC written as CLI arguments (e.g. ["vf", "-i", DEV]); resolves with the result object.
 * Rejects with RpcError when the daemon answered with an error, with ConnectError (from the
 * CLI client) when it could not be reached.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function rpc(runDir: string, argv: string[], timeoutMs = 5000): Promise<any> {
  const p = parseArgs(argv, {});
  if (p.kind !== "call") throw new Error(`drill: ${argv.join(" ")} is not an RPC`);
  const resp = await call(rpcSocket(runDir), p.method, Object.keys(p.params).length ? p.params : undefined, timeoutMs);
  if ("error" in resp) throw new RpcError(`${argv.join(" ")}: ${resp.error.message}`);
  const r = resp.result as Record<string, unknown>;
  if (typeof r.errno === "number" && r.errno !== 0) throw new RpcError(`${argv.join(" ")}: ${String(r.errstr)}${r.detail ? `: ${String(r.detail)}` : ""}`, r.errno);
  return r;
}

/** `version` answers, and (haExpected) reports a connected keeper. Never throws. */
export async function controlPlaneUp(runDir: string, haExpected: boolean): Promise<boolean> {
  try {
    const v = await rpc(runDir, ["version"], 1000);
    return !haExpected || (typeof v["vfe-vhostd-ha version"] === "string" && v["vfe-vhostd-ha version"] !== HA_UNKNOWN);
  } catch {
    return false;
  }
}

/**
 * HA: vfe-vhostd holds a copy of every session the keeper runs (its mirror reconnected and
 * pushed them), so a keeper kill from now on is adopted. A restarted vfe-vhostd answers RPC
 * before that.
 */
export async function mirrorComplete(runDir: string): Promise<boolean> {
  try {
    const s = await rpc(runDir, ["ha", "status"], 1000);
    return s.keeper?.connected === true && s.mirror?.connected === true && typeof s.keeper.vfs === "number" && s.mirror.copies === s.keeper.vfs;
  } catch {
    return false;
  }
}

/**
 * Polls until the control plane is whole again; resolves with the ms since t0, or undefined
 * after limitMs. HA: `version` must report a connected keeper, and `vf -i probeVf` must get
 * the VF's runtime from it: right after a keeper kill vfe-vhostd may not have noticed yet
 * (heartbeat timeout), and a stale "connected" must not count as recovered.
 */
export async function waitControlPlane(runDir: string, ha: boolean, probeVf: string, t0: number, limitMs: number, abort?: { aborted: boolean }): Promise<number | undefined> {
  while (Date.now() - t0 < limitMs && !abort?.aborted) {
    if (await controlPlaneUp(runDir, ha)) {
      if (!ha) return Date.now() - t0;
      const r = await rpc(runDir, ["vf", "-i", probeVf], 1000).catch(() => undefined);
      if (r && r.device?.state !== "unknown") return Date.now() - t0;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return undefined;
}

/** One request on the keeper's inspection socket (newline-delimited JSON). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function keeperCall(runDir: string, req: Record<string, unknown>, timeoutMs = 1000): Promise<any> {
  return new Promise((resolve, reject) => {
    const s = createConnection(keeperSocketPath(runDir));
    let buf = "";
    const t = setTimeout(() => (s.destroy(), reject(new Error("keeper socket: timeout"))), timeoutMs);
    s.setEncoding("utf8");
    s.on("error", (e) => (clearTimeout(t), reject(e)));
    s.on("connect", () => s.write(JSON.stringify({ id: 1, ...req }) + "\n"));
    s.on("data", (d: string) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(t);
      s.destroy();
      try {
        const msg = JSON.parse(buf.slice(0, nl));
        if (msg.error) reject(new Error(String(msg.error)));
        else resolve(msg.result);
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

/**
 * The pid of the process serving a unix socket, from the kernel (SO_PEERCRED: the
 * credentials the listener had at listen()), so a stale pid file cannot mislead us.
 * undefined when nobody serves it.
 */
export function socketOwnerPid(path: string): number | undefined {
  let fd = -1;
  try {
    fd = native.unixConnect(path);
    return native.peerCred(fd).pid;
  } catch {
    return undefined;
  } finally {
    if (fd >= 0) native.closeFd(fd);
  }
}
