// `vfe-vhost-cli journal dump`: a local command (no RPC). It opens the daemon's LMDB journal
// read-only, so it works while vfe-vhostd is down (what will come back at the next start?)
// and while it runs (LMDB readers never block the writer). It is not in the RPC schema
// because the schema describes what the daemon answers; this command never talks to it.
import { argTokens } from "./argv.js";
import { join } from "node:path";
import { Journal, JournalMissingError, type JournalContents } from "../journal.js";
import { DEFAULT_STATE_DIR, ENV_STATE_DIR, JOURNAL_DIR_NAME } from "@vhostd/runtime";
import { OUTPUT_FORMATS, PROG, UsageError, type OutputFormat } from "./args.js";
import { formatJson, renderTable } from "./format.js";

export const JOURNAL_VERB = "journal";
export const JOURNAL_ACTIONS = ["dump"] as const;

export interface JournalCommand {
  kind: "journal";
  action: "dump";
  stateDir: string;
  output: OutputFormat;
}

export function journalUsage(): string {
  return `usage: ${PROG} journal [-h] dump [--state-dir DIR] [-o {json,table}]`;
}

export function journalHelp(): string {
  return (
    [
      journalUsage(),
      "",
      "Shows the journal of vfe-vhostd: the PFs and VFs it restores at start, and its epoch. The",
      "journal is opened read-only and without the daemon: this works while vfe-vhostd is down and",
      "while it runs. Names and formats of the fields are those of mgmtpf -l / vf -l.",
      "",
      "positional arguments:",
      "  dump                   print the journal's epoch, format, PFs and VFs",
      "",
      "optional arguments:",
      "  -h, --help             show this help message and exit",
      `  --state-dir DIR        vfe-vhostd's state directory; the journal is DIR/${JOURNAL_DIR_NAME}`,
      `                         (env ${ENV_STATE_DIR}, default ${DEFAULT_STATE_DIR})`,
      "  -o, --output {json,table}",
      "                         output format (default json)",
      "",
      "exit status: 0 success; 1 the journal has unusable records (listed under errors) or cannot",
      "             be read; 2 usage error; 3 there is no journal in the state directory.",
    ].join("\n") + "\n"
  );
}

/** Parses what follows the verb `journal`; `output` is what global options already chose. */
export function parseJournalArgs(argv: string[], output: OutputFormat, env: NodeJS.ProcessEnv): JournalCommand | { kind: "help"; text: string } {
  let action: string | undefined;
  let stateDir: string | undefined;
  for (const { name: tok, value } of argTokens(argv, (m) => new UsageError(m, JOURNAL_VERB))) {
    if (tok === "-h" || tok === "--help") return { kind: "help", text: journalHelp() };
    else if (tok === "--state-dir") stateDir = value();
    else if (tok === "-o" || tok === "--output") {
      const v = value();
      if (!(OUTPUT_FORMATS as readonly string[]).includes(v)) throw new UsageError(`${tok}: invalid choice "${v}" (choose from json, table)`, JOURNAL_VERB);
      output = v as OutputFormat;
    } else if (tok.startsWith("-")) throw new UsageError(`unrecognized argument: ${tok}`, JOURNAL_VERB);
    else if (action === undefined) {
      if (!(JOURNAL_ACTIONS as readonly string[]).includes(tok)) throw new UsageError(`invalid choice: "${tok}" (choose from ${JOURNAL_ACTIONS.join(", ")})`, JOURNAL_VERB);
      action = tok;
    } else throw new UsageError(`unrecognized arguments: ${tok}`, JOURNAL_VERB);
  }
  if (!action) throw new UsageError(`an action is required: ${JOURNAL_ACTIONS.join(", ")}`, JOURNAL_VERB);
  return { kind: "journal", action: "dump", stateDir: stateDir ?? (env[ENV_STATE_DIR] || DEFAULT_STATE_DIR), output };
}

/** The journal as `mgmtpf -l` / `vf -l` would show it (same field names and formats). */
export function dumpObject(c: JournalContents, path: string): Record<string, unknown> {
  const pfType = new Map(c.pfs.map((p) => [p.dev, p]));
  return {
    journal: path,
    format: c.format,
    epoch: c.epoch,
    pfs: c.pfs.map((p) => ({ pf: p.dev, type: p.type, switch_id: p.switchId })),
    vfs: c.vfs.map((v) => ({
      vf: v.dev,
      pf: v.pf,
      type: pfType.get(v.pf)?.type ?? "",
      socket_file: v.socketPath,
      mode: v.mode,
      mac: v.mac.toUpperCase(),
      mtu: v.mtu,
      queue_pairs: v.queuePairs,
      dev_id: v.devId,
      switch_id: pfType.get(v.pf)?.switchId ?? -1,
      vm_uuid: v.uuid ?? "",
      ...(v.disk ? { disk: v.disk.path, disk_size: v.disk.size, readonly: v.disk.readonly, direct: v.disk.direct } : {}),
    })),
    errors: c.errors,
  };
}

export async function runJournal(cmd: JournalCommand, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const path = join(cmd.stateDir, JOURNAL_DIR_NAME);
  let j: Journal;
  let contents: JournalContents;
  try {
    j = Journal.open(path, { readOnly: true });
  } catch (e) {
    err(`${PROG} journal: ${(e as Error).message}\n`);
    return e instanceof JournalMissingError ? 3 : 1;
  }
  try {
    contents = j.read();
  } catch (e) {
    err(`${PROG} journal: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await j.close().catch(() => undefined);
  }
  const d = dumpObject(contents, path);
  if (cmd.output === "json") out(formatJson(d));
  else {
    out(`journal ${path}  format ${contents.format}  epoch ${contents.epoch}\n\nPFs:\n`);
    out(renderTable(d.pfs as Array<Record<string, unknown>>));
    out("\nVFs:\n");
    out(renderTable(d.vfs as Array<Record<string, unknown>>, ["vf", "pf", "type", "mode", "socket_file", "mac", "mtu", "queue_pairs", "dev_id", "switch_id", "vm_uuid", "disk"]));
    if (contents.errors.length) out("\nunusable records:\n" + renderTable(contents.errors));
  }
  if (contents.errors.length) {
    err(`${PROG} journal: ${contents.errors.length} unusable record(s): ${contents.errors.map((e) => `${e.key}: ${e.error}`).slice(0, 4).join("; ")}\n`);
    return 1;
  }
  return 0;
}
