// Thin facade over the N-API module: types and small helpers, no logic of its own.
import { native } from "./native.js";

export * from "./native.js";
export * from "./unix_socket.js";

/** Index of one counter in NativeEngine.counters. */
export function counterIndex(maxQueues: number, devId: number, queue: number, field: number): number {
  return (devId * maxQueues + queue) * native.COUNTERS_PER_QUEUE + field;
}
/** Index of one port security counter (PORT_COUNTER_NAMES: 0 spoofed, 1 unlearned) in NativeEngine.counters. */
export function portCounterIndex(maxDevices: number, maxQueues: number, devId: number, queue: number, field: number): number {
  return maxDevices * maxQueues * native.COUNTERS_PER_QUEUE + (devId * maxQueues + queue) * native.PORT_COUNTERS_PER_QUEUE + field;
}
export * from "./framed_conn.js";
export * from "./send_queue.js";
