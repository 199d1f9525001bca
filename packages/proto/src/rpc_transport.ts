// The management RPC's transport: one JSON-RPC 2.0 request per newline-framed message on a
// unix socket, and the limits the server holds every connection to.

export const RPC_PROTOCOL = {
  name: "vhostd-rpc",
  /** Bumped on any incompatible change to methods, params or results. */
  version: 1,
  jsonrpc: "2.0",
  framing: "one JSON value per request; newline-terminated (a bare object without newline also accepted)",
} as const;

/** File name of the RPC socket inside the run directory. */
export const RPC_SOCKET_NAME = "vfe-vhostd.sock";
/** Largest request (bytes, before its newline) the server accepts. */
export const RPC_MAX_REQUEST_BYTES = 64 * 1024;
/** A connection that sends nothing for this long is closed. */
export const RPC_IDLE_TIMEOUT_MS = 10_000;
/** Simultaneous RPC connections; more are refused. */
export const RPC_MAX_CONNECTIONS = 32;

/** JSON-RPC 2.0 error codes. */
export const JsonRpcCode = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
} as const;

export type JsonRpcId = string | number | null;

export interface JsonRpcRequest {
  jsonrpc: "2.0";
  method: string;
  params?: Record<string, unknown>;
  id?: JsonRpcId;
}

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  /** vhostd: the errno/errstr equivalent, and a human explanation. */
  data?: { errno: number; errstr: string; detail?: string };
}

export type JsonRpcResponse =
  | { jsonrpc: "2.0"; id: JsonRpcId; result: Record<string, unknown> }
  | { jsonrpc: "2.0"; id: JsonRpcId; error: JsonRpcErrorObject };
