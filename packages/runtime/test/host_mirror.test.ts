// What the HA mirror gets from a running session (session/vf_session.ts): a message that changes the
// session pushes the whole record (with duplicates of every fd it names); one that changes
// nothing (refused with a nack, or a read-only GET_*) pushes only "done" with its sequence
// number (its reply waits in the reply pipe, whose fds the record carries). Refused messages
// used to push the whole record with all its fds every time: a front-end could make the keeper
// send vfe-vhostd a full record per message. With a standby connected, every message is
// announced (msg, with its bytes and fds) before it is taken off the connection (intake.ts).
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
  readonly events: Array<{ op: string; fds?: number; seq?: number; bytes?: string }> = [];
  /** When set, whenSent() callbacks wait here (a mirror whose socket is full). */
  held: Array<() => void> | null = null;
  /** A standby listens: messages are announced. */
  connected = false;
  vf(_dev: string, rec: MirrorVf, fds: number[]): void {
    this.events.push({ op: "vf", fds: fds.length, seq: rec.seq });
  }
  msg(_dev: string, seq: number, bytes: Buffer, fds: readonly number[]): void {
    this.events.push({ op: "msg", seq, bytes: bytes.toString("hex"), fds: fds.length });
  }
  done(_dev: string, seq: number): void {
    this.events.push({ op: "done", seq });
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

test.serial("refused and read-only messages push only done to the mirror; changes push the record", async (t) => {
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
    t.deepEqual(sink.events.map((e) => e.op), Array(21).fill("done"), "each pushed only that it was handled");
    const seqs = sink.events.map((e) => e.seq!);
    t.deepEqual(seqs, seqs.map((_, i) => seqs[0]! + i), "with consecutive sequence numbers");

    sink.events.length = 0;
    await request(fd, Req.SET_VRING_NUM, codec.vringState.encode({ index: 0, num: 256 }), ACK); // a change
    t.is(records(), 1, "a change still pushes the record");
    t.deepEqual(sink.events.map((e) => e.op), ["vf"], "its reply went through the pipe: no replied frame");
    t.is(sink.events[0]!.seq, seqs.at(-1)! + 1, "the record names the message it follows");
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

test.serial("with a standby, a message is announced with its bytes and fds before it leaves the socket; the inbox names it once taken", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-host-mirror-"));
  const inboxFile = path.join(dir, "session-inbox");
  const host = createVfHost({ log: pino({ level: "silent" }), runDir: dir, inboxPath: inboxFile });
  const sink = new RecordingSink();
  sink.connected = true;
  host.setMirror(sink);
  const spec: VfSpec = { dev: "0000:af:04.5", pf: "0000:af:00.2", kind: "net", devId: 3, switchId: 0, socketPath: path.join(dir, "vf.sock"), mode: "server", mac: "52:54:00:00:00:01", mtu: 1500, queuePairs: 1 };
  const inbox = new native.Inbox(inboxFile, host.engine.maxDevices);
  let fd = -1;
  try {
    host.addPf(spec.pf, spec.switchId, "net");
    host.open(spec);
    fd = native.unixConnect(spec.socketPath);
    await sleep(50);
    sink.events.length = 0; // the records of the open and the connect
    sink.held = [];
    const getFeatures = encodeMessage(Req.GET_FEATURES, Buffer.alloc(0), MsgFlag.VERSION);
    sendAllBlocking(fd, getFeatures);
    await sleep(150);
    t.deepEqual(sink.events, [{ op: "msg", seq: 1, bytes: getFeatures.toString("hex"), fds: 0 }], "announced first");
    t.is(inbox.state(spec.devId).seq, 0, "and not taken while the announcement waits in this process");
    t.is(native.recvWithFds(fd, 4096, 0), null, "so not answered either");
    const release = () => {
      const fns = sink.held!;
      sink.held = [];
      fns.forEach((fn) => fn());
    };
    release(); // the announcement went: the message is taken and handled
    await sleep(50);
    const slot = inbox.state(spec.devId);
    t.like(slot, { seq: 1, consumed: true, multipart: false });
    t.true(slot.bytes.equals(getFeatures), "the inbox holds the message as it left the socket");
    t.is(native.recvWithFds(fd, 4096, 0), null, "the reply waits for the done frame");
    release(); // its "done" went: the reply follows
    sink.held = null;
    await sleep(50);
    const reply = native.recvWithFds(fd, 4096, 0);
    t.is(reply?.data.length, HEADER_SIZE + 8, "one reply, whole");
    t.deepEqual(sink.events.map((e) => [e.op, e.seq]), [["msg", 1], ["done", 1]]);

    sink.events.length = 0;
    const ev = native.eventFd(0);
    sendAllBlocking(fd, encodeMessage(Req.SET_VRING_CALL, codec.u64.encode(0n), MsgFlag.VERSION), [ev]);
    native.closeFd(ev);
    await sleep(100);
    t.like(sink.events[0], { op: "msg", seq: 2, fds: 1 }, "its fd rides on the announcement");
    t.like(sink.events[1], { op: "vf", seq: 2 }, "and the record of its effect follows");

    // Two messages queued at once, the first without fds, the second with one (as QEMU sends
    // SET_VRING_ADDR then SET_VRING_KICK): a peek of the first must not take the second's fd.
    sink.events.length = 0;
    const kick = native.eventFd(0);
    sendAllBlocking(fd, Buffer.concat([encodeMessage(Req.SET_VRING_NUM, codec.vringState.encode({ index: 0, num: 256 }), MsgFlag.VERSION)]));
    sendAllBlocking(fd, encodeMessage(Req.SET_VRING_KICK, codec.u64.encode(0n), MsgFlag.VERSION), [kick]);
    native.closeFd(kick);
    await sleep(100);
    const msgs = sink.events.filter((e) => e.op === "msg");
    t.like(msgs[0], { seq: 3, fds: 0 }, "SET_VRING_NUM is announced without the next message's fd");
    t.like(msgs[1], { seq: 4, fds: 1 }, "SET_VRING_KICK with its own");
  } finally {
    if (fd >= 0) native.closeFd(fd);
    inbox.close();
    await host.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
