#!/usr/bin/env node
// Launcher: the program is compiled TypeScript (built by `pnpm install`).
import("../dist/src/cli/main.js").catch((err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
