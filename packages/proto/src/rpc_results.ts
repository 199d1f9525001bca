// What the RPC handlers return, typed (the schema's result fields, rpc_schema.ts), and vfe's
// device_feature names.

export interface PfDeviceResult {
  pf: string;
  type: "net" | "blk";
  switch_id: number;
  vfs: number;
  num_vfs: number;
  first_vf: string;
  vf_stride?: number;
  first_vf_offset?: number;
  mtu?: number;
  queue_pairs?: number;
  max_queue_pairs?: number;
}

export interface VfDeviceResult {
  vf: string;
  pf: string;
  type: "net" | "blk";
  probed: boolean;
  msix_num: number;
  queue_num: number;
  queue_size: number;
  device_feature: Record<string, string>;
  mtu: number;
  mac: string;
  vm_uuid: string;
  socket_file: string;
  configured: boolean;
  mode: "client" | "server";
  queue_pairs: number;
  dev_id: number;
  switch_id: number;
  state: string;
  connected: boolean;
  reconnects: number;
  disk?: string;
  disk_size?: number;
  readonly?: boolean;
  direct?: boolean;
  /** blk, once a session exists: the cache mode the guest chose (CONFIG_WCE 1 write-back). */
  write_back?: boolean;
  spoofchk?: boolean;
  trust?: boolean;
  mac_admin?: boolean;
  mac_locked?: string;
  last_error?: string;
}

export interface FdbEntryResult {
  mac: string;
  port: string;
  dev_id: number;
  age_ms: number;
  locked: boolean;
  admin: boolean;
}

export interface VfInfoResult extends VfDeviceResult {
  features: string;
  protocol_features: string;
  queues: Array<{
    index: number;
    size: number;
    enabled: boolean;
    started: boolean;
    last_avail_idx: number;
    packets: number;
    bytes: number;
    drops: number;
    kicks: number;
    calls: number;
    errors: number;
    spoofed?: number;
    unlearned?: number;
  }>;
}

/** virtio feature bit names shown in device_feature (as vfe's vdpa_rpc.c). */
export const VIRTIO_FEATURE_NAMES: Readonly<Record<number, string>> = {
  0: "VIRTIO_NET_F_CSUM",
  1: "VIRTIO_NET_F_GUEST_CSUM",
  3: "VIRTIO_NET_F_MTU",
  5: "VIRTIO_NET_F_MAC",
  6: "VIRTIO_NET_F_GSO",
  7: "VIRTIO_NET_F_GUEST_TSO4",
  8: "VIRTIO_NET_F_GUEST_TSO6",
  9: "VIRTIO_NET_F_GUEST_ECN",
  10: "VIRTIO_NET_F_GUEST_UFO",
  11: "VIRTIO_NET_F_HOST_TSO4",
  12: "VIRTIO_NET_F_HOST_TSO6",
  13: "VIRTIO_NET_F_HOST_ECN",
  14: "VIRTIO_NET_F_HOST_UFO",
  15: "VIRTIO_NET_F_MRG_RXBUF",
  16: "VIRTIO_NET_F_STATUS",
  17: "VIRTIO_NET_F_CTRL_VQ",
  18: "VIRTIO_NET_F_CTRL_RX",
  19: "VIRTIO_NET_F_CTRL_VLAN",
  20: "VIRTIO_NET_F_CTRL_RX_EXTRA",
  21: "VIRTIO_NET_F_GUEST_ANNOUNCE",
  22: "VIRTIO_NET_F_MQ",
  23: "VIRTIO_NET_F_CTRL_MAC_ADDR",
  24: "VIRTIO_F_NOTIFY_ON_EMPTY",
  27: "VIRTIO_F_ANY_LAYOUT",
  28: "VIRTIO_RING_F_INDIRECT_DESC",
  29: "VIRTIO_RING_F_EVENT_IDX",
  30: "VHOST_F_LOG_ALL",
  32: "VIRTIO_F_VERSION_1",
  33: "VIRTIO_F_IOMMU_PLATFORM",
  34: "VIRTIO_F_RING_PACKED",
  35: "VIRTIO_F_IN_ORDER",
  40: "VIRTIO_F_RING_RESET",
};

/** vfe's device_feature object: {"value": "0x..", "   N": "NAME"} for every set bit. */
export function featureObject(features: bigint): Record<string, string> {
  const o: Record<string, string> = { value: "0x" + features.toString(16) };
  for (let i = 0; i < 64; i++) {
    if ((features >> BigInt(i)) & 1n) o[String(i).padStart(5, " ")] = VIRTIO_FEATURE_NAMES[i] ?? "UNKNOWN FEATURE BIT";
  }
  return o;
}
