// Every symbol of the front-end driver's addon (vhostd_frontend.node), declared once: the
// contract between C++ (../cc/, registered by cc/driver_napi.cc) and TS. The driver is a tool
// (drills, tests, the bench), not the product: the daemons never load this addon.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/* ------------------------------------------------------------ drivers (cc/driver_*.cc) */

export interface DriverOptions {
  /** Bytes of memfd "guest" memory (default 64 MiB). */
  memSize?: number;
  queuePairs?: number;
  /** Ring size, power of two (default 256). */
  queueSize?: number;
  /** Negotiated virtio features the driver must honour (header size, MRG_RXBUF, EVENT_IDX). */
  features?: bigint;
}

export interface DriverRing {
  desc: bigint;
  avail: bigint;
  used: bigint;
  kickFd: number;
  callFd: number;
}

export interface TxOptions {
  dstMac: string;
  srcMac: string;
  /** Ethernet frame size without the virtio-net header (60..9000). */
  frameSize: number;
  /** Frames to send; 0 = until stopTx(). */
  count?: number;
  /** Frames per second; 0 = as fast as the ring allows. */
  ratePps?: number;
  /** Tags frames so a receiver can tell streams apart. */
  streamId?: number;
}

export interface DriverStats {
  txPackets: number;
  txBytes: number;
  /** Times the driver wanted to send but found the TX ring full (it waits; nothing is dropped). */
  txRingFull: number;
  rxPackets: number;
  rxBytes: number;
  /** Frames that were not ours (no magic), counted and otherwise ignored. */
  rxForeign: number;
  /** Per streamId (expected seq starts at 0; startRx resets): frames still missing (a gap adds,
   *  a late arrival of a seq counted missing within the last 4096 subtracts). */
  rxLost: number;
  /** A seq below the expected one that was not counted missing (or is older than 4096 seqs). */
  rxDuplicated: number;
  /** Our magic but a bad length, ethertype, checksum or fill pattern (sequence state untouched). */
  rxCorrupted: number;
  /** Late arrivals of seqs counted missing before (moved from rxLost). */
  rxReordered: number;
  /** Longest time between two of our received frames since startRx, in µs. */
  rxMaxGapUs: number;
  /** Back-end misbehaviour seen on the pair's rings (bad used id/len/idx, bad num_buffers). */
  ringErrors: number;
  /** Receive passes that found every posted buffer used: the device had none to fill (a frame
   *  arriving then is dropped by the device because this driver was late, not by its fault). */
  rxRingEmptied: number;
}

/** One-way latency since startRx: sender's timestamp in the frame to its verification. */
export interface DriverLatency {
  count: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
}

/** What the vhost-user handshake (FrontendDriver) needs of a driver device: memory and rings. */
export interface NativeDriverRings {
  readonly memFd: number;
  readonly memSize: number;
  /** Address of the memory in this process; used as both guest and user address (like virtio-user). */
  readonly memAddr: bigint;
  ring(queue: number): DriverRing;
  /** Lay out the rings again (indices back to 0) as after a fresh negotiation. */
  resetRings(features: bigint): void;
  close(): void;
}

export interface NativeDriverDevice extends NativeDriverRings {
  startTx(pair: number, opts: TxOptions): void;
  stopTx(pair: number): void;
  startRx(pair: number): void;
  stopRx(pair: number): void;
  stats(pair: number): DriverStats;
  /** Percentiles have 1 µs resolution (max is exact); samples above 8.192 ms count at max. */
  latency(pair: number): DriverLatency;
  /** Raw access to driver memory, for crafting hostile rings in tests. */
  writeMem(addr: bigint, data: Buffer): void;
  readMem(addr: bigint, len: number): Buffer;
  close(): void;
}

export interface BlkDriverOptions {
  /** Ring size, power of two, 4..32768 (default 128); at most queueSize / 3 requests in flight. */
  queueSize?: number;
  /** Bytes of memfd memory; default (0) the minimum for the ring and buffers. */
  memSize?: number;
}

export interface BlkLoadOptions {
  /** Requests kept in flight, 1..maxQueueDepth. */
  queueDepth: number;
  /** Share of writes, 0..100 (the rest are reads). */
  writePercent: number;
  /** 4 KiB requests go to random 4 KiB-aligned blocks of [0, sectors) (512-byte sectors, >= 8). */
  sectors: number;
  /** xorshift seed (default 1), for a repeatable sector sequence. */
  seed?: number;
}

export interface BlkDriverStats {
  submitted: number;
  completed: number;
  reads: number;
  writes: number;
  /** Completed requests whose status byte was not VIRTIO_BLK_S_OK (0). */
  errors: number;
  /** Back-end misbehaviour on the ring (used id not in flight, impossible used index). */
  ringErrors: number;
  inFlight: number;
  running: boolean;
  /** Unusable until the next handshake (resetRings): impossible used index or a timed-out request. */
  broken: boolean;
  /** Submit-to-completion latency since startLoad/clearStats: 1 µs buckets up to 65.5 ms, max exact. */
  latencyCount: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

/**
 * The front-end driver as a virtio-blk load generator on one request queue (cc/driver_blk.h):
 * a native thread keeps queueDepth 4 KiB requests in flight and busy-polls for completions.
 */
export interface NativeBlkDriver extends NativeDriverRings {
  /** queueSize / 3: each request is a chain of three descriptors. */
  readonly maxQueueDepth: number;
  startLoad(opts: BlkLoadOptions): void;
  /** Stops submitting; requests in flight still complete (watch stats().inFlight). */
  stopLoad(): void;
  /** Zeroes counters and latency (not inFlight): the start of a measurement window. */
  clearStats(): void;
  stats(): BlkDriverStats;
  /**
   * One 4 KiB request while no load runs, polled for on the calling (JS) thread for up to
   * timeoutMs (default 5000): a write sends data (4096 bytes), a read returns it. status is the
   * device's status byte (0 OK). Throws when it cannot be sent or does not complete in time.
   */
  request(type: "read" | "write", sector: number, data?: Buffer, timeoutMs?: number): { status: number; data: Buffer };
}

/* --------------------------------------------------------------------- the addon itself */

export interface FrontendAddon {
  DriverDevice: new (opts: DriverOptions) => NativeDriverDevice;
  BlkDriver: new (opts?: BlkDriverOptions) => NativeBlkDriver;

  /* test support (driver frame format, cc/test_frame.cc) */
  _buildFrame(opts: { dstMac: string; srcMac: string; frameSize: number; streamId?: number; seq: number | bigint; txNs?: bigint }): Buffer;
  _checkFrame(frame: Buffer): { verdict: "ok" | "foreign" | "corrupt"; streamId: number; seq: bigint; txNs: bigint; problem: string };
}

// VHOSTD_FRONTEND_ADDON: another build of the same addon, e.g. the ASan+UBSan one
// (../native/scripts/build-asan.mjs, run by scripts/test-native-asan.sh at the root).
export const frontendAddon: FrontendAddon = require(process.env.VHOSTD_FRONTEND_ADDON || "../../build/Release/vhostd_frontend.node");
