// Where the built programs are, relative to this compiled file (test/dist/src/harness).
import path from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
export const vhostdBin = path.join(repoRoot, "packages/vhostd/bin/vfe-vhostd.js");
export const cliBin = path.join(repoRoot, "packages/vhostd/bin/vfe-vhost-cli.js");
export const keeperBin = path.join(repoRoot, "packages/ha/bin/vfe-vhostd-ha.js");
