// The blk flavour of the project's front-end driver: a FrontendDriver around a native
// BlkDriver (one request queue, a 4 KiB load generator; cc/driver_blk.h), and the one piece
// of virtio-blk config it needs, the capacity.
import { ProtocolFeature, VirtioFeatureBit as F, bit, hasFeature } from "@vhostd/proto";
import { FrontendDriver, type FrontendDevice, type FrontendOptions } from "./frontend.js";
import { frontendAddon, type NativeBlkDriver } from "./native.js";

/** VERSION_1, EVENT_IDX and protocol features; the BLK_ limits only say what the device accepts,
 *  and FLUSH lets it cache writes (without FLUSH a driver must assume write-through). */
export const BLK_WANT_FEATURES: bigint = [
  F.VERSION_1,
  F.RING_EVENT_IDX,
  F.VHOST_USER_PROTOCOL_FEATURES,
  F.BLK_SIZE_MAX,
  F.BLK_SEG_MAX,
  F.BLK_BLK_SIZE,
  F.BLK_FLUSH,
].reduce((m, b) => m | bit(b), 0n);

/** CONFIG for the capacity; no MQ: one request queue. */
export const BLK_WANT_PROTOCOL_FEATURES: bigint = [ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.STATUS].reduce(
  (m, b) => m | bit(b),
  0n,
);

/** FrontendOptions that mean something for blk (queuePairs and mac do not). */
export type BlkFrontendOptions = Omit<FrontendOptions, "queuePairs" | "mac">;

export type BlkFrontend = FrontendDriver<NativeBlkDriver>;

function blkDevice(o: FrontendOptions): FrontendDevice<NativeBlkDriver> {
  const queueSize = o.queueSize ?? 128;
  return {
    device: new frontendAddon.BlkDriver({ queueSize, memSize: o.memSize }),
    queues: 1,
    queueSize,
    minQueueNum: 0,
    wantFeatures: BLK_WANT_FEATURES,
    wantProtocolFeatures: BLK_WANT_PROTOCOL_FEATURES,
  };
}

function checkBlkOptions(o: BlkFrontendOptions): void {
  const extra = o as FrontendOptions;
  if (extra.queuePairs !== undefined || extra.mac !== undefined) throw new TypeError("queuePairs and mac are net options");
}

/** Client: connects to a vhost-user-blk back-end listening on path (e.g. qemu-storage-daemon). */
export function connectBlk(path: string, opts: BlkFrontendOptions = {}): Promise<BlkFrontend> {
  checkBlkOptions(opts);
  return FrontendDriver.open(path, "client", opts, blkDevice);
}

/** Server: listens on path until a vhost-user-blk back-end connects (a back-end in client mode, like our VF added without --server). */
export function listenBlk(path: string, opts: BlkFrontendOptions = {}): Promise<BlkFrontend> {
  checkBlkOptions(opts);
  return FrontendDriver.open(path, "server", opts, blkDevice);
}

/**
 * The disk size in 512-byte sectors, from the config space (virtio_blk_config.capacity, the
 * first 8 bytes) after handshake(); undefined when the back-end did not offer CONFIG.
 */
export async function blkCapacity(fe: BlkFrontend): Promise<bigint | undefined> {
  if (!hasFeature(fe.protocolFeatures, ProtocolFeature.CONFIG)) return undefined;
  return (await fe.getConfig(0, 8)).readBigUInt64LE(0);
}
