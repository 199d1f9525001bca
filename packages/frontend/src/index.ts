// The project's own vhost-user front-end (the VM side): native drivers and the handshake.
export * from "./native.js";
export * from "./frontend.js";
export * from "./blk_frontend.js";
