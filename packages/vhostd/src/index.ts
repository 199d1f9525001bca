// What other packages (the keeper, tests) reuse from vfe-vhostd.
export * from "./paths.js";
export * from "./log.js";
export * from "./vf_host.js";
export * from "./ha_client.js";
export * from "./systemd.js";
export * from "./keeper_host.js";
export { createVfHost, EngineVfHost, type VfHostOptions } from "./session/host.js";
export { Journal, JournalError, encodeValue, parsePfRecord, parseVfRecord } from "./journal.js";
export { MirrorHolder } from "./ha/mirror_holder.js";
export { MIRROR_CODEC, keeperBeaconPath, mirrorLockDir, mirrorSharedPath, mirrorSocketPath } from "./ha/mirror_codec.js";
export type { MirrorSink } from "./session/host.js";
export { CrashLedger, noteFatalException, vfTag, CRASH_ROLES, BREAK_AFTER, type CrashState, type CrashVerdict } from "./session/crash_ledger.js";
export { rng } from "./drill/options.js";
export { keeperCall, rpc } from "./drill/rpc.js";
