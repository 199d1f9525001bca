// What the tests and the bench reuse from vfe-vhostd by name (the daemon and the CLI start from
// main.ts and cli/main.ts; the keeper imports nothing from here).
export { HaClient, HaSyncError, type HaClientOptions } from "./keeper_sync_client.js";
export { call } from "./cli/client.js";
export { Journal, JournalError, encodeValue, parsePfRecord, parseVfRecord } from "./journal.js";
export { rng } from "./drill/options.js";
export { keeperCall, mirrorComplete, rpc } from "./drill/rpc.js";
