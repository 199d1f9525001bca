// vfe-vhost-cli entry point (bin/vfe-vhost-cli.js imports this). Without arguments and with a
// pipe or file on stdin it runs the commands read from there (script mode, see script.ts).
import { run } from "./run.js";
import { runScript } from "./script.js";

const out = (s: string) => process.stdout.write(s);
const err = (s: string) => process.stderr.write(s);
const argv = process.argv.slice(2);
if (argv.length === 0 && !process.stdin.isTTY) {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  process.exitCode = await runScript(Buffer.concat(chunks).toString("utf8"), out, err);
} else {
  process.exitCode = await run(argv, out, err);
}
