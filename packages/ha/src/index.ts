// What the keeper package offers to tests and tools.
export * from "./sync_server.js";
export * from "./keeper.js";
export * from "./replica.js";
export * from "./devices.js";
