// Script mode: `vfe-vhost-cli [GLOBAL OPTIONS] < commands.txt` (no command, stdin not a terminal) runs one
// command per line, in order, as if each were given on the command line. Blank lines and
// lines starting with # are skipped; words split on blanks, with '...' and "..." quoting.
// The exit status is the worst of all lines'; a line's errors do not stop the next ones.
// Empty input is the same as no command at all (usage error).
import { run } from "./run.js";

export function splitWords(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quote: string | null = null;
  let has = false;
  for (const ch of line) {
    if (quote) {
      if (ch === quote) quote = null;
      else cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      has = true;
    } else if (ch === " " || ch === "\t") {
      if (has || cur) out.push(cur);
      cur = "";
      has = false;
    } else cur += ch;
  }
  if (quote) throw new Error(`unterminated ${quote} quote`);
  if (has || cur) out.push(cur);
  return out;
}

/** `globals`: the global options given on the command line, put before every line's words. */
export async function runScript(text: string, out: (s: string) => void, err: (s: string) => void, env: NodeJS.ProcessEnv = process.env, globals: string[] = []): Promise<number> {
  let worst = 0;
  let ran = 0;
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    let argv: string[];
    try {
      argv = splitWords(line);
    } catch (e) {
      err(`line ${i + 1}: ${(e as Error).message}\n`);
      worst = Math.max(worst, 2);
      continue;
    }
    ran++;
    worst = Math.max(worst, await run([...globals, ...argv], out, err, env));
  }
  return ran === 0 ? run(globals, out, err, env) : worst; // nothing to run: the usual usage error
}
