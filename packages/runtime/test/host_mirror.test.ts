// What the HA mirror gets from a running session (session/vf_session.ts): a message that changes the
// session pushes the whole record (with duplicates of every fd it names); one that changes
// nothing (refused with a nack, or a read-only GET_*) pushes only its pending reply, which is
// cleared by "replied" once written. Refused messages used to push the whole record with all its
// fds every time: a front-end could make the keeper send vfe-vhostd a full record per message.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { native, sendAllBlocking } from "@vhostd/native";
import { codec, decodeHeader, encodeMessage, HEADER_SIZE, MsgFlag, ProtocolFeature, Req, VirtioFeatureBit as F, bit, protocolFeatureMask, type MirrorVf } from "@vhostd/proto";
import { createVfHost, type MirrorSink, type VfSpec } from "../src/index.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class RecordingSink implements MirrorSink {
  readonly events: Array<{ op: string; fds?: number; reply?: string }> = [];
  /** When set, whenSent() callbacks wait here (a mirror whose socket is full). */
  held: Array<() => void> | null = null;
  vf(_dev: string, _rec: MirrorVf, fds: number[]): void {
    this.events.push({ op: "vf", fds: fds.length });
  }
  reply(_dev: string, reply: Buffer): void {
    this.events.push({ op: "reply", reply: reply.toString("hex") });
  }
  replied(): void {
    this.events.push({ op: "replied" });
  }
  whenSent(fn: () => void): void {
    if (this.held) this.held.push(fn);
    else fn();
  }
  pf(): void {}
  drop(): void {}
}

/** Sends one request and reads its reply (blocking reads with a short poll). */
async function request(fd: number, req: Req, payload: Buffer, flags: number, fds: number[] = []): Promise<Buffer> {
  sendAllBlocking(fd, encodeMessage(req, payload, flags), fds);
  let buf = Buffer.alloc(0);
  for (let i = 0; i < 300; i++) {
    const r = native.recvWithFds(fd, 4096, 8);
    if (r) {
      for (const x of r.fds) native.closeFd(x);
      buf = Buffer.concat([buf, r.data]);
      if (buf.length >= HEADER_SIZE && buf.length >= HEADER_SIZE + decodeHeader(buf).size) return buf.subarray(HEADER_SIZE);
    } else await sleep(5);
  }
  throw new Error(`no reply to ${Req[req]}`);
}

test.serial("refused and read-only messages push only their reply to the mirror; changes push the record", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-host-mirror-"));
  const host = createVfHost({ log: pino({ level: "silent" }), runDir: dir });
  const sink = new RecordingSink();
  host.setMirror(sink);
  const spec: VfSpec = { dev: "0000:af:04.5", pf: "0000:af:00.2", kind: "net", devId: 1, switchId: 0, socketPath: path.join(dir, "vf.sock"), mode: "server", mac: "52:54:00:00:00:01", mtu: 1500, queuePairs: 1 };
  let fd = -1;
  try {
    host.addPf(spec.pf, spec.switchId, "net");
    host.open(spec);
    fd = native.unixConnect(spec.socketPath);
    const ACK = MsgFlag.VERSION | MsgFlag.NEED_REPLY;
    await request(fd, Req.GET_FEATURES, Buffer.alloc(0), MsgFlag.VERSION);
    await sleep(50);
    sendAllBlocking(fd, encodeMessage(Req.SET_PROTOCOL_FEATURES, codec.u64.encode(protocolFeatureMask(ProtocolFeature.REPLY_ACK)), MsgFlag.VERSION));
    await request(fd, Req.SET_FEATURES, codec.u64.encode(bit(F.VERSION_1) | bit(F.VHOST_USER_PROTOCOL_FEATURES)), ACK);
    const mem = native.memfdCreate("host-mirror", 1 << 20);
    await request(fd, Req.SET_MEM_TABLE, codec.memTable.encode([{ guestAddr: 0n, size: 1n << 20n, userAddr: 0x7f0000000000n, mmapOffset: 0n }]), ACK, [mem]);
    native.closeFd(mem);
    const records = () => sink.events.filter((e) => e.op === "vf").length;
    const recordsBefore = records();
    t.true(sink.events.some((e) => e.op === "vf" && e.fds! >= 2), "the memory table's change pushed a record with its fds");

    sink.events.length = 0;
    for (let i = 0; i < 20; i++) {
      const ev = native.eventFd(0);
      const nack = await request(fd, Req.SET_VRING_CALL, Buffer.alloc(3), ACK, [ev]); // malformed: refused
      native.closeFd(ev);
      t.not(codec.u64.decode(nack), 0n);
    }
    const features = await request(fd, Req.GET_FEATURES, Buffer.alloc(0), MsgFlag.VERSION); // read-only
    t.true(codec.u64.decode(features) !== 0n);
    t.is(records(), 0, `no record for 20 refused messages and a GET_FEATURES (was ${recordsBefore} for the set-up)`);
    t.is(sink.events.filter((e) => e.op === "reply").length, 21, "each pushed its pending reply");
    for (let i = 0; i < sink.events.length; i += 2) {
      t.is(sink.events[i]!.op, "reply");
      t.is(sink.events[i + 1]!.op, "replied", "and said when it was written");
    }
    t.is(sink.events[0]!.reply!.slice(0, 8), Buffer.from([Req.SET_VRING_CALL, 0, 0, 0]).toString("hex"), "the reply is the whole message");

    sink.events.length = 0;
    await request(fd, Req.SET_VRING_NUM, codec.vringState.encode({ index: 0, num: 256 }), ACK); // a change
    t.is(records(), 1, "a change still pushes the record");
    t.deepEqual(sink.events.map((e) => e.op), ["vf", "replied"]);
  } finally {
    if (fd >= 0) native.closeFd(fd);
    await host.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial("a reply waits until the mirror's socket has its message's record; no message is read meanwhile", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-host-mirror-"));
  const host = createVfHost({ log: pino({ level: "silent" }), runDir: dir });
  const sink = new RecordingSink();
  host.setMirror(sink);
  const spec: VfSpec = { dev: "0000:af:04.5", pf: "0000:af:00.2", kind: "net", devId: 1, switchId: 0, socketPath: path.join(dir, "vf.sock"), mode: "server", mac: "52:54:00:00:00:01", mtu: 1500, queuePairs: 1 };
  let fd = -1;
  try {
    host.addPf(spec.pf, spec.switchId, "net");
    host.open(spec);
    fd = native.unixConnect(spec.socketPath);
    await request(fd, Req.GET_FEATURES, Buffer.alloc(0), MsgFlag.VERSION);
    sink.held = [];
    sendAllBlocking(fd, encodeMessage(Req.SET_OWNER, Buffer.alloc(0), MsgFlag.VERSION));
    sendAllBlocking(fd, encodeMessage(Req.GET_PROTOCOL_FEATURES, Buffer.alloc(0), MsgFlag.VERSION));
    sendAllBlocking(fd, encodeMessage(Req.GET_FEATURES, Buffer.alloc(0), MsgFlag.VERSION));
    await sleep(150);
    t.is(native.recvWithFds(fd, 4096, 0), null, "no reply while the mirror has not sent the record");
    t.is(sink.held.length, 1, "and the next message is not handled meanwhile");
    const release = () => {
      const fns = sink.held!;
      sink.held = [];
      fns.forEach((fn) => fn());
    };
    release();
    await sleep(50);
    release();
    let got = Buffer.alloc(0);
    for (let i = 0; i < 100 && got.length < 40; i++) {
      const r = native.recvWithFds(fd, 4096, 0);
      if (r) got = Buffer.concat([got, r.data]);
      else {
        release();
        await sleep(10);
      }
    }
    t.is(got.length, 40, "both replies arrive once the mirror caught up");
    t.is(decodeHeader(got).request, Req.GET_PROTOCOL_FEATURES, "in order");
  } finally {
    if (fd >= 0) native.closeFd(fd);
    await host.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
