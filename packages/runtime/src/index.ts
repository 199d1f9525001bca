// The VF runtime both daemons run on: vhost-user sessions behind the VfHost seam, both ends of
// the session mirror, and the helpers every process needs (run-dir paths, logging, systemd).
export * from "./paths.js";
export * from "./log.js";
export * from "./systemd.js";
export * from "./fd_store.js";
export * from "./vf_host.js";
export { createVfHost, EngineVfHost, type GuestChoices, type MirrorSink, type VfHostOptions } from "./session/engine_vf_host.js";
export { CrashLedger, noteFatalException, vfTag, CRASH_ROLES, BREAK_AFTER, type CrashState, type CrashVerdict } from "./session/crash_ledger.js";
export { MIRROR_CODEC } from "./mirror/mirror_codec.js";
export { MirrorHolder, type MirrorHolderOptions } from "./mirror/mirror_holder.js";
export { MirrorSender, type TakenBack } from "./mirror/mirror_sender.js";
