// vfe-vhost-cli: argv in, output and exit status out (testable without a process).
import { join } from "node:path";
import { RPC_SOCKET_NAME } from "@vhostd/proto";
import { mainUsage, parseArgs, PROG, UsageError, verbUsage } from "./args.js";
import { call, ConnectError } from "./client.js";
import { formatJson, formatTable } from "./format.js";
import { journalUsage, parseJournalArgs, runJournal } from "./journal_cmd.js";
import { methodSpec } from "@vhostd/proto";

export const EXIT_OK = 0;
export const EXIT_ERRNO = 1;
export const EXIT_USAGE = 2;
export const EXIT_UNREACHABLE = 3;

export async function run(argv: string[], out: (s: string) => void, err: (s: string) => void, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(argv, env);
  } catch (e) {
    if (e instanceof UsageError) {
      const m = e.verb ? methodSpec(e.verb) : undefined;
      err(`${m ? verbUsage(m) : mainUsage()}\n${PROG}${e.verb ? " " + e.verb : ""}: error: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
  if (parsed.kind === "help") {
    out(parsed.text);
    return EXIT_OK;
  }
  if (parsed.kind === "local") {
    if (parsed.verb === "drill") return (await import("../drill/main.js")).runDrillCommand(parsed.rest, parsed.global, out, err, env);
    if (parsed.verb === "config") return (await import("./config_cmd.js")).runConfig(parsed.rest, parsed.global, out, err);
    if (parsed.verb === "completion") {
      if (parsed.rest.length !== 1 || parsed.rest[0] !== "bash") {
        const help = parsed.rest[0] === "-h" || parsed.rest[0] === "--help";
        (help ? out : err)(`usage: ${PROG} completion bash\n${help ? "\nPrints a bash completion script generated from the RPC schema: source <(vfe-vhost-cli completion bash)\n" : ""}`);
        return help ? EXIT_OK : EXIT_USAGE;
      }
      out((await import("./completion.js")).bashCompletion());
      return EXIT_OK;
    }
    let cmd;
    try {
      cmd = parseJournalArgs(parsed.rest, parsed.global.output, env);
    } catch (e) {
      if (e instanceof UsageError) {
        err(`${journalUsage()}\n${PROG} ${parsed.verb}: error: ${e.message}\n`);
        return EXIT_USAGE;
      }
      throw e;
    }
    if (cmd.kind === "help") {
      out(cmd.text);
      return EXIT_OK;
    }
    return runJournal(cmd, out, err);
  }
  const g = parsed.global;
  const socketPath = g.socket ?? join(g.runDir ?? "/run/vhostd", RPC_SOCKET_NAME);
  let resp;
  try {
    resp = await call(socketPath, parsed.method, Object.keys(parsed.params).length ? parsed.params : undefined, g.timeoutS * 1000);
  } catch (e) {
    if (e instanceof ConnectError) {
      err(`${PROG}: ${e.message}\n`);
      return EXIT_UNREACHABLE;
    }
    throw e;
  }
  if ("error" in resp) {
    const d = resp.error.data;
    if (g.output === "json") out(formatJson({ error: resp.error }));
    err(`${PROG} ${parsed.method}: error: ${resp.error.message}${d ? ` (errno ${d.errno}: ${d.errstr})` : ""}\n`);
    return EXIT_ERRNO;
  }
  const result = resp.result;
  const errno = typeof result.errno === "number" ? result.errno : 0;
  if (g.output === "json") out(formatJson(result));
  else if (errno === 0) out(formatTable(result));
  if (errno !== 0) {
    err(`${PROG} ${parsed.method}: error: ${String(result.errstr)} (errno ${errno})${result.detail ? `: ${String(result.detail)}` : ""}\n`);
    return EXIT_ERRNO;
  }
  return EXIT_OK;
}

