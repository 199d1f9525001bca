// FrontendDriver (src/frontend.ts) against a scripted fake back-end: message sequence,
// REPLY_ACK handling, reply reassembly, fds, connection loss, client and server modes.
import test from "ava";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  HEADER_SIZE,
  MsgFlag,
  ProtocolFeature,
  Req,
  VirtioFeatureBit as F,
  bit,
  codec,
  decodeMessage,
  encodeReply,
  requestName,
} from "@vhostd/proto";
import { native } from "@vhostd/native";
import { FrontendDriver, DEFAULT_WANT_FEATURES } from "../src/frontend.js";
import { waitFor } from "./driver_fake_device.js";

interface Seen {
  request: number;
  name: string;
  flags: number;
  payload: Buffer;
  nfds: number;
}

interface FakeOptions {
  features?: bigint;
  protocolFeatures?: bigint;
  queueNum?: bigint;
  /** Answer this request's ack with a failure. */
  nack?: Req;
  /** Send every reply one byte at a time. */
  trickle?: boolean;
  /** Never answer this request. */
  mute?: Req;
}

/** A vhost-user back-end that records every request and answers the minimum. */
class FakeBackend {
  seen: Seen[] = [];
  private buf = Buffer.alloc(0);
  private w: InstanceType<typeof native.FdWatcher>;
  private bases = new Map<number, number>();
  constructor(
    readonly fd: number,
    readonly o: FakeOptions = {},
  ) {
    this.w = new native.FdWatcher(fd, () => this.onReadable());
  }
  names(): string[] {
    return this.seen.map((s) => s.name);
  }
  close(): void {
    this.w.stop();
    native.closeFd(this.fd);
  }
  private onReadable(): void {
    for (;;) {
      const r = native.recvWithFds(this.fd, 65536, 16);
      if (!r) break;
      if (r.data.length === 0) return this.w.stop();
      this.buf = Buffer.concat([this.buf, r.data]);
      let nfds = r.fds.length;
      for (const fd of r.fds) native.closeFd(fd);
      for (;;) {
        const m = decodeMessage(this.buf);
        if (!m) break;
        this.buf = this.buf.subarray(HEADER_SIZE + m.header.size);
        const payload = Buffer.from(m.payload);
        this.seen.push({ request: m.header.request, name: requestName(m.header.request), flags: m.header.flags, payload, nfds });
        nfds = 0;
        void this.answer(m.header.request, m.header.flags, payload);
      }
    }
  }
  private async answer(req: number, flags: number, payload: Buffer): Promise<void> {
    if (req === this.o.mute) return;
    let reply: Buffer | undefined;
    switch (req) {
      case Req.GET_FEATURES:
        reply = encodeReply(req, codec.u64.encode(this.o.features ?? DEFAULT_WANT_FEATURES | bit(F.NET_CSUM)));
        break;
      case Req.GET_PROTOCOL_FEATURES:
        reply = encodeReply(req, codec.u64.encode(this.o.protocolFeatures ?? 0x1ffffn));
        break;
      case Req.GET_QUEUE_NUM:
        reply = encodeReply(req, codec.u64.encode(this.o.queueNum ?? 8n));
        break;
      case Req.GET_VRING_BASE: {
        const st = codec.vringState.decode(payload);
        reply = encodeReply(req, codec.vringState.encode({ index: st.index, num: this.bases.get(st.index) ?? 0 }));
        break;
      }
      default:
        if (req === Req.SET_VRING_BASE) {
          const st = codec.vringState.decode(payload);
          this.bases.set(st.index, st.num + 7);
        }
        if (flags & MsgFlag.NEED_REPLY) reply = encodeReply(req, codec.u64.encode(req === this.o.nack ? 1n : 0n));
    }
    if (!reply) return;
    if (!this.o.trickle) {
      native.sendWithFds(this.fd, reply, []);
      return;
    }
    for (let i = 0; i < reply.length; i++) {
      native.sendWithFds(this.fd, reply.subarray(i, i + 1), []);
      await new Promise((r) => setImmediate(r));
    }
  }
}

function tmpSock(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), "vhostd-fe-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, "vf0.sock");
}

/** A listening fake back-end; resolves its FakeBackend once the front-end connected. */
function serveOnce(sock: string, o?: FakeOptions): { backend: Promise<FakeBackend>; stop(): void } {
  const lfd = native.unixListen(sock, 4);
  let w: InstanceType<typeof native.FdWatcher> | undefined;
  const backend = new Promise<FakeBackend>((resolve) => {
    w = new native.FdWatcher(lfd, () => {
      const fd = native.unixAccept(lfd);
      if (fd >= 0) {
        w!.stop();
        resolve(new FakeBackend(fd, o));
      }
    });
  });
  return {
    backend,
    stop: () => {
      w?.stop();
      native.closeFd(lfd);
    },
  };
}

test("handshake: the first-connect sequence, every set acked, fds on the right messages", async (t) => {
  const sock = tmpSock(t);
  const srv = serveOnce(sock);
  const fe = await FrontendDriver.connect(sock, { queuePairs: 2, queueSize: 128, memSize: 16 << 20 });
  const be = await srv.backend;
  try {
    await fe.handshake();
    const perQueue = ["SET_VRING_NUM", "SET_VRING_ADDR", "SET_VRING_BASE", "SET_VRING_KICK", "SET_VRING_CALL"];
    t.deepEqual(be.names(), [
      "SET_OWNER",
      "GET_FEATURES",
      "GET_PROTOCOL_FEATURES",
      "SET_PROTOCOL_FEATURES",
      "GET_QUEUE_NUM",
      "SET_FEATURES",
      "SET_MEM_TABLE",
      ...perQueue,
      ...perQueue,
      ...perQueue,
      ...perQueue,
      "SET_VRING_ENABLE",
      "SET_VRING_ENABLE",
      "SET_VRING_ENABLE",
      "SET_VRING_ENABLE",
      "SET_STATUS",
    ]);
    t.is(fe.features, DEFAULT_WANT_FEATURES); // NET_CSUM offered but not wanted
    t.is(fe.protocolFeatures, bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.STATUS));
    for (const s of be.seen) {
      const isSet = !s.name.startsWith("GET_") && !["SET_OWNER", "SET_PROTOCOL_FEATURES"].includes(s.name);
      t.is((s.flags & MsgFlag.NEED_REPLY) !== 0, isSet, `NEED_REPLY on ${s.name}`);
      t.is(s.flags & 3, 1, `version on ${s.name}`);
      const wantFds = ["SET_MEM_TABLE", "SET_VRING_KICK", "SET_VRING_CALL"].includes(s.name) ? 1 : 0;
      t.is(s.nfds, wantFds, `fds on ${s.name}`);
    }
    const mem = codec.memTable.decode(be.seen.find((s) => s.name === "SET_MEM_TABLE")!.payload);
    t.deepEqual(mem, [{ guestAddr: fe.device.memAddr, size: BigInt(16 << 20), userAddr: fe.device.memAddr, mmapOffset: 0n }]);
    t.is(codec.u64.decode(be.seen.find((s) => s.name === "SET_FEATURES")!.payload), fe.features);
    const addrs = be.seen.filter((s) => s.name === "SET_VRING_ADDR").map((s) => codec.vringAddr.decode(s.payload));
    t.deepEqual(
      addrs.map((a) => a.index),
      [0, 1, 2, 3],
    );
    for (const a of addrs) {
      const r = fe.device.ring(a.index);
      t.deepEqual([a.desc, a.avail, a.used, a.log, a.flags], [r.desc, r.avail, r.used, 0n, 0]);
    }
    const nums = be.seen.filter((s) => s.name === "SET_VRING_NUM").map((s) => codec.vringState.decode(s.payload));
    t.true(nums.every((n) => n.num === 128));
    t.true(
      be.seen
        .filter((s) => s.name === "SET_VRING_BASE")
        .every((s) => codec.vringState.decode(s.payload).num === 0),
    );
    t.deepEqual(
      be.seen.filter((s) => s.name === "SET_VRING_KICK").map((s) => codec.vringFd.decode(s.payload)),
      [0, 1, 2, 3].map((index) => ({ index, noFd: false })),
    );
    t.is(codec.u64.decode(be.seen.at(-1)!.payload), 0xfn);
    // GET_VRING_BASE round trip (the fake answers SET base + 7)
    t.is(await fe.getVringBase(3), 7);
  } finally {
    fe.close();
    be.close();
    srv.stop();
  }
});

test("handshake without PROTOCOL_FEATURES: no protocol messages, no acks, no enable", async (t) => {
  const sock = tmpSock(t);
  const srv = serveOnce(sock, { features: bit(F.VERSION_1) | bit(F.NET_MRG_RXBUF) });
  const fe = await FrontendDriver.connect(sock, { queueSize: 64, memSize: 8 << 20 });
  const be = await srv.backend;
  try {
    await fe.handshake();
    await waitFor(() => be.seen.length === 4 + 5 * 2, 3000, "all messages at the back-end"); // nothing is acked
    t.deepEqual(be.names().slice(0, 4), ["SET_OWNER", "GET_FEATURES", "SET_FEATURES", "SET_MEM_TABLE"]);
    t.false(be.names().includes("SET_VRING_ENABLE"));
    t.false(be.names().includes("SET_STATUS"));
    t.true(be.seen.every((s) => (s.flags & MsgFlag.NEED_REPLY) === 0));
    t.is(fe.features, bit(F.VERSION_1) | bit(F.NET_MRG_RXBUF));
  } finally {
    fe.close();
    be.close();
    srv.stop();
  }
});

test("a non-zero ack rejects the handshake with the request name", async (t) => {
  const sock = tmpSock(t);
  const srv = serveOnce(sock, { nack: Req.SET_MEM_TABLE });
  const fe = await FrontendDriver.connect(sock, { queueSize: 64, memSize: 8 << 20 });
  const be = await srv.backend;
  try {
    await t.throwsAsync(fe.handshake(), { message: /SET_MEM_TABLE rejected/ });
  } finally {
    fe.close();
    be.close();
    srv.stop();
  }
});

test("replies arriving one byte at a time are reassembled", async (t) => {
  const sock = tmpSock(t);
  const srv = serveOnce(sock, { trickle: true });
  const fe = await FrontendDriver.connect(sock, { queueSize: 64, memSize: 8 << 20 });
  const be = await srv.backend;
  try {
    await fe.handshake();
    t.not(fe.features, 0n);
    const r = await fe.request(Req.GET_QUEUE_NUM);
    t.is(codec.u64.decode(r!.payload), 8n);
  } finally {
    fe.close();
    be.close();
    srv.stop();
  }
});

test("a closed connection rejects every pending request and resolves closed", async (t) => {
  const sock = tmpSock(t);
  const srv = serveOnce(sock, { mute: Req.GET_FEATURES });
  const fe = await FrontendDriver.connect(sock, { queueSize: 64, memSize: 8 << 20 });
  const be = await srv.backend;
  try {
    const p1 = fe.request(Req.GET_FEATURES);
    const p2 = fe.request(Req.GET_FEATURES);
    await waitFor(() => be.seen.length === 2);
    be.close();
    await t.throwsAsync(p1, { message: /GET_FEATURES: .*closed/ });
    await t.throwsAsync(p2, { message: /GET_FEATURES/ });
    await fe.closed;
    t.false(fe.connected);
    t.throws(() => fe.sendRaw(Buffer.alloc(12)), { message: /not connected/ });
  } finally {
    fe.close();
    srv.stop();
  }
});

test("a reply that never comes times out; sendRaw sends anything", async (t) => {
  const sock = tmpSock(t);
  const srv = serveOnce(sock, { mute: Req.GET_FEATURES });
  const fe = await FrontendDriver.connect(sock, { queueSize: 64, memSize: 8 << 20, replyTimeoutMs: 100 });
  const be = await srv.backend;
  try {
    await t.throwsAsync(fe.request(Req.GET_FEATURES), { message: /GET_FEATURES: no reply within 100 ms/ });
    const junk = Buffer.alloc(12);
    junk.writeUInt32LE(999, 0);
    junk.writeUInt32LE(1, 4);
    fe.sendRaw(junk);
    await waitFor(() => be.seen.length === 2);
    t.is(be.seen[1]!.request, 999);
    // the late reply of the timed-out request would not be mistaken for this one
    const r = await fe.request(Req.GET_PROTOCOL_FEATURES);
    t.is(r!.header.request, Req.GET_PROTOCOL_FEATURES);
  } finally {
    fe.close();
    be.close();
    srv.stop();
  }
});

test("connect retries until the back-end listens; gives up after connectTimeoutMs", async (t) => {
  const sock = tmpSock(t);
  await t.throwsAsync(FrontendDriver.connect(sock, { queueSize: 64, memSize: 8 << 20, connectTimeoutMs: 100 }), { message: /ENOENT/ });
  const p = FrontendDriver.connect(sock, { queueSize: 64, memSize: 8 << 20, connectTimeoutMs: 3000 });
  await new Promise((r) => setTimeout(r, 100));
  const srv = serveOnce(sock);
  const fe = await p;
  const be = await srv.backend;
  try {
    t.true(fe.connected);
    await fe.handshake();
  } finally {
    fe.close();
    be.close();
    srv.stop();
  }
});

test("listen (server mode): resolves when a back-end connects, and again after reconnect()", async (t) => {
  const sock = tmpSock(t);
  const p = FrontendDriver.listen(sock, { queueSize: 64, memSize: 8 << 20 });
  await waitFor(() => {
    try {
      native.closeFd(native.unixConnect(sock)); // the listener is up once this works...
      return true;
    } catch {
      return false;
    }
  });
  // ...but that probe was accepted as "the back-end": drop it and wait for the real one
  const fe = await p;
  await fe.closed;
  const re = fe.reconnect();
  const be1 = new FakeBackend(native.unixConnect(sock));
  await re;
  try {
    await fe.handshake();
    t.is(be1.names()[0], "SET_OWNER");
    be1.close();
    await fe.closed;
    const re2 = fe.reconnect();
    const be2 = new FakeBackend(native.unixConnect(sock));
    await re2;
    await fe.handshake();
    t.is(be2.names().length, be1.names().length);
    be2.close();
  } finally {
    fe.close();
  }
  await t.throwsAsync(FrontendDriver.listen(sock, { queueSize: 64, memSize: 8 << 20, connectTimeoutMs: 50 }), { message: /no back-end/ });
});

test("options are validated", async (t) => {
  await t.throwsAsync(FrontendDriver.connect("/nonexistent/x.sock", { queueSize: 0 }), { instanceOf: RangeError });
  await t.throwsAsync(FrontendDriver.connect("/nonexistent/x.sock", { wantFeatures: 1 as never }), { instanceOf: TypeError });
  await t.throwsAsync(FrontendDriver.connect("/nonexistent/x.sock", { mac: "zz" }), { instanceOf: TypeError });
});
