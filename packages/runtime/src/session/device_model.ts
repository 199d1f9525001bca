// What differs between device types behind the same vhost-user session: offered features,
// queue count, config space. Net and blk each implement it.
import type { DeviceKind } from "@vhostd/proto";

export interface DeviceModel {
  readonly kind: DeviceKind;
  /** Offered virtio features; identical across restarts (front-ends check on reconnect). */
  readonly offeredFeatures: bigint;
  readonly offeredProtocolFeatures: bigint;
  /** Rings the front-end may address. */
  readonly maxQueues: number;
  /** blk: CONFIG_WCE (1 write-back, 0 write-through), mirrored to the HA peer; net: absent. */
  readonly writeback?: number;
  /** GET_QUEUE_NUM answer. */
  queueNum(): number;
  /** Device config space (GET_CONFIG). */
  config(): Buffer;
  /** SET_CONFIG; throws Rejection for read-only fields. */
  writeConfig(offset: number, data: Buffer): void;
  /** NET_SET_MTU; throws Rejection when out of range. */
  setMtu(mtu: number): void;
  /** SEND_RARP after a migration. */
  announce(mac: string): void;
}
