// Hostile front-end, protocol features: a request the vhost-user spec makes depend on a
// protocol feature is refused unless that feature was negotiated (nack with REPLY_ACK; a
// request that must be answered with a value ends the session), logged with the VF. And a
// front-end that sends refused requests in a loop cannot flood the log: per session, the first
// refusal of each kind is logged, then at most a few per second plus one summary line.
import test from "ava";
import { native } from "@vhostd/native";
import { codec, ConfigFlag, MsgFlag, ProtocolFeature, Req, VirtioFeatureBit as F, bit, protocolFeatureMask } from "@vhostd/proto";
import { Daemon, sleep } from "./harness/daemon.js";
import { RawFrontend } from "./harness/raw_frontend.js";

const PF = "0000:af:00.2";
const VF_H = "0000:af:04.5";

const FEATURES = bit(F.VERSION_1) | bit(F.VHOST_USER_PROTOCOL_FEATURES);
const ACK = MsgFlag.VERSION | MsgFlag.NEED_REPLY;
const ONLY_ACK = protocolFeatureMask(ProtocolFeature.REPLY_ACK);

const nacked: Array<{ name: string; needs: string; send(fe: RawFrontend, fds: number[]): void }> = [
  {
    name: "ADD_MEM_REG",
    needs: "CONFIGURE_MEM_SLOTS",
    send: (fe, fds) => {
      fds.push(native.memfdCreate("feat", 1 << 20));
      fe.msg(Req.ADD_MEM_REG, codec.memRegion.encode({ guestAddr: 0n, size: 1n << 20n, userAddr: 0x7f0000000000n, mmapOffset: 0n }), ACK, fds);
    },
  },
  {
    name: "REM_MEM_REG",
    needs: "CONFIGURE_MEM_SLOTS",
    send: (fe) => fe.msg(Req.REM_MEM_REG, codec.memRegion.encode({ guestAddr: 0n, size: 1n << 20n, userAddr: 0x7f0000000000n, mmapOffset: 0n }), ACK),
  },
  {
    name: "SET_CONFIG",
    needs: "CONFIG",
    send: (fe) => fe.msg(Req.SET_CONFIG, codec.config.encode({ offset: 0, size: 6, flags: ConfigFlag.FRONTEND, data: Buffer.alloc(6) }), ACK),
  },
  { name: "SEND_RARP", needs: "RARP", send: (fe) => fe.msg(Req.SEND_RARP, codec.rarp.encode("52:54:00:12:34:56"), ACK) },
  { name: "NET_SET_MTU", needs: "NET_MTU", send: (fe) => fe.msg(Req.NET_SET_MTU, codec.u64.encode(1500n), ACK) },
  { name: "SET_STATUS", needs: "STATUS", send: (fe) => fe.msg(Req.SET_STATUS, codec.u64.encode(0x0fn), ACK) },
];

const fatal: Array<{ name: string; needs: string; send(fe: RawFrontend): void }> = [
  { name: "GET_CONFIG", needs: "CONFIG", send: (fe) => fe.msg(Req.GET_CONFIG, codec.config.encode({ offset: 0, size: 6, flags: ConfigFlag.FRONTEND, data: Buffer.alloc(6) })) },
  { name: "GET_STATUS", needs: "STATUS", send: (fe) => fe.msg(Req.GET_STATUS) },
  { name: "GET_MAX_MEM_SLOTS", needs: "CONFIGURE_MEM_SLOTS", send: (fe) => fe.msg(Req.GET_MAX_MEM_SLOTS) },
];

test.serial("requests that need a protocol feature are refused without it, per VF", async (t) => {
  const d = await Daemon.start();
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_H, "-v", d.sock("h"), "--server"]);
    for (const c of nacked) {
      const before = d.logLines().length;
      const fe = await RawFrontend.connect(d.sock("h"));
      const fds: number[] = [];
      try {
        await fe.negotiate(FEATURES, ONLY_ACK);
        c.send(fe, fds);
        const r = await fe.reply();
        t.is(r?.request, Number(Req[c.name as keyof typeof Req]), `${c.name}: answered`);
        t.not(r && codec.u64.decode(r.payload), 0n, `${c.name} without ${c.needs}: nacked`);
        fe.msg(Req.GET_FEATURES);
        t.truthy(await fe.reply(), `${c.name}: the session goes on after the nack`);
      } finally {
        fe.close();
        for (const fd of fds) native.closeFd(fd);
      }
      await sleep(50);
      const hit = d.logLines().slice(before).find((l) => l.vf === VF_H && l.level >= 40 && new RegExp(`${c.name}.*${c.needs}`).test(`${l.reason ?? ""}`));
      t.truthy(hit, `${c.name}: a warning names ${VF_H} and the missing ${c.needs}`);
    }
    for (const c of fatal) {
      const before = d.logLines().length;
      const fe = await RawFrontend.connect(d.sock("h"));
      try {
        await fe.negotiate(FEATURES, ONLY_ACK);
        c.send(fe);
        t.true(await fe.hungUp(), `${c.name} without ${c.needs}: the session ends (it must be answered with a value)`);
      } finally {
        fe.close();
      }
      await sleep(50);
      const hit = d.logLines().slice(before).find((l) => l.vf === VF_H && l.level >= 50 && new RegExp(c.needs).test(`${l.reason ?? ""}`));
      t.truthy(hit, `${c.name}: an error names ${VF_H} and the missing ${c.needs}`);
    }
    // With the features negotiated the same requests are served.
    const fe = await RawFrontend.connect(d.sock("h"));
    try {
      await fe.negotiate(FEATURES, protocolFeatureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.STATUS, ProtocolFeature.NET_MTU, ProtocolFeature.CONFIG));
      fe.msg(Req.SET_STATUS, codec.u64.encode(0x0fn), ACK);
      t.is(codec.u64.decode((await fe.reply())!.payload), 0n, "SET_STATUS with STATUS: acked");
      fe.msg(Req.GET_STATUS);
      t.is(codec.u64.decode((await fe.reply())!.payload), 0x0fn, "GET_STATUS with STATUS: answered");
      fe.msg(Req.NET_SET_MTU, codec.u64.encode(1500n), ACK);
      t.is(codec.u64.decode((await fe.reply())!.payload), 0n, "NET_SET_MTU with NET_MTU: acked");
    } finally {
      fe.close();
    }
    t.is((await d.cli(["version"])).code, 0, "the daemon still answers RPC");
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test.serial("a flood of refused requests is logged at a bounded rate, with a summary", async (t) => {
  const d = await Daemon.start();
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_H, "-v", d.sock("h"), "--server"]);
    const fe = await RawFrontend.connect(d.sock("h"));
    const FLOOD = 500;
    try {
      await fe.negotiate(FEATURES, ONLY_ACK);
      const before = d.logLines().length;
      const t0 = Date.now();
      for (let sent = 0; sent < FLOOD; sent += 50) {
        for (let i = 0; i < 50; i++) fe.msg(Req.SET_STATUS, codec.u64.encode(BigInt(i)), ACK);
        for (let i = 0; i < 50; i++) t.not(codec.u64.decode((await fe.reply())!.payload), 0n);
      }
      // A kind not seen yet is logged even while the flood's window is exhausted.
      fe.msg(Req.NET_SET_MTU, codec.u64.encode(1500n), ACK);
      t.not(codec.u64.decode((await fe.reply())!.payload), 0n);
      const seconds = (Date.now() - t0) / 1000;
      await sleep(1500); // the summary of the last window
      const lines = d.logLines().slice(before).filter((l) => l.vf === VF_H);
      const rejected = lines.filter((l) => l.msg === "vhost-user request rejected");
      const summaries = lines.filter((l) => /suppressed \d+ more rejections from VF/.test(l.msg ?? ""));
      const suppressed = summaries.reduce((s, l) => s + (l.suppressed as number), 0);
      t.true(rejected.length <= 10 * (Math.ceil(seconds) + 1) + 2, `${rejected.length} rejection lines for ${FLOOD} refusals in ${seconds.toFixed(1)} s`);
      t.true(summaries.length >= 1, "a summary line says how many were left out");
      t.is(rejected.length + suppressed, FLOOD + 1, "every refusal is either logged or counted in a summary");
      t.truthy(rejected.find((l) => l.request === "NET_SET_MTU"), "the first refusal of a new kind is logged");
      t.true(summaries.every((l) => l.msg.includes(VF_H)), "the summary names the VF");
    } finally {
      fe.close();
    }
  } finally {
    await d.stop();
    d.cleanup();
  }
});
