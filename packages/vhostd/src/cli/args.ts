// vfe-vhost-cli's command line, generated from the RPC schema (packages/proto/src/rpc_schema.ts):
// verbs are the methods, -a/-r/-l/-i the actions, other options the params. Help texts
// follow NVIDIA's argparse-based vfe-vhost-cli.
import {
  RPC_METHODS,
  RPC_SOCKET_NAME,
  RpcParamError,
  methodSpec,
  parseSize,
  validateParams,
  type MethodSpec,
  type ParamSpec,
} from "@vhostd/proto";

export const PROG = "vfe-vhost-cli";
export const OUTPUT_FORMATS = ["json", "table"] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];
/** Seconds to wait for a reply (vfe-vhost-cli: 125). */
export const DEFAULT_TIMEOUT_S = 125;

export class UsageError extends Error {
  constructor(
    message: string,
    readonly verb?: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

export interface GlobalOptions {
  runDir?: string;
  socket?: string;
  output: OutputFormat;
  timeoutS: number;
}

export type Parsed =
  | { kind: "help"; text: string }
  | { kind: "call"; global: GlobalOptions; method: string; action: string; params: Record<string, unknown> }
  /** A command run by the CLI itself, without the daemon; `rest` follows the verb. */
  | { kind: "local"; global: GlobalOptions; verb: string; rest: string[] };

/**
 * Commands that do not go through the RPC (so they are not in the RPC schema): the CLI runs
 * them itself. `journal dump` reads the journal read-only, with or without the daemon.
 */
export const LOCAL_VERBS: ReadonlyArray<{ name: string; help: string }> = [
  { name: "journal", help: "show the journal (read-only; no daemon needed)" },
  { name: "drill", help: "crash-recovery drill: SIGKILL the daemons under traffic and check the recovery promises" },
  { name: "config", help: "config save [-f FILE] | config load FILE: the live PFs/VFs as replayable JSON" },
  { name: "completion", help: "completion bash: print a bash completion script" },
];

const VERB_NAMES = (): string[] => [...RPC_METHODS.map((m) => m.name), ...LOCAL_VERBS.map((v) => v.name)];

interface OptDef {
  /** Spellings, e.g. ["-v"] or ["-q", "--queues"]. */
  names: string[];
  metavar?: string;
  help: string;
  /** Applies the option (value is undefined for flags). */
  takesValue: boolean;
  apply: (st: VerbState, value: string | undefined, spelled: string) => void;
}

interface VerbState {
  actions: string[];
  params: Record<string, unknown>;
  positional: string[];
  global: GlobalOptions;
}

const GLOBAL_OPTS: OptDef[] = [
  {
    names: ["--run-dir"],
    metavar: "DIR",
    help: `vfe-vhostd's run directory; the RPC socket is DIR/${RPC_SOCKET_NAME} (env VHOSTD_RUN_DIR, default /run/vhostd)`,
    takesValue: true,
    apply: (st, v) => (st.global.runDir = v),
  },
  {
    names: ["--socket"],
    metavar: "PATH",
    help: "the RPC socket itself (overrides --run-dir)",
    takesValue: true,
    apply: (st, v) => (st.global.socket = v),
  },
  {
    names: ["-o", "--output"],
    metavar: "{json,table}",
    help: "output format (default json, as vfe-vhost-cli)",
    takesValue: true,
    apply: (st, v, spelled) => {
      if (!(OUTPUT_FORMATS as readonly string[]).includes(v!)) {
        if (/^\d+$/.test(v!)) throw new UsageError(`${spelled} ${v}: vfe's debug test operations (vf -d -o N) are not supported; ${spelled} selects the output format: json or table`);
        throw new UsageError(`${spelled}: invalid choice "${v}" (choose from json, table)`);
      }
      st.global.output = v as OutputFormat;
    },
  },
  {
    names: ["--timeout"],
    metavar: "SEC",
    help: `seconds to wait for the reply (default ${DEFAULT_TIMEOUT_S})`,
    takesValue: true,
    apply: (st, v, spelled) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new UsageError(`${spelled}: must be a number of seconds in (0, 3600]`);
      st.global.timeoutS = n;
    },
  },
  {
    names: ["-s", "--serverip"],
    metavar: "IP",
    help: "accepted for compatibility with vfe-vhost-cli and ignored (vhostd's RPC is a unix socket)",
    takesValue: true,
    apply: () => undefined,
  },
];

function paramOpts(m: MethodSpec): OptDef[] {
  const out: OptDef[] = [];
  for (const a of m.actions) {
    out.push({
      names: [a.cli.short, a.cli.long],
      help: a.help,
      takesValue: false,
      apply: (st) => st.actions.push(a.name),
    });
  }
  for (const [name, p] of Object.entries(m.params)) {
    const cli = p.cli;
    if (!cli) continue;
    if (cli.valueFlags) {
      for (const [flag, value] of Object.entries(cli.valueFlags)) {
        out.push({
          names: [flag],
          help: `${name} ${value}: ${valueFlagHelp(p, value)}`,
          takesValue: false,
          apply: (st, _v, spelled) => {
            if (st.params[name] !== undefined && st.params[name] !== value) throw new UsageError(`${spelled}: conflicts with an earlier ${name} option`);
            st.params[name] = value;
          },
        });
      }
      continue;
    }
    const names = [cli.short, cli.long].filter((x): x is string => !!x);
    const isBool = p.type.kind === "bool" && !cli.onOff;
    out.push({
      names,
      metavar: isBool ? undefined : cli.metavar ?? name.toUpperCase(),
      help: p.help + (p.default ? ` (default: ${p.default})` : ""),
      takesValue: !isBool,
      apply: (st, v, spelled) => {
        if (isBool) st.params[name] = true;
        else st.params[name] = convertValue(p, v!, spelled);
      },
    });
  }
  return out;
}

function valueFlagHelp(p: ParamSpec, value: string): string {
  if (value === "server") return "vfe-vhostd listens on the socket (front-end connects)";
  if (value === "client") return "vfe-vhostd connects to the front-end's socket";
  return p.help;
}

/** CLI strings to JSON values: integers become numbers. */
function convertValue(p: ParamSpec, v: string, spelled: string): unknown {
  if (p.type.kind === "bool" && p.cli?.onOff) {
    if (v === "on") return true;
    if (v === "off") return false;
    throw new UsageError(`${spelled}: "${v.slice(0, 64)}" is not on or off`);
  }
  if (p.type.kind === "int") {
    if (!/^-?\d+$/.test(v)) throw new UsageError(`${spelled}: "${v}" is not an integer`);
    return Number(v);
  }
  if (p.type.kind === "size") {
    const n = parseSize(v);
    if (n === undefined) throw new UsageError(`${spelled}: "${v.slice(0, 64)}" is not a size (bytes, or a number with K, M, G or T)`);
    return n;
  }
  return v;
}

function findOpt(opts: OptDef[], tok: string): OptDef | undefined {
  return opts.find((o) => o.names.includes(tok));
}

/**
 * True when argv names no command: only global options (and their values). Script mode
 * (main.ts) then reads the commands from stdin and prefixes each with these options, so
 * `vfe-vhost-cli --run-dir DIR -o table < cmds.txt` works as well as the bare form.
 */
export function onlyGlobalOptions(argv: string[]): boolean {
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === "-h" || tok === "--help") return false;
    const name = tok.startsWith("--") && tok.includes("=") ? tok.slice(0, tok.indexOf("=")) : tok;
    const o = findOpt(GLOBAL_OPTS, name);
    if (!o) return false;
    if (o.takesValue && name === tok) i++;
  }
  return true;
}

/** Parses argv (without node and script). Throws UsageError. */
export function parseArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): Parsed {
  const st: VerbState = { actions: [], params: {}, positional: [], global: { output: "json", timeoutS: DEFAULT_TIMEOUT_S } };
  let i = 0;
  let method: MethodSpec | undefined;
  let opts = GLOBAL_OPTS;
  for (; i < argv.length; i++) {
    let tok = argv[i]!;
    if (tok === "--") {
      st.positional.push(...argv.slice(i + 1));
      break;
    }
    if (tok === "-h" || tok === "--help") return { kind: "help", text: method ? verbHelp(method) : mainHelp() };
    if (tok.startsWith("-") && tok.length > 1 && !/^-\d/.test(tok)) {
      let inline: string | undefined;
      const eq = tok.indexOf("=");
      if (tok.startsWith("--") && eq > 0) {
        inline = tok.slice(eq + 1);
        tok = tok.slice(0, eq);
      }
      const o = findOpt(opts, tok) ?? findOpt(GLOBAL_OPTS, tok);
      if (!o) throw new UsageError(`unrecognized argument: ${tok}`, method?.name);
      let value: string | undefined;
      if (o.takesValue) {
        value = inline ?? argv[++i];
        if (value === undefined) throw new UsageError(`argument ${o.names.join("/")}: expected one argument`, method?.name);
      } else if (inline !== undefined) {
        throw new UsageError(`argument ${o.names.join("/")}: takes no value`, method?.name);
      }
      try {
        o.apply(st, value, tok);
      } catch (e) {
        if (e instanceof UsageError && !e.verb) throw new UsageError(e.message, method?.name);
        throw e;
      }
      continue;
    }
    if (!method) {
      if (LOCAL_VERBS.some((v) => v.name === tok)) return { kind: "local", global: st.global, verb: tok, rest: argv.slice(i + 1) };
      method = methodSpec(tok);
      if (!method) throw new UsageError(`invalid choice: "${tok}" (choose from ${VERB_NAMES().join(", ")})`);
      opts = paramOpts(method);
      continue;
    }
    st.positional.push(tok);
  }
  if (!method) throw new UsageError(`a command is required (${VERB_NAMES().join(", ")}); use -h for help`);
  if (st.global.runDir === undefined && env.VHOSTD_RUN_DIR) st.global.runDir = env.VHOSTD_RUN_DIR;
  const verb = method.name;

  // Action (vfe: mutually exclusive group); some verbs also take it as a word or by default.
  if (method.actionWords && st.positional.length > 0 && method.actions.some((a) => a.name === st.positional[0])) st.actions.push(st.positional.shift()!);
  if (st.actions.length === 0 && method.defaultAction) st.actions.push(method.defaultAction);
  const uniq = [...new Set(st.actions)];
  if (method.actions.length > 0 && uniq.length === 0) throw new UsageError(`invalid action: one of ${method.actions.map((a) => a.cli.short).join(" ")} is required`, verb);
  if (uniq.length > 1) {
    const flags = uniq.map((a) => method!.actions.find((x) => x.name === a)!.cli.short);
    throw new UsageError(`argument ${flags[1]}: not allowed with argument ${flags[0]}`, verb);
  }
  const action = method.actions.find((a) => a.name === uniq[0]);
  const params: Record<string, unknown> = { ...st.params };
  if (action) params[action.name] = true;

  // Positional DEVICE.
  if (st.positional.length > 1) throw new UsageError(`unrecognized arguments: ${st.positional.slice(1).join(" ")}`, verb);
  if (st.positional.length === 1) {
    if (!action?.positional) throw new UsageError(`unrecognized arguments: ${st.positional[0]}`, verb);
    params[action.positional.param] = st.positional[0];
  } else if (action?.positional?.required) {
    throw new UsageError(`no device specified for ${action.name} action`, verb);
  }

  // Same schema checks as the server: fail early with a clear message.
  try {
    validateParams(method, params);
  } catch (e) {
    if (e instanceof RpcParamError) throw new UsageError(e.detail ?? e.message, verb);
    throw e;
  }
  return { kind: "call", global: st.global, method: verb, action: action?.name ?? "", params };
}

/* ---------------------------------- help ------------------------------------------- */

function fmtOpt(o: OptDef): string {
  return o.names.map((n) => (o.metavar ? `${n} ${o.metavar}` : n)).join(", ");
}

function wrap(text: string, width: number, indent: number): string {
  const words = text.split(/\s+/);
  const lines: string[] = [];
  let cur = "";
  for (const w of words) {
    if (cur.length > 0 && cur.length + 1 + w.length > width) {
      lines.push(cur);
      cur = w;
    } else cur = cur ? `${cur} ${w}` : w;
  }
  if (cur) lines.push(cur);
  return lines.join("\n" + " ".repeat(indent));
}

function table(rows: Array<[string, string]>): string {
  const col = Math.min(26, Math.max(...rows.map(([l]) => l.length)) + 2);
  return rows
    .map(([l, h]) => {
      const head = `  ${l}`;
      const pad = head.length + 2 > col + 2 ? `${head}\n${" ".repeat(col + 2)}` : head.padEnd(col + 2);
      return pad + wrap(h, 100 - col - 2, col + 2);
    })
    .join("\n");
}

export function verbUsage(m: MethodSpec): string {
  const parts = [`usage: ${PROG} ${m.name} [-h]`];
  if (m.actions.length) parts.push(`[${m.actions.map((a) => a.cli.short).join(" | ")}]`);
  for (const [name, p] of Object.entries(m.params)) {
    if (!p.cli) continue;
    if (p.cli.valueFlags) parts.push(`[${Object.keys(p.cli.valueFlags).join(" | ")}]`);
    else {
      const flag = p.cli.short ?? p.cli.long!;
      parts.push(p.type.kind === "bool" && !p.cli.onOff ? `[${flag}]` : `[${flag} ${p.cli.metavar ?? name.toUpperCase()}]`);
    }
  }
  parts.push("[-o {json,table}]");
  if (m.positionalMetavar) parts.push(`[${m.positionalMetavar}]`);
  return parts.join(" ");
}

export function verbHelp(m: MethodSpec): string {
  const out = [verbUsage(m), "", wrap(m.description, 100, 0), ""];
  if (m.positionalMetavar) {
    out.push("positional arguments:");
    out.push(table([[m.positionalMetavar, m.positionalHelp ?? ""]]));
    out.push("");
  }
  out.push("optional arguments:");
  const rows: Array<[string, string]> = [["-h, --help", "show this help message and exit"]];
  for (const o of paramOpts(m)) rows.push([fmtOpt(o), o.help]);
  rows.push(["-o, --output {json,table}", "output format (default json)"]);
  out.push(table(rows));
  if (m.actions.length) {
    out.push("", "actions and their params:");
    for (const a of m.actions) {
      const pos = a.positional ? (a.positional.required ? ` ${m.positionalMetavar}` : ` [${m.positionalMetavar}]`) : "";
      const opt = a.optional
        .filter((p) => p !== a.positional?.param && m.params[p]?.cli)
        .map((p) => {
          const c = m.params[p]!.cli!;
          if (c.valueFlags) return `[${Object.keys(c.valueFlags).join("|")}]`;
          const flag = c.short ?? c.long!;
          return m.params[p]!.type.kind === "bool" && !c.onOff ? `[${flag}]` : `[${flag} ${c.metavar ?? p.toUpperCase()}]`;
        });
      out.push(`  ${PROG} ${m.name} ${a.cli.short}${pos}${opt.length ? " " + opt.join(" ") : ""}`);
    }
  }
  return out.join("\n") + "\n";
}

export function mainUsage(): string {
  return `usage: ${PROG} [-h] [--run-dir DIR] [--socket PATH] [-o {json,table}] [--timeout SEC] {${VERB_NAMES().join(",")}} ...`;
}

export function mainHelp(): string {
  const out = [mainUsage(), "", "vhostd RPC command line interface (NVIDIA vfe-vhost-cli compatible)", ""];
  out.push("positional arguments:");
  out.push(
    table([
      [`{${VERB_NAMES().join(",")}}`, "** Use -h for sub-command usage"],
      ...RPC_METHODS.map((m): [string, string] => [`  ${m.name}`, m.help]),
      ...LOCAL_VERBS.map((v): [string, string] => [`  ${v.name}`, v.help]),
    ]),
  );
  out.push("", "optional arguments:");
  out.push(table([["-h, --help", "show this help message and exit"], ...GLOBAL_OPTS.map((o): [string, string] => [fmtOpt(o), o.help])]));
  out.push(
    "",
    "exit status: 0 success; 1 the daemon answered with errno != 0 or a JSON-RPC error;",
    "             2 usage error; 3 the daemon could not be reached or did not answer.",
    "",
    "script mode: without a command and with stdin not a terminal, each line of stdin is one",
    "command, run after the global options given (blank lines and # comments skipped); every",
    "line runs, the exit status is the worst line's.",
  );
  return out.join("\n") + "\n";
}
