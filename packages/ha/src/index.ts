// What the keeper package offers to tests and tools.
export * from "./sync_server.js";
