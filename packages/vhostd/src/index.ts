// What other packages (tests, bench) reuse from vfe-vhostd.
export * from "./ha_client.js";
export * from "./keeper_host.js";
export { Journal } from "./journal.js";
export { rng } from "./drill/options.js";
export { keeperCall, rpc } from "./drill/rpc.js";
