// Wire formats of vhostd: vhost-user, virtio, RPC, HA sync, journal records, errors.
export * from "./vhost_user.js";
export * from "./virtio.js";
export * from "./values.js";
export * from "./rpc_transport.js";
export * from "./rpc_schema.js";
export * from "./rpc_validation.js";
export * from "./rpc_results.js";
export * from "./errors.js";
export * from "./keeper_sync.js";
export * from "./session_mirror.js";
export * from "./device_record.js";
