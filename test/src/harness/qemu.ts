// The tests' QEMU guests are the product's (packages/vhostd/src/guest/qemu.ts, also used by
// `vfe-vhost-cli drill --migrate`); the tests build the image under <repo>/.cache/guest
// unless VHOSTD_GUEST_DIR says otherwise.
import path from "node:path";
import { repoRoot } from "./paths.js";

process.env.VHOSTD_GUEST_DIR ||= path.join(repoRoot, ".cache/guest");

export { Guest, commandOutput, ensureGuestImage, guestCrash, guestDir, qemuArgs, shellCmdArgs } from "@vhostd/vhostd/guest";
export type { GuestBlk, GuestNet, GuestOptions, GuestResultLine, GuestRun } from "@vhostd/vhostd/guest";
