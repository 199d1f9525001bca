// virtio-net as our engine implements it: what we offer and what the config space says.
import { ProtocolFeature, VirtioFeatureBit as F, bit, encodeNetConfig, protocolFeatureMask, VIRTIO_NET_S_LINK_UP } from "@vhostd/proto";
import type { DeviceModel } from "./device_model.js";
import { Rejection } from "./session.js";

/** Features the engine implements for net. Kept constant: front-ends compare them on reconnect. */
export const NET_FEATURES =
  bit(F.VERSION_1) |
  bit(F.LOG_ALL) |
  bit(F.VHOST_USER_PROTOCOL_FEATURES) |
  bit(F.RING_INDIRECT_DESC) |
  bit(F.RING_EVENT_IDX) |
  bit(F.IN_ORDER) |
  bit(F.NET_MRG_RXBUF) |
  bit(F.NET_MQ) |
  bit(F.NET_CTRL_VQ) |
  bit(F.NET_MTU) |
  bit(F.NET_MAC) |
  bit(F.NET_STATUS) |
  bit(F.NET_CSUM) |
  bit(F.NET_GUEST_CSUM) |
  bit(F.NET_HOST_TSO4) |
  bit(F.NET_HOST_TSO6) |
  bit(F.NET_GUEST_TSO4) |
  bit(F.NET_GUEST_TSO6);

export const NET_PROTOCOL_FEATURES = protocolFeatureMask(
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.RARP,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.NET_MTU,
  ProtocolFeature.STATUS,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.CONFIG,
);

export const MIN_MTU = 68;
export const MAX_MTU = 9000;

export class NetModel implements DeviceModel {
  readonly kind = "net" as const;
  readonly offeredFeatures = NET_FEATURES;
  readonly offeredProtocolFeatures = NET_PROTOCOL_FEATURES;
  readonly maxQueues: number;

  constructor(
    readonly mac: string,
    public mtu: number,
    readonly queuePairs: number,
    private readonly onAnnounce: (mac: string) => void = () => {},
  ) {
    this.maxQueues = 2 * queuePairs;
  }

  queueNum(): number {
    return this.queuePairs;
  }

  config(): Buffer {
    return encodeNetConfig({ mac: this.mac, status: VIRTIO_NET_S_LINK_UP, maxVirtqueuePairs: this.queuePairs, mtu: this.mtu });
  }

  writeConfig(offset: number, data: Buffer): void {
    throw new Rejection(`net config space is read-only (write of ${data.length} bytes at ${offset})`);
  }

  setMtu(mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu > MAX_MTU) throw new Rejection(`MTU ${mtu} outside ${MIN_MTU}..${MAX_MTU}`);
    this.mtu = mtu;
  }

  announce(mac: string): void {
    this.onAnnounce(mac);
  }
}

/**
 * The frame QEMU's own announce_self sends for a guest that cannot announce itself: a
 * broadcast RARP "reverse request" (RFC 903) from the guest's MAC, padded to 60 bytes. Peers'
 * switches learn the MAC on its new port from it.
 */
export function rarpFrame(mac: string): Buffer {
  const m = Buffer.from(mac.split(":").map((x) => parseInt(x, 16)));
  if (m.length !== 6 || m.some((x) => Number.isNaN(x))) throw new Rejection(`bad MAC ${mac}`);
  const f = Buffer.alloc(60);
  f.fill(0xff, 0, 6);
  m.copy(f, 6);
  f.writeUInt16BE(0x8035, 12); // ETH_P_RARP
  f.writeUInt16BE(1, 14); // hardware: Ethernet
  f.writeUInt16BE(0x0800, 16); // protocol: IPv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(3, 20); // reverse request
  m.copy(f, 22); // sender hardware address; sender IP 0
  m.copy(f, 32); // target hardware address; target IP 0
  return f;
}
