// QEMU guest tooling (`@vhostd/vhostd/guest`): the migration drill's guests and the e2e tests'.
export { Guest, commandOutput, ensureGuestImage, guestCrash, guestDir, qemuArgs, shellCmdArgs } from "./qemu.js";
export type { GuestBlk, GuestNet, GuestOptions, GuestResultLine, GuestRun } from "./qemu.js";
export { Qmp } from "./qmp.js";
export { sleep, waitFor } from "./wait.js";
