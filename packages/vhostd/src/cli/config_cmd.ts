// `vfe-vhost-cli config save [-f FILE]` and `config load FILE`: the whole live configuration as
// replayable JSON (as SPDK's save_config), built from and replayed through the same RPC calls an
// operator would make, so a saved file is also a readable record of those calls.
//
// File format (version 1):
//   { "vhostd_config": 1,
//     "pfs": [ { "dev": "0000:af:00.2" } ],
//     "vfs": [ { "vfdev": "0000:af:04.5", "socket_file": "...", "mode": "client",
//                "queue_pairs": 1, "mac": "52:54:00:...", "mtu": 1500, "uuid": "..." } ] }
// Load adds PFs first, then VFs. An entry identical to what runs is left alone (so loading
// the same file twice changes nothing); a different one is reported as an error, never replaced.
import fs from "node:fs";
import { join } from "node:path";
import { RPC_SOCKET_NAME, type JsonRpcResponse } from "@vhostd/proto";
import { UsageError, type GlobalOptions } from "./args.js";
import { call, ConnectError } from "./client.js";
import { formatJson, renderTable } from "./format.js";

export const CONFIG_FORMAT_VERSION = 1;

interface SavedVf {
  vfdev: string;
  socket_file: string;
  mode: string;
  queue_pairs: number;
  mac: string;
  mtu: number;
  uuid?: string;
  /** blk VFs: the backing (mac and mtu are then not sent: they do not apply). */
  disk?: string;
  disk_size?: number;
  readonly?: boolean;
  direct?: boolean;
}

export interface SavedConfig {
  vhostd_config: number;
  pfs: Array<{ dev: string }>;
  vfs: SavedVf[];
}

export function configUsage(): string {
  return "usage: vfe-vhost-cli config {save [-f FILE] | load FILE} [-o {json,table}]";
}

class RpcFailure extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

async function rpc(g: GlobalOptions, method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
  const socketPath = g.socket ?? join(g.runDir ?? "/run/vhostd", RPC_SOCKET_NAME);
  const resp: JsonRpcResponse = await call(socketPath, method, params, g.timeoutS * 1000);
  if ("error" in resp) throw new RpcFailure(resp.error.message, resp.error.data?.errno ?? -22);
  const r = resp.result as Record<string, unknown>;
  if (typeof r.errno === "number" && r.errno !== 0) throw new RpcFailure(`${String(r.errstr)}${r.detail ? `: ${String(r.detail)}` : ""}`, r.errno);
  return r;
}

/** The live configuration, in load order. */
export async function saveConfig(g: GlobalOptions): Promise<SavedConfig> {
  const pfs = ((await rpc(g, "mgmtpf", { list: true })).devices as Array<{ pf: string }>).map((p) => ({ dev: p.pf }));
  const vfs: SavedVf[] = [];
  for (const pf of pfs) {
    const list = (await rpc(g, "vf", { list: true, mgmtpf: pf.dev })).devices as Array<Record<string, unknown>>;
    for (const v of list) {
      vfs.push({
        vfdev: String(v.vf),
        socket_file: String(v.socket_file),
        mode: String(v.mode),
        queue_pairs: Number(v.queue_pairs),
        mac: String(v.mac).toLowerCase(),
        mtu: Number(v.mtu),
        ...(v.vm_uuid ? { uuid: String(v.vm_uuid) } : {}),
        ...(typeof v.disk === "string" ? { disk: v.disk, disk_size: Number(v.disk_size), readonly: v.readonly === true, direct: v.direct === true } : {}),
      });
    }
  }
  return { vhostd_config: CONFIG_FORMAT_VERSION, pfs, vfs };
}

/** Checks a file's contents before anything is applied. */
export function parseSavedConfig(text: string): SavedConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`not JSON: ${(e as Error).message}`);
  }
  const o = v as Partial<SavedConfig>;
  if (typeof o !== "object" || o === null || o.vhostd_config !== CONFIG_FORMAT_VERSION) throw new UsageError(`not a vhostd configuration (need "vhostd_config": ${CONFIG_FORMAT_VERSION})`);
  if (!Array.isArray(o.pfs) || !Array.isArray(o.vfs)) throw new UsageError('"pfs" and "vfs" must be arrays');
  if (o.pfs.length > 4096 || o.vfs.length > 65536) throw new UsageError("too many entries");
  for (const p of o.pfs) if (typeof p?.dev !== "string") throw new UsageError('every PF needs "dev"');
  for (const f of o.vfs) if (typeof f?.vfdev !== "string" || typeof f.socket_file !== "string") throw new UsageError('every VF needs "vfdev" and "socket_file"');
  return o as SavedConfig;
}

interface LoadItem {
  item: string;
  result: "added" | "unchanged" | "error";
  errno?: number;
  reason?: string;
}

/** Applies a configuration: PFs, then VFs; identical entries are left alone. */
export async function loadConfig(g: GlobalOptions, cfg: SavedConfig, progress: (s: string) => void): Promise<LoadItem[]> {
  const out: LoadItem[] = [];
  const running = await saveConfig(g);
  const havePf = new Set(running.pfs.map((p) => p.dev));
  const haveVf = new Map(running.vfs.map((v) => [v.vfdev, v]));
  for (const p of cfg.pfs) {
    if (havePf.has(p.dev)) {
      out.push({ item: `mgmtpf ${p.dev}`, result: "unchanged" });
      continue;
    }
    try {
      await rpc(g, "mgmtpf", { add: true, dev: p.dev });
      out.push({ item: `mgmtpf ${p.dev}`, result: "added" });
    } catch (e) {
      out.push({ item: `mgmtpf ${p.dev}`, result: "error", errno: (e as RpcFailure).errno ?? -5, reason: (e as Error).message });
    }
  }
  for (const [i, v] of cfg.vfs.entries()) {
    progress(`config load: VF ${i + 1}/${cfg.vfs.length} ${v.vfdev}\n`);
    const have = haveVf.get(v.vfdev);
    if (have) {
      // Fields the file leaves out mean "whatever runs".
      const key = (x: SavedVf) => JSON.stringify([x.socket_file, x.mode, x.queue_pairs, x.mac.toLowerCase(), x.mtu, x.uuid ?? "", x.disk ?? "", x.readonly ?? false, x.direct ?? false]);
      const same = key(have) === key({ ...have, ...v });
      out.push(same ? { item: `vf ${v.vfdev}`, result: "unchanged" } : { item: `vf ${v.vfdev}`, result: "error", errno: -17, reason: "already added with a different configuration (not replaced)" });
      continue;
    }
    try {
      const dev =
        typeof v.disk === "string"
          ? { disk: v.disk, ...(v.disk_size ? { disk_size: v.disk_size } : {}), ...(v.readonly ? { readonly: true } : {}), ...(v.direct ? { direct: true } : {}) }
          : { mac: v.mac, mtu: v.mtu };
      await rpc(g, "vf", { add: true, vfdev: v.vfdev, socket_file: v.socket_file, mode: v.mode, queue_pairs: v.queue_pairs, ...dev, ...(v.uuid ? { uuid: v.uuid } : {}) });
      out.push({ item: `vf ${v.vfdev}`, result: "added" });
    } catch (e) {
      out.push({ item: `vf ${v.vfdev}`, result: "error", errno: (e as RpcFailure).errno ?? -5, reason: (e as Error).message });
    }
  }
  return out;
}

/** `config save|load`: exit 0 on success, 1 when an item failed, 2 usage, 3 daemon unreachable. */
export async function runConfig(rest: string[], g: GlobalOptions, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  try {
    const [sub, ...args] = rest;
    if (sub === "-h" || sub === "--help" || sub === undefined) {
      (sub === undefined ? err : out)(`${configUsage()}\n\nsave: print (or write with -f FILE) the live PFs and VFs as replayable JSON.\nload FILE: add what FILE lists; identical entries are left alone, different ones are errors.\n`);
      return sub === undefined ? 2 : 0;
    }
    if (sub === "save") {
      let file: string | undefined;
      for (let i = 0; i < args.length; i++) {
        if (args[i] === "-f" || args[i] === "--file") file = args[++i];
        else throw new UsageError(`unrecognized argument: ${args[i]}`);
      }
      if (args.length > 0 && !file) throw new UsageError("-f needs a file name");
      const cfg = await saveConfig(g);
      const text = JSON.stringify(cfg, null, 2) + "\n";
      if (file) {
        fs.writeFileSync(file, text, { mode: 0o600 });
        out(g.output === "json" ? formatJson({ file, pfs: cfg.pfs.length, vfs: cfg.vfs.length, errno: 0, errstr: "Success" }) : `saved ${cfg.pfs.length} PF(s) and ${cfg.vfs.length} VF(s) to ${file}\n`);
      } else out(text);
      return 0;
    }
    if (sub === "load") {
      if (args.length !== 1) throw new UsageError("load needs exactly one FILE");
      let text: string;
      try {
        text = fs.readFileSync(args[0]!, "utf8");
      } catch (e) {
        throw new UsageError(`cannot read ${args[0]}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      const items = await loadConfig(g, parseSavedConfig(text), err);
      const failed = items.filter((i) => i.result === "error");
      const summary = { items, added: items.filter((i) => i.result === "added").length, unchanged: items.filter((i) => i.result === "unchanged").length, failed: failed.length };
      out(g.output === "json" ? formatJson({ ...summary, errno: failed.length ? failed[0]!.errno : 0, errstr: failed.length ? "Some items failed" : "Success" }) : renderTable(items as unknown as Array<Record<string, unknown>>));
      return failed.length ? 1 : 0;
    }
    throw new UsageError(`unknown config action "${sub}" (save or load)`);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`${configUsage()}\nvfe-vhost-cli config: error: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ConnectError) {
      err(`vfe-vhost-cli: ${e.message}\n`);
      return 3;
    }
    if (e instanceof RpcFailure) {
      err(`vfe-vhost-cli config: error: ${e.message} (errno ${e.errno})\n`);
      return 1;
    }
    throw e;
  }
}
