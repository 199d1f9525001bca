// `vfe-vhost-cli config save [-f FILE]` and `config load FILE`: the whole live configuration as
// replayable JSON (as SPDK's save_config), built from and replayed through the same RPC calls an
// operator would make, so a saved file is also a readable record of those calls.
//
// File format (version 1):
//   { "vhostd_config": 1,
//     "pfs": [ { "dev": "0000:af:00.2" } ],                      (by switch id)
//     "vfs": [ { "vfdev": "0000:af:04.5", "socket_file": "...", "mode": "client",
//                "queue_pairs": 1, "mac": "52:54:00:...", "mtu": 1500, "uuid": "..." } ] }
// Each VF object is the params of `vf -a` (by device id; mac/mtu for net VFs only). Load adds
// PFs first, then VFs. An entry identical to what runs is left alone (so loading
// the same file twice changes nothing); a different one is reported as an error, never replaced.
import fs from "node:fs";
import { join } from "node:path";
import { RPC_SOCKET_NAME, methodSpec, type JsonRpcResponse } from "@vhostd/proto";
import { UsageError, type GlobalOptions } from "./args.js";
import { call, ConnectError } from "./client.js";
import { formatJson, renderTable } from "./format.js";

export const CONFIG_FORMAT_VERSION = 1;

/** A VF as the params of `vf` add (vfdev, socket_file, mode, queue_pairs, mac, mtu, uuid, ...). */
type SavedVf = { vfdev: string; socket_file: string } & Record<string, unknown>;

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

/** Result fields of `vf -l` whose `vf -a` param has another name. */
const PARAM_FROM_FIELD: Readonly<Record<string, string>> = { vfdev: "vf", uuid: "vm_uuid" };
/** Params that only net VFs take (a blk VF refuses them, so saving them would break load). */
const NET_ONLY = new Set(["mac", "mtu"]);

/**
 * One VF as `vf -a` params, from its `vf -l` entry: every param of the schema's vf add whose
 * value the entry shows (same name, or PARAM_FROM_FIELD), so an option added to `vf -a` later
 * (the blk device's backing file, ...) is saved as soon as `vf -l` reports it under its name.
 */
export function vfParams(dev: Record<string, unknown>): SavedVf {
  const add = methodSpec("vf")!.actions.find((a) => a.name === "add")!;
  const out: Record<string, unknown> = {};
  for (const p of [...add.required, ...add.optional]) {
    if (dev.type !== "net" && NET_ONLY.has(p)) continue;
    // A MAC vfe-vhostd derived (not set with --mac) is derived again at load; saving it would
    // make it an operator's MAC, which port security treats differently (mac_admin).
    if (p === "mac" && dev.mac_admin === false) continue;
    const v = dev[PARAM_FROM_FIELD[p] ?? p];
    if (v === undefined || v === null || v === "") continue;
    out[p] = p === "mac" ? String(v).toLowerCase() : v;
  }
  return out as SavedVf;
}

/**
 * The live configuration, in load order: PFs by switch id, VFs by device id. A fresh daemon
 * gives the lowest free ids in the order of the adds, so it ends up with the same ids (and
 * `state` compares equal) even when devices were added in another order or some were removed.
 */
export async function saveConfig(g: GlobalOptions): Promise<SavedConfig> {
  const pfList = ((await rpc(g, "mgmtpf", { list: true })).devices as Array<{ pf: string; switch_id: number }>).sort((a, b) => a.switch_id - b.switch_id);
  const devs: Array<Record<string, unknown>> = [];
  for (const pf of pfList) devs.push(...((await rpc(g, "vf", { list: true, mgmtpf: pf.pf })).devices as Array<Record<string, unknown>>));
  devs.sort((a, b) => Number(a.dev_id) - Number(b.dev_id));
  return { vhostd_config: CONFIG_FORMAT_VERSION, pfs: pfList.map((p) => ({ dev: p.pf })), vfs: devs.map(vfParams) };
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
      const norm = (x: Record<string, unknown>) => JSON.stringify(Object.keys(v).sort().map((k) => (k === "mac" && typeof x[k] === "string" ? (x[k] as string).toLowerCase() : x[k] ?? null)));
      const same = norm(have) === norm(v);
      out.push(same ? { item: `vf ${v.vfdev}`, result: "unchanged" } : { item: `vf ${v.vfdev}`, result: "error", errno: -17, reason: "already added with a different configuration (not replaced)" });
      continue;
    }
    try {
      // Every param the entry gives, as given: the daemon validates them against the schema.
      await rpc(g, "vf", { ...v, add: true });
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
    // --help anywhere (config save --help, config load -h) is help, not a file name.
    const wantsHelp = args.includes("-h") || args.includes("--help");
    if (sub === "-h" || sub === "--help" || sub === undefined || wantsHelp) {
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
