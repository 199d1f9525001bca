import test from "ava";
import {
  BLK_CONFIG_SIZE,
  DeviceStatus,
  ProtocolError,
  VHOST_F_LOG_ALL,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_S_LINK_UP,
  VirtioFeatureBit as F,
  bit,
  configWindow,
  decodeBlkConfig,
  decodeNetConfig,
  deviceStatusNames,
  encodeBlkConfig,
  encodeNetConfig,
  featureMask,
  featureNames,
  formatMac,
  hasFeature,
  netHeaderSize,
  parseMac,
  splitRingSizes,
} from "../src/index.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
const isProto = { instanceOf: ProtocolError };

test("feature bit numbers match the spec", (t) => {
  t.is(F.NET_MRG_RXBUF, 15);
  t.is(F.NET_CTRL_MAC_ADDR, 23);
  t.is(F.BLK_WRITE_ZEROES, 14);
  t.is(F.RING_EVENT_IDX, 29);
  t.is(F.VHOST_USER_PROTOCOL_FEATURES, 30);
  t.is(F.VERSION_1, 32);
  t.is(F.RING_PACKED, 34);
  t.is(F.RING_RESET, 40);
  t.is(VHOST_F_LOG_ALL, 26);
  t.is(bit(32), 0x1_0000_0000n);
  t.true(hasFeature(bit(F.VERSION_1) | bit(F.NET_MQ), F.NET_MQ));
  t.false(hasFeature(bit(F.VERSION_1), F.NET_MQ));
  t.throws(() => bit(64), isProto);
  t.throws(() => bit(-1), isProto);
});

test("featureNames names bits per device kind", (t) => {
  const f = bit(F.VERSION_1) | bit(F.NET_MRG_RXBUF) | bit(F.RING_INDIRECT_DESC) | bit(F.VHOST_USER_PROTOCOL_FEATURES) | bit(45);
  t.deepEqual(featureNames(f, "net"), ["MRG_RXBUF", "RING_INDIRECT_DESC", "VHOST_USER_PROTOCOL_FEATURES", "VERSION_1", "UNKNOWN(45)"]);
  // the same bit means different things on blk
  t.deepEqual(featureNames(bit(5) | bit(6), "net"), ["MAC", "UNKNOWN(6)"]);
  t.deepEqual(featureNames(bit(5) | bit(6), "blk"), ["RO", "BLK_SIZE"]);
  t.deepEqual(featureNames(bit(VHOST_F_LOG_ALL), "blk"), ["LOG_ALL"]);
  t.deepEqual(featureNames(0n, "net"), []);
  t.throws(() => featureNames(1n, "scsi" as "net"), isProto);
});

test("featureMask inverts featureNames and accepts C spellings", (t) => {
  const f = bit(F.VERSION_1) | bit(F.NET_MRG_RXBUF) | bit(F.RING_EVENT_IDX) | bit(F.NET_MQ);
  t.is(featureMask(featureNames(f, "net"), "net"), f);
  t.is(featureMask(["VIRTIO_NET_F_MRG_RXBUF", "VIRTIO_F_VERSION_1", "VIRTIO_RING_F_EVENT_IDX", "net_mq"], "net"), f);
  t.is(featureMask(["FLUSH", "BLK_DISCARD", "VHOST_F_LOG_ALL"], "blk"), bit(9) | bit(13) | bit(26));
  t.throws(() => featureMask(["MRG_RXBUF"], "blk"), { ...isProto, message: /unknown blk feature/ });
});

test("device status", (t) => {
  t.is(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK, 0xf);
  t.deepEqual(deviceStatusNames(0x8f), ["ACKNOWLEDGE", "DRIVER", "DRIVER_OK", "FEATURES_OK", "FAILED"]);
  t.deepEqual(deviceStatusNames(0x10), ["UNKNOWN(16)"]);
});

test("net header size depends on VERSION_1 / MRG_RXBUF", (t) => {
  t.is(netHeaderSize(0n), 10);
  t.is(netHeaderSize(bit(F.VERSION_1)), VIRTIO_NET_HDR_SIZE);
  t.is(netHeaderSize(bit(F.NET_MRG_RXBUF)), 12);
  t.is(netHeaderSize(bit(F.VERSION_1) | bit(F.NET_HASH_REPORT)), 20);
});

test("MAC parsing is strict", (t) => {
  t.deepEqual(parseMac("52:54:00:AB:cd:ef"), hex("525400abcdef"));
  t.is(formatMac(hex("525400abcdef")), "52:54:00:ab:cd:ef");
  for (const bad of ["52:54:00:ab:cd", "52:54:00:ab:cd:ef:01", "52-54-00-ab-cd-ef", "5:54:00:ab:cd:ef", "52:54:00:ab:cd:eg", " 52:54:00:ab:cd:ef", ""]) {
    t.throws(() => parseMac(bad), isProto, bad);
  }
  t.throws(() => parseMac(undefined as unknown as string), isProto);
  t.throws(() => formatMac(Buffer.alloc(5)), isProto);
});

test("golden: virtio_net_config", (t) => {
  const c = { mac: "52:54:00:12:34:56", status: VIRTIO_NET_S_LINK_UP, maxVirtqueuePairs: 4, mtu: 1500 };
  const b = encodeNetConfig(c);
  t.deepEqual(b, hex("525400123456 0100 0400 dc05"));
  t.deepEqual(decodeNetConfig(b), c);
  const full = { ...c, speed: 10000, duplex: 1 };
  const fb = encodeNetConfig(full);
  t.deepEqual(fb, hex("525400123456 0100 0400 dc05 10270000 01 00 0000 00000000"));
  t.deepEqual(decodeNetConfig(fb), full);
  t.throws(() => encodeNetConfig({ ...c, mtu: 70000 }), isProto);
  t.throws(() => decodeNetConfig(Buffer.alloc(11)), isProto);
});

test("golden: virtio_blk_config offsets", (t) => {
  const c = {
    capacity: 0x80000n, // 256 MiB in sectors
    sizeMax: 0x10000,
    segMax: 126,
    geometry: { cylinders: 0x102, heads: 16, sectors: 63 },
    blkSize: 4096,
    topology: { physicalBlockExp: 3, alignmentOffset: 1, minIoSize: 8, optIoSize: 0x100 },
    writeback: 1,
    numQueues: 2,
    maxDiscardSectors: 0xaaaa,
    maxDiscardSeg: 1,
    discardSectorAlignment: 8,
    maxWriteZeroesSectors: 0xbbbb,
    maxWriteZeroesSeg: 2,
    writeZeroesMayUnmap: 1,
    maxSecureEraseSectors: 0xcccc,
    maxSecureEraseSeg: 3,
    secureEraseSectorAlignment: 16,
  };
  const b = encodeBlkConfig(c);
  t.is(b.length, BLK_CONFIG_SIZE);
  const want = hex(
    "0000080000000000" + // 0 capacity
      "00000100" + // 8 size_max
      "7e000000" + // 12 seg_max
      "0201 10 3f" + // 16 cylinders, heads, sectors
      "00100000" + // 20 blk_size
      "03 01 0800 00010000" + // 24 physical_block_exp, alignment_offset, min_io_size, opt_io_size
      "01 00 0200" + // 32 writeback, unused, num_queues
      "aaaa0000 01000000 08000000" + // 36 discard
      "bbbb0000 02000000" + // 48 write zeroes
      "01 000000" + // 56 write_zeroes_may_unmap + unused
      "cccc0000 03000000 10000000", // 60 secure erase
  );
  t.deepEqual(b.subarray(0, 72), want);
  t.deepEqual(b.subarray(72), Buffer.alloc(24)); // zoned: never offered
  t.deepEqual(decodeBlkConfig(b), c);
  const min = encodeBlkConfig({ capacity: 1n });
  t.is(decodeBlkConfig(min).numQueues, 0);
  t.throws(() => encodeBlkConfig({ capacity: -1n }), isProto);
  t.throws(() => encodeBlkConfig({ capacity: 1n, numQueues: 0x10000 }), isProto);
  t.throws(() => decodeBlkConfig(Buffer.alloc(60)), isProto);
});

test("configWindow slices and zero-fills", (t) => {
  const blob = hex("0102030405");
  t.deepEqual(configWindow(blob, 1, 3), hex("020304"));
  t.deepEqual(configWindow(blob, 3, 4), hex("04050000"));
  t.deepEqual(configWindow(blob, 10, 2), hex("0000"));
  t.throws(() => configWindow(blob, 0, 257), isProto);
});

test("split ring sizes", (t) => {
  t.deepEqual(splitRingSizes(256), { desc: 4096, avail: 518, used: 2054 });
  t.throws(() => splitRingSizes(0), isProto);
  t.throws(() => splitRingSizes(65536), isProto);
});
