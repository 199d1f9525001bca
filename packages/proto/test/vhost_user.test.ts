import test from "ava";
import {
  HEADER_SIZE,
  MAX_MEM_REGIONS,
  MAX_PAYLOAD,
  MESSAGES,
  MsgFlag,
  ProtocolError,
  ProtocolFeature,
  Req,
  checkFdCount,
  checkHeader,
  codec,
  decodeHeader,
  decodeMessage,
  decodePayload,
  decodeRequest,
  encodeAck,
  encodeHeader,
  encodeMessage,
  encodeReply,
  protocolFeatureMask,
  protocolFeatureNames,
  requestFromName,
  requestName,
  type MemRegionDesc,
  type PayloadKind,
} from "../src/index.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
const isProto = { instanceOf: ProtocolError };

const region = (gpa: bigint, size: bigint, ua = 0x7f0000000000n, off = 0n): MemRegionDesc => ({
  guestAddr: gpa,
  size,
  userAddr: ua,
  mmapOffset: off,
});

// ------------------------------------------------------------ header

test("header round-trips and has the spec layout", (t) => {
  const h = { request: Req.GET_FEATURES, flags: MsgFlag.VERSION, size: 0 };
  const b = encodeHeader(h);
  t.deepEqual(b, hex("01000000 01000000 00000000"));
  t.deepEqual(decodeHeader(b), h);
  // with an offset into a larger buffer
  t.deepEqual(decodeHeader(Buffer.concat([Buffer.alloc(3), b]), 3), h);
});

test("decodeHeader rejects short input; checkHeader bad version and oversize payload", (t) => {
  t.throws(() => decodeHeader(Buffer.alloc(11)), { ...isProto, message: /11 bytes, expected 12/ });
  t.throws(() => decodeHeader(Buffer.alloc(12), 4), isProto);
  t.throws(() => decodeHeader(Buffer.alloc(12), -1), isProto);
  t.throws(() => decodeHeader("nope" as unknown as Buffer), isProto);
  // decodeHeader itself does not judge version or size: the session reports those in its own words
  const v2 = decodeHeader(hex("01000000 02000000 00000000"));
  t.deepEqual(v2, { request: 1, flags: 2, size: 0 });
  t.throws(() => checkHeader(v2), { ...isProto, message: /version 2/ });
  t.throws(() => checkHeader(decodeHeader(hex("01000000 00000000 00000000"))), { ...isProto, message: /version 0/ });
  const big = decodeHeader(encodeHeader({ request: 5, flags: 1, size: MAX_PAYLOAD + 1 }));
  t.throws(() => checkHeader(big), { ...isProto, message: /SET_MEM_TABLE payload size 4097/ });
  t.throws(() => decodeMessage(encodeHeader({ request: 5, flags: 1, size: MAX_PAYLOAD + 1 })), isProto);
  t.notThrows(() => checkHeader({ request: 5, flags: 1 | 0x8 | 0x100, size: MAX_PAYLOAD }));
});

test("encodeHeader rejects out-of-range fields", (t) => {
  t.throws(() => encodeHeader({ request: -1, flags: 1, size: 0 }), isProto);
  t.throws(() => encodeHeader({ request: 1, flags: 2 ** 32, size: 0 }), isProto);
  t.throws(() => encodeHeader({ request: 1, flags: 1, size: 1.5 }), isProto);
});

test("golden: GET_FEATURES request, SET_FEATURES ack reply", (t) => {
  t.deepEqual(encodeMessage(Req.GET_FEATURES), hex("01000000 01000000 00000000"));
  t.deepEqual(encodeAck(Req.SET_FEATURES, true), hex("02000000 05000000 08000000 0000000000000000"));
  t.deepEqual(encodeAck(Req.SET_FEATURES, false), hex("02000000 05000000 08000000 0100000000000000"));
  // GET_FEATURES reply: VERSION_1 | PROTOCOL_FEATURES = bit 32 | bit 30
  t.deepEqual(
    encodeReply(Req.GET_FEATURES, codec.u64.encode((1n << 32n) | (1n << 30n))),
    hex("01000000 05000000 08000000 00000040 01000000"),
  );
});

test("golden: SET_VRING_ADDR", (t) => {
  const addr = { index: 1, flags: 0, desc: 0x1000n, used: 0x2000n, avail: 0x3000n, log: 0n };
  const msg = encodeMessage(Req.SET_VRING_ADDR, codec.vringAddr.encode(addr), MsgFlag.VERSION | MsgFlag.NEED_REPLY);
  t.deepEqual(
    msg,
    hex(
      "09000000 09000000 28000000" + // request 9, flags VERSION|NEED_REPLY, size 40
        "01000000 00000000" + // index 1, flags 0
        "0010000000000000" + // desc
        "0020000000000000" + // used
        "0030000000000000" + // avail
        "0000000000000000", // log
    ),
  );
  const m = decodeMessage(msg)!;
  t.is(m.header.size, 40);
  t.deepEqual(decodeRequest(m.header.request, m.payload), { kind: "vringAddr", value: addr });
});

test("golden: SET_MEM_TABLE with one region, SET_VRING_CALL with NOFD", (t) => {
  const r = region(0n, 0x40000000n, 0x7f1234560000n, 0x1000n);
  t.deepEqual(
    encodeMessage(Req.SET_MEM_TABLE, codec.memTable.encode([r])),
    hex(
      "05000000 01000000 28000000" + // size 8 + 32
        "01000000 00000000" + // nregions 1, padding
        "0000000000000000" + // guest_phys_addr
        "0000004000000000" + // memory_size 1 GiB
        "00005634127f0000" + // userspace_addr
        "0010000000000000", // mmap_offset
    ),
  );
  t.deepEqual(codec.vringFd.encode({ index: 1, noFd: true }), hex("0101000000000000"));
  t.deepEqual(codec.vringFd.decode(hex("0300000000000000")), { index: 3, noFd: false });
});

test("golden: inflight is encoded as QEMU's 24-byte struct, 20 accepted", (t) => {
  const v = { mmapSize: 0x2000n, mmapOffset: 0n, numQueues: 2, queueSize: 256 };
  const b = codec.inflight.encode(v);
  t.deepEqual(b, hex("0020000000000000 0000000000000000 0200 0001 00000000"));
  t.deepEqual(codec.inflight.decode(b), v);
  t.deepEqual(codec.inflight.decode(b.subarray(0, 20)), v);
  t.throws(() => codec.inflight.decode(Buffer.alloc(16)), { ...isProto, message: /16 bytes, expected 24/ });
  // mmap_size 0 is the legal "no area" answer / request
  t.deepEqual(codec.inflight.decode(Buffer.alloc(24)), { mmapSize: 0n, mmapOffset: 0n, numQueues: 0, queueSize: 0 });
});

test("golden: SEND_RARP and GET_CONFIG", (t) => {
  t.is(codec.rarp.decode(hex("525400123456 0000")), "52:54:00:12:34:56");
  t.deepEqual(codec.rarp.encode("52:54:00:12:34:56"), hex("5254001234560000"));
  const cfg = { offset: 0, size: 4, flags: 0, data: hex("deadbeef") };
  t.deepEqual(codec.config.encode(cfg), hex("00000000 04000000 00000000 deadbeef"));
});

// ------------------------------------------------------------ round trips

test("every codec round-trips", (t) => {
  const u64s = [0n, 1n, 0xffff_ffff_ffff_ffffn, 0x1_0000_0000n];
  for (const v of u64s) t.is(codec.u64.decode(codec.u64.encode(v)), v);

  const vs = { index: 0xffff_ffff, num: 256 };
  t.deepEqual(codec.vringState.decode(codec.vringState.encode(vs)), vs);

  const va = { index: 3, flags: 1, desc: 0xffff_ffff_ffff_fff0n, used: 2n, avail: 3n, log: 0xabcdefn };
  t.deepEqual(codec.vringAddr.decode(codec.vringAddr.encode(va)), va);

  for (let n = 0; n <= MAX_MEM_REGIONS; n++) {
    const regions = Array.from({ length: n }, (_, i) => region(BigInt(i) << 32n, 0x1000_0000n, 0x7f00_0000_0000n + (BigInt(i) << 32n), BigInt(i)));
    const enc = codec.memTable.encode(regions);
    t.is(enc.length, 8 + 32 * n);
    t.deepEqual(codec.memTable.decode(enc), regions);
  }

  const r = region(0x1_0000_0000n, 0x8000_0000n, 0x7fff_0000_0000n, 0x4000n);
  const rb = codec.memRegion.encode(r);
  t.is(rb.length, 40);
  t.deepEqual(rb.subarray(0, 8), Buffer.alloc(8)); // padding
  t.deepEqual(codec.memRegion.decode(rb), r);

  for (const fd of [{ index: 0, noFd: false }, { index: 255, noFd: true }]) t.deepEqual(codec.vringFd.decode(codec.vringFd.encode(fd)), fd);

  const log = { size: 0x10000n, offset: 0x200n };
  t.deepEqual(codec.log.decode(codec.log.encode(log)), log);

  const cfg = { offset: 8, size: 248, flags: 1, data: Buffer.alloc(248, 7) };
  t.deepEqual(codec.config.decode(codec.config.encode(cfg)), cfg);
  const empty = { offset: 256, size: 0, flags: 0, data: Buffer.alloc(0) };
  t.deepEqual(codec.config.decode(codec.config.encode(empty)), empty);

  const inf = { mmapSize: 0x1000n, mmapOffset: 0x2000n, numQueues: 0xffff, queueSize: 1024 };
  t.deepEqual(codec.inflight.decode(codec.inflight.encode(inf)), inf);

  for (const s of [0, 0x0f, 0xff]) t.is(codec.status.decode(codec.status.encode(s)), s);

  t.is(codec.rarp.decode(codec.rarp.encode("aa:bb:cc:dd:ee:ff")), "aa:bb:cc:dd:ee:ff");

  const area = { index: 7, noFd: false, size: 0x1000n, offset: 0n };
  t.deepEqual(codec.vringArea.decode(codec.vringArea.encode(area)), area);

  const iotlb = { iova: 0x1000n, size: 0x2000n, uaddr: 0x3000n, perm: 3, type: 2 };
  const ib = codec.iotlb.encode(iotlb);
  t.is(ib.length, 32);
  t.deepEqual(codec.iotlb.decode(ib), iotlb);
});

test("decoders accept Uint8Array views, not just Buffers", (t) => {
  const b = codec.vringState.encode({ index: 1, num: 2 });
  const view = new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
  t.deepEqual(codec.vringState.decode(view as Buffer), { index: 1, num: 2 });
});

// ------------------------------------------------------------ rejections

test("wrong payload sizes are rejected with a message naming the request", (t) => {
  t.throws(() => decodeRequest(Req.SET_VRING_ADDR, Buffer.alloc(12)), {
    ...isProto,
    message: "SET_VRING_ADDR payload is 12 bytes, expected 40",
  });
  t.throws(() => decodeRequest(Req.SET_FEATURES, Buffer.alloc(4)), { ...isProto, message: /SET_FEATURES payload is 4 bytes, expected 8/ });
  t.throws(() => decodeRequest(Req.SET_VRING_NUM, Buffer.alloc(9)), isProto);
  t.throws(() => decodeRequest(Req.ADD_MEM_REG, Buffer.alloc(32)), { ...isProto, message: /ADD_MEM_REG payload is 32 bytes, expected 40/ });
  t.throws(() => decodeRequest(Req.SET_LOG_BASE, Buffer.alloc(8)), isProto);
  t.throws(() => decodeRequest(Req.GET_FEATURES, Buffer.alloc(4)), isProto);
  t.throws(() => decodeRequest(Req.SEND_RARP, Buffer.alloc(6)), isProto);
  t.throws(() => codec.status.decode(Buffer.alloc(1)), isProto);
  // "none" tolerates a stray zero u64 (some front-ends send one)
  t.deepEqual(decodeRequest(Req.GET_FEATURES, Buffer.alloc(0)), { kind: "none" });
  t.deepEqual(decodeRequest(Req.GET_FEATURES, Buffer.alloc(8)), { kind: "none" });
});

test("memory table: too many regions, size mismatch, bad regions", (t) => {
  const nine = Buffer.alloc(8 + 32 * 9);
  nine.writeUInt32LE(9, 0);
  t.throws(() => codec.memTable.decode(nine), { ...isProto, message: /9 regions, at most 8/ });
  const huge = Buffer.alloc(8);
  huge.writeUInt32LE(0xffff_ffff, 0);
  t.throws(() => codec.memTable.decode(huge), isProto);

  const one = codec.memTable.encode([region(0n, 0x1000n)]);
  t.throws(() => codec.memTable.decode(Buffer.concat([one, Buffer.alloc(32)])), { ...isProto, message: /72 bytes, expected 40 for 1 regions/ });
  t.throws(() => codec.memTable.decode(one.subarray(0, 39)), isProto);
  t.throws(() => codec.memTable.decode(Buffer.alloc(4)), isProto);

  const zero = Buffer.from(one);
  zero.writeBigUInt64LE(0n, 16); // size 0
  t.throws(() => codec.memTable.decode(zero), { ...isProto, message: /size 0/ });
  const wrap = Buffer.from(one);
  wrap.writeBigUInt64LE(0xffff_ffff_ffff_f000n, 8); // gpa near the top, size 0x1000 + 1 page over
  wrap.writeBigUInt64LE(0x2000n, 16);
  t.throws(() => codec.memTable.decode(wrap), { ...isProto, message: /wraps/ });
  const top = Buffer.from(one);
  top.writeBigUInt64LE(0xffff_ffff_ffff_f000n, 8); // exactly reaching 2^64 is fine
  t.notThrows(() => codec.memTable.decode(top));

  const overlap = codec.memTable.encode([region(0n, 0x1000n), region(0x2000n, 0x1000n)]);
  overlap.writeBigUInt64LE(0x800n, 8 + 32); // second region now starts inside the first
  t.throws(() => codec.memTable.decode(overlap), { ...isProto, message: /overlap/ });

  t.throws(() => codec.memTable.encode(Array.from({ length: 9 }, (_, i) => region(BigInt(i) << 20n, 0x1000n))), isProto);
  t.throws(() => codec.memRegion.decode(codec.memRegion.encode(region(0n, 1n)).fill(0, 16, 24)), isProto);
});

test("vring fd: reserved bits are rejected", (t) => {
  for (const v of [0x200n, 0x1_0000_0000n, 1n << 63n, 0x2ffn]) {
    t.throws(() => codec.vringFd.decode(codec.u64.encode(v)), { ...isProto, message: /reserved bits/ });
  }
  t.throws(() => codec.vringFd.encode({ index: 256, noFd: false }), isProto);
  t.throws(() => codec.vringArea.decode(Buffer.concat([codec.u64.encode(0x400n), Buffer.alloc(16)])), isProto);
});

test("field ranges: vring addr flags, status, config, log", (t) => {
  const va = codec.vringAddr.encode({ index: 0, flags: 1, desc: 0n, used: 0n, avail: 0n, log: 0n });
  va.writeUInt32LE(2, 4);
  t.throws(() => codec.vringAddr.decode(va), { ...isProto, message: /flags 0x2/ });
  t.throws(() => codec.status.decode(codec.u64.encode(0x100n)), isProto);
  t.throws(() => codec.status.encode(256), isProto);

  const cfg = (offset: number, size: number, flags: number, len = size) => {
    const b = Buffer.alloc(12 + len);
    b.writeUInt32LE(offset, 0);
    b.writeUInt32LE(size, 4);
    b.writeUInt32LE(flags, 8);
    return b;
  };
  t.notThrows(() => codec.config.decode(cfg(0, 256, 0)));
  t.throws(() => codec.config.decode(cfg(0, 257, 0)), { ...isProto, message: /size is 257/ });
  t.throws(() => codec.config.decode(cfg(200, 60, 0)), { ...isProto, message: /exceeds/ });
  t.throws(() => codec.config.decode(cfg(0xffff_ffff, 4, 0)), isProto);
  t.throws(() => codec.config.decode(cfg(0, 4, 2)), { ...isProto, message: /flags/ });
  t.throws(() => codec.config.decode(cfg(0, 4, 0, 3)), { ...isProto, message: /15 bytes, expected 16/ });
  t.throws(() => codec.config.decode(Buffer.alloc(11)), isProto);
  t.throws(() => codec.config.encode({ offset: 0, size: 4, flags: 0, data: Buffer.alloc(3) }), isProto);

  t.throws(() => codec.log.decode(Buffer.alloc(16)), { ...isProto, message: /mmap_size is 0/ });
  t.throws(() => codec.log.decode(codec.log.encode({ size: 2n, offset: 0xffff_ffff_ffff_ffffn })), { ...isProto, message: /wraps/ });
  t.throws(() => codec.u64.encode(-1n), isProto);
  t.throws(() => codec.u64.encode(1n << 64n), isProto);
  t.throws(() => codec.rarp.encode("52:54:00:12:34"), isProto);
});

test("unknown requests and request names", (t) => {
  t.is(requestName(Req.SET_VRING_ADDR), "SET_VRING_ADDR");
  t.is(requestName(99), "UNKNOWN(99)");
  t.is(requestName(0), "UNKNOWN(0)");
  t.is(requestName(-1), "UNKNOWN(-1)");
  t.is(requestName(1.5), "UNKNOWN(1.5)");
  t.is(requestFromName("set_vring_kick"), Req.SET_VRING_KICK);
  t.is(requestFromName("VHOST_USER_GET_STATUS"), Req.GET_STATUS);
  t.throws(() => requestFromName("SET_VRING_TURBO"), { ...isProto, message: /unknown vhost-user request name/ });
  t.throws(() => requestFromName("toString"), isProto);
  t.throws(() => decodeRequest(99, Buffer.alloc(0)), { ...isProto, message: /UNKNOWN\(99\)/ });
  t.throws(() => decodeRequest(Req.IOTLB_MSG, Buffer.alloc(32)), isProto);
  t.throws(() => decodePayload("bogus" as PayloadKind, Buffer.alloc(0)), isProto);
});

// ------------------------------------------------------------ table, fds, framing

test("MESSAGES covers the requests we serve, with sane specs", (t) => {
  const absent = new Set([
    Req.IOTLB_MSG,
    Req.CREATE_CRYPTO_SESSION,
    Req.CLOSE_CRYPTO_SESSION,
    Req.POSTCOPY_ADVISE,
    Req.POSTCOPY_LISTEN,
    Req.POSTCOPY_END,
    Req.GPU_SET_SOCKET,
    Req.GET_SHARED_OBJECT,
    Req.SET_DEVICE_STATE_FD,
    Req.CHECK_DEVICE_STATE,
  ]);
  for (let r = 1; r <= 43; r++) t.is(MESSAGES.has(r), !absent.has(r), requestName(r));
  for (const [id, s] of MESSAGES) {
    t.is(s.name, requestName(id));
    t.true(s.fds[0] <= s.fds[1] && s.fds[1] <= 8);
    if (s.reply === "value") t.truthy(s.replyPayload, s.name);
  }
  t.deepEqual(MESSAGES.get(Req.SET_VRING_KICK)!.fds, [0, 1]);
  t.deepEqual(MESSAGES.get(Req.SET_MEM_TABLE)!.fds, [0, MAX_MEM_REGIONS]);
  for (const r of [Req.ADD_MEM_REG, Req.SET_LOG_BASE, Req.SET_INFLIGHT_FD, Req.SET_BACKEND_REQ_FD]) t.deepEqual(MESSAGES.get(r)!.fds, [1, 1]);
  t.is(MESSAGES.get(Req.GET_VRING_BASE)!.reply, "value");
  t.is(MESSAGES.get(Req.SET_VRING_BASE)!.reply, "ack");
  t.is(MESSAGES.get(Req.SEND_RARP)!.payload, "rarp");
  // Requests the spec makes depend on a protocol feature name it, so the dispatcher checks it once.
  const needs: Array<[Req, ProtocolFeature]> = [
    [Req.ADD_MEM_REG, ProtocolFeature.CONFIGURE_MEM_SLOTS],
    [Req.REM_MEM_REG, ProtocolFeature.CONFIGURE_MEM_SLOTS],
    [Req.GET_MAX_MEM_SLOTS, ProtocolFeature.CONFIGURE_MEM_SLOTS],
    [Req.GET_CONFIG, ProtocolFeature.CONFIG],
    [Req.SET_CONFIG, ProtocolFeature.CONFIG],
    [Req.SEND_RARP, ProtocolFeature.RARP],
    [Req.NET_SET_MTU, ProtocolFeature.NET_MTU],
    [Req.SET_STATUS, ProtocolFeature.STATUS],
    [Req.GET_STATUS, ProtocolFeature.STATUS],
    [Req.SET_LOG_BASE, ProtocolFeature.LOG_SHMFD],
    [Req.GET_INFLIGHT_FD, ProtocolFeature.INFLIGHT_SHMFD],
    [Req.SET_INFLIGHT_FD, ProtocolFeature.INFLIGHT_SHMFD],
    [Req.GET_QUEUE_NUM, ProtocolFeature.MQ],
  ];
  for (const [r, f] of needs) t.is(MESSAGES.get(r)!.needs, f, `${requestName(r)} needs ${ProtocolFeature[f]}`);
  for (const r of [Req.GET_FEATURES, Req.SET_FEATURES, Req.SET_OWNER, Req.SET_MEM_TABLE, Req.SET_VRING_KICK, Req.GET_PROTOCOL_FEATURES, Req.SET_PROTOCOL_FEATURES]) t.is(MESSAGES.get(r)!.needs, undefined, requestName(r));
});

test("checkFdCount enforces table ranges and payload-implied counts", (t) => {
  const kick = decodeRequest(Req.SET_VRING_KICK, codec.vringFd.encode({ index: 0, noFd: false }));
  t.notThrows(() => checkFdCount(Req.SET_VRING_KICK, kick, 1));
  t.throws(() => checkFdCount(Req.SET_VRING_KICK, kick, 0), { ...isProto, message: /carries 0 fds, expected 1/ });
  const nofd = decodeRequest(Req.SET_VRING_CALL, codec.vringFd.encode({ index: 0, noFd: true }));
  t.throws(() => checkFdCount(Req.SET_VRING_CALL, nofd, 1), isProto);
  t.notThrows(() => checkFdCount(Req.SET_VRING_CALL, nofd, 0));
  const mt = decodeRequest(Req.SET_MEM_TABLE, codec.memTable.encode([region(0n, 0x1000n), region(0x1000n, 0x1000n)]));
  t.notThrows(() => checkFdCount(Req.SET_MEM_TABLE, mt, 2));
  t.throws(() => checkFdCount(Req.SET_MEM_TABLE, mt, 1), isProto);
  const none = decodeRequest(Req.SET_OWNER, Buffer.alloc(0));
  t.throws(() => checkFdCount(Req.SET_OWNER, none, 1), isProto);
  t.throws(() => checkFdCount(Req.SET_OWNER, none, 9), isProto);
  t.throws(() => checkFdCount(99, none, 0), isProto);
});

test("decodeMessage frames a stream", (t) => {
  const a = encodeMessage(Req.SET_OWNER);
  const b = encodeMessage(Req.SET_FEATURES, codec.u64.encode(5n));
  const stream = Buffer.concat([a, b]);
  const m1 = decodeMessage(stream)!;
  t.is(m1.header.request, Req.SET_OWNER);
  const m2 = decodeMessage(stream, HEADER_SIZE + m1.header.size)!;
  t.is(codec.u64.decode(m2.payload), 5n);
  t.is(decodeMessage(stream.subarray(0, stream.length - 1), HEADER_SIZE), null);
  t.is(decodeMessage(Buffer.alloc(5)), null);
  t.throws(() => encodeMessage(1, Buffer.alloc(MAX_PAYLOAD + 1)), isProto);
});

test("protocol feature masks and names", (t) => {
  t.is(protocolFeatureMask(), 0n);
  t.is(protocolFeatureMask(ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.STATUS), 0x1_0009n);
  t.deepEqual(protocolFeatureNames(0x1_0009n | (1n << 40n)), ["MQ", "REPLY_ACK", "STATUS", "UNKNOWN(40)"]);
  t.throws(() => protocolFeatureMask(64 as ProtocolFeature), isProto);
});

test("hostile input: decoders only ever throw ProtocolError", (t) => {
  // Deterministic PRNG so a failure reproduces.
  let seed = 0x12345678;
  const rnd = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x1_0000_0000;
  };
  const decoders: Array<(b: Buffer) => unknown> = [
    ...Object.values(codec).map((c) => (b: Buffer) => c.decode(b)),
    (b) => decodeHeader(b),
    (b) => decodeMessage(b),
    ...[...MESSAGES.keys()].map((r) => (b: Buffer) => decodeRequest(r, b)),
  ];
  const lengths = [0, 1, 7, 8, 9, 12, 16, 20, 24, 32, 40, 72, 264, 268];
  let failures = 0;
  for (let i = 0; i < 3000; i++) {
    const len = rnd() < 0.5 ? lengths[Math.floor(rnd() * lengths.length)]! : Math.floor(rnd() * 300);
    const b = Buffer.alloc(len);
    for (let j = 0; j < len; j++) b[j] = rnd() < 0.3 ? 0 : Math.floor(rnd() * 256);
    if (len >= 8 && rnd() < 0.3) b.writeUInt32LE(Math.floor(rnd() * 10), 0); // plausible counts
    for (const d of decoders) {
      try {
        d(b);
      } catch (e) {
        if (!(e instanceof ProtocolError)) failures++;
      }
    }
  }
  for (const bad of [undefined, null, 42, "x", {}, [1, 2]]) {
    for (const d of decoders) {
      try {
        d(bad as unknown as Buffer);
      } catch (e) {
        if (!(e instanceof ProtocolError)) failures++;
      }
    }
  }
  t.is(failures, 0);
});
