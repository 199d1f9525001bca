// vfe-vhost-cli entry point (bin/vfe-vhost-cli.js imports this).
import { run } from "./run.js";

process.exitCode = await run(
  process.argv.slice(2),
  (s) => process.stdout.write(s),
  (s) => process.stderr.write(s),
);
