// vfe-vhost-cli entry point (bin/vfe-vhost-cli.js imports this). Without a command (global
// options only, or nothing) and with a pipe or file on stdin it runs the commands read from
// there, each after those global options (script mode, see script.ts).
import { onlyGlobalOptions } from "./args.js";
import { run } from "./run.js";
import { runScript } from "./script.js";

// `vfe-vhost-cli state | head`: a reader that stops early is not an error of ours.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code !== "EPIPE") throw e;
  process.exit(process.exitCode ?? 0);
});
const out = (s: string) => process.stdout.write(s);
const err = (s: string) => process.stderr.write(s);
const argv = process.argv.slice(2);
if (onlyGlobalOptions(argv) && !process.stdin.isTTY) {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  process.exitCode = await runScript(Buffer.concat(chunks).toString("utf8"), out, err, process.env, argv);
} else {
  process.exitCode = await run(argv, out, err);
}
