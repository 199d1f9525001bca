// virtio-blk as our engine implements it (packages/native/cc/blk_device.h): what we offer and
// what the config space says. The limits here are the ones the engine enforces per request.
import {
  BLK_CONFIG_OFFSETS,
  ProtocolFeature,
  VirtioFeatureBit as F,
  bit,
  encodeBlkConfig,
  protocolFeatureMask,
} from "@vhostd/proto";
import type { DeviceModel } from "./device_model.js";
import { Rejection } from "./session.js";

/** Kept in step with kBlkSegMax, kBlkSizeMax, kBlkMaxDiscardSectors, kBlkMaxDiscardSeg (blk_device.h). */
export const BLK_SEG_MAX = 126;
export const BLK_SIZE_MAX = 1 << 20;
export const BLK_MAX_DISCARD_SECTORS = 1 << 22;
export const BLK_MAX_DISCARD_SEG = 1;

/** Offered to every blk VF (plus RO for a read-only disk). Constant: front-ends compare them on reconnect. */
export const BLK_FEATURES =
  bit(F.VERSION_1) |
  bit(F.LOG_ALL) |
  bit(F.VHOST_USER_PROTOCOL_FEATURES) |
  bit(F.RING_INDIRECT_DESC) |
  bit(F.RING_EVENT_IDX) |
  bit(F.BLK_SIZE_MAX) |
  bit(F.BLK_SEG_MAX) |
  bit(F.BLK_BLK_SIZE) |
  bit(F.BLK_TOPOLOGY) |
  bit(F.BLK_FLUSH) |
  bit(F.BLK_CONFIG_WCE) |
  bit(F.BLK_MQ) |
  bit(F.BLK_DISCARD) |
  bit(F.BLK_WRITE_ZEROES);

// CONFIG is what QEMU's vhost-user-blk requires (it reads capacity and limits with GET_CONFIG).
export const BLK_PROTOCOL_FEATURES = protocolFeatureMask(
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.INFLIGHT_SHMFD,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.CONFIG,
  ProtocolFeature.STATUS,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
);

export interface BlkGeometryInfo {
  /** 512-byte sectors. */
  capacity: bigint;
  logicalBlockSize: number;
  physicalBlockSize: number;
}

export class BlkModel implements DeviceModel {
  readonly kind = "blk" as const;
  readonly offeredFeatures: bigint;
  readonly offeredProtocolFeatures = BLK_PROTOCOL_FEATURES;
  readonly maxQueues: number;
  /** CONFIG_WCE: 1 write-back (the default), 0 write-through. */
  writeback = 1;

  constructor(
    readonly info: BlkGeometryInfo,
    readonly numQueues: number,
    readonly readonly: boolean,
    private readonly onWriteback: (writeback: boolean) => void = () => {},
  ) {
    this.maxQueues = numQueues;
    this.offeredFeatures = BLK_FEATURES | (readonly ? bit(F.BLK_RO) : 0n);
  }

  queueNum(): number {
    return this.numQueues;
  }

  config(): Buffer {
    const { logicalBlockSize: lbs, physicalBlockSize: pbs } = this.info;
    return encodeBlkConfig({
      capacity: this.info.capacity,
      sizeMax: BLK_SIZE_MAX,
      segMax: BLK_SEG_MAX,
      blkSize: lbs,
      topology: { physicalBlockExp: Math.max(0, Math.round(Math.log2(pbs / lbs))), alignmentOffset: 0, minIoSize: 1, optIoSize: 0 },
      writeback: this.writeback,
      numQueues: this.numQueues,
      maxDiscardSectors: BLK_MAX_DISCARD_SECTORS,
      maxDiscardSeg: BLK_MAX_DISCARD_SEG,
      discardSectorAlignment: Math.max(1, pbs / 512),
      maxWriteZeroesSectors: BLK_MAX_DISCARD_SECTORS,
      maxWriteZeroesSeg: BLK_MAX_DISCARD_SEG,
      writeZeroesMayUnmap: 1,
    });
  }

  /** Only the writeback byte (CONFIG_WCE) is writable. */
  writeConfig(offset: number, data: Buffer): void {
    if (offset !== BLK_CONFIG_OFFSETS.writeback || data.length !== 1) {
      throw new Rejection(`blk config: only the writeback byte (offset ${BLK_CONFIG_OFFSETS.writeback}) is writable, not ${data.length} bytes at ${offset}`);
    }
    if (data[0]! > 1) throw new Rejection(`blk config: writeback ${data[0]} is not 0 or 1`);
    this.writeback = data[0]!;
    this.onWriteback(this.writeback === 1);
  }

  setMtu(mtu: number): void {
    throw new Rejection(`NET_SET_MTU (${mtu}) on a blk device`);
  }

  announce(): void {
    throw new Rejection("SEND_RARP on a blk device");
  }
}
