// Hostile front-end, protocol level: a raw client sends malformed and malicious vhost-user
// messages to one VF while DPDK testpmd pushes traffic through two other VFs. Every bad
// message is refused (nack with REPLY_ACK, or the session is closed) with a log line naming
// the VF and the reason; the daemon keeps answering RPC; the other VFs' traffic is exact.
import test from "ava";
import { native } from "@vhostd/native";
import { codec, MsgFlag, ProtocolFeature, Req, VirtioFeatureBit as F, bit, encodeHeader } from "@vhostd/proto";
import { Daemon, sleep } from "./harness/daemon.js";
import { needPeer } from "./harness/peers.js";
import { RawFrontend } from "./harness/raw_frontend.js";
import { Testpmd, unsentInRing } from "./harness/testpmd.js";

const PF = "0000:af:00.2";
const VF_H = "0000:af:04.5"; // the hostile front-end's VF (server mode: we listen)
const VF_A = "0000:af:05.5";
const VF_B = "0000:af:06.5";

const FEATURES = bit(F.VERSION_1) | bit(F.VHOST_USER_PROTOCOL_FEATURES);
const PROTO_ACK = bit(ProtocolFeature.REPLY_ACK);
const ACK = MsgFlag.VERSION | MsgFlag.NEED_REPLY;
const UVA = 0x7f0000000000n;
const MiB = 1024n * 1024n;

interface HostileCase {
  name: string;
  /** Negotiate REPLY_ACK first and expect a failure ack with the session kept. */
  ack: boolean;
  reason: RegExp;
  send(fe: RawFrontend, fds: number[]): void;
}

function memfd(size = 1 << 20): number {
  return native.memfdCreate("hostile", size);
}

function region(guestAddr: bigint, size: bigint, userAddr: bigint) {
  return { guestAddr, size, userAddr, mmapOffset: 0n };
}

/** SET_MEM_TABLE payload built by hand: proto's encoder refuses the bad tables we need. */
function rawMemTable(regions: ReturnType<typeof region>[], nregions = regions.length): Buffer {
  const b = Buffer.alloc(8 + 32 * regions.length);
  b.writeUInt32LE(nregions, 0);
  regions.forEach((r, i) => {
    b.writeBigUInt64LE(r.guestAddr, 8 + 32 * i);
    b.writeBigUInt64LE(r.size, 16 + 32 * i);
    b.writeBigUInt64LE(r.userAddr, 24 + 32 * i);
    b.writeBigUInt64LE(r.mmapOffset, 32 + 32 * i);
  });
  return b;
}

const cases: HostileCase[] = [
  {
    name: "payload larger than the protocol allows",
    ack: false,
    reason: /exceeds/,
    send: (fe) => fe.send(encodeHeader({ request: Req.SET_FEATURES, flags: MsgFlag.VERSION, size: 1 << 20 })),
  },
  {
    name: "wrong protocol version",
    ack: false,
    reason: /bad protocol version/,
    send: (fe) => fe.send(Buffer.concat([encodeHeader({ request: Req.GET_FEATURES, flags: 0x2, size: 0 })])),
  },
  {
    name: "SET_FEATURES with a 4-byte payload",
    ack: false,
    reason: /4 bytes/,
    send: (fe) => fe.msg(Req.SET_FEATURES, Buffer.alloc(4)),
  },
  {
    name: "unknown request without REPLY_ACK",
    ack: false,
    reason: /unsupported request/,
    send: (fe) => fe.msg(99),
  },
  {
    name: "unknown request with REPLY_ACK",
    ack: true,
    reason: /unsupported request/,
    send: (fe) => fe.msg(99, Buffer.alloc(0), ACK),
  },
  {
    name: "nine fds on one message",
    ack: false,
    reason: /fds/,
    send: (fe, fds) => {
      for (let i = 0; i < 9; i++) fds.push(native.eventFd(0));
      fe.msg(Req.SET_MEM_TABLE, codec.memTable.encode([region(0n, MiB, UVA)]), MsgFlag.VERSION, fds);
    },
  },
  {
    name: "memory table with one region and no fd",
    ack: false,
    reason: /1 regions but 0 fds/,
    send: (fe) => fe.msg(Req.SET_MEM_TABLE, codec.memTable.encode([region(0n, MiB, UVA)])),
  },
  {
    name: "memory regions that overlap",
    ack: true,
    reason: /overlap/,
    send: (fe, fds) => {
      fds.push(memfd(), memfd());
      fe.msg(Req.SET_MEM_TABLE, rawMemTable([region(0n, MiB, UVA), region(MiB / 2n, MiB, UVA + 4n * MiB)]), ACK, fds);
    },
  },
  {
    name: "memory region whose end wraps past 2^64",
    ack: true,
    reason: /overflow|wrap/,
    send: (fe, fds) => {
      fds.push(memfd());
      fe.msg(Req.SET_MEM_TABLE, rawMemTable([region((1n << 64n) - MiB / 2n, MiB, UVA)]), ACK, fds);
    },
  },
  {
    name: "memory region larger than its fd can back",
    ack: true,
    reason: /memory table refused|mmap|beyond|size/,
    send: (fe, fds) => {
      fds.push(memfd(4096));
      fe.msg(Req.SET_MEM_TABLE, rawMemTable([region(0n, 1n << 40n, UVA)]), ACK, fds);
    },
  },
  {
    name: "ring addresses outside guest memory",
    ack: true,
    reason: /cannot start/,
    send: (fe, fds) => {
      fds.push(memfd(), native.eventFd(0));
      fe.msg(Req.SET_MEM_TABLE, codec.memTable.encode([region(0n, MiB, UVA)]), ACK, [fds[0]]);
      fe.msg(Req.SET_VRING_NUM, codec.vringState.encode({ index: 1, num: 256 }), ACK);
      fe.msg(Req.SET_VRING_ADDR, codec.vringAddr.encode({ index: 1, flags: 0, desc: UVA + 64n * MiB, avail: UVA + 65n * MiB, used: UVA + 66n * MiB, log: 0n }), ACK);
      fe.msg(Req.SET_VRING_KICK, codec.vringFd.encode({ index: 1, noFd: false }), ACK, [fds[1]]);
    },
  },
  {
    name: "queue index out of range",
    ack: false,
    reason: /out of range/,
    send: (fe) => fe.msg(Req.SET_VRING_NUM, codec.vringState.encode({ index: 200, num: 256 })),
  },
  {
    name: "ring size not a power of two",
    ack: true,
    reason: /power of two/,
    send: (fe) => fe.msg(Req.SET_VRING_NUM, codec.vringState.encode({ index: 0, num: 1000 }), ACK),
  },
  {
    name: "NOFD flag with an fd attached",
    ack: false,
    reason: /NOFD|fds/,
    send: (fe, fds) => {
      fds.push(native.eventFd(0));
      fe.msg(Req.SET_VRING_CALL, codec.vringFd.encode({ index: 0, noFd: true }), MsgFlag.VERSION, fds);
    },
  },
  {
    name: "features that were never offered",
    ack: true,
    reason: /never offered/,
    send: (fe) => fe.msg(Req.SET_FEATURES, codec.u64.encode(1n << 63n), ACK),
  },
];

test.serial("hostile vhost-user messages are refused per VF; the daemon and other VFs carry on", async (t) => {
  if (!needPeer(t, "dpdk-testpmd")) return;
  const d = await Daemon.start();
  try {
    const sockH = d.sock("hostile");
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF_H, "-v", sockH, "--server"]);
    await d.ok(["vf", "-a", VF_A, "-v", d.sock("a")]);
    await d.ok(["vf", "-a", VF_B, "-v", d.sock("b")]);
    const rx = await Testpmd.start({ socket: d.sock("b"), server: true, mode: "rxonly", logFile: `${d.dir}/rx.log` });
    const tx = await Testpmd.start({ socket: d.sock("a"), server: true, mode: "txonly", txpkts: 64, logFile: `${d.dir}/tx.log` });
    await tx.waitForTraffic("txPackets", 1000);

    for (const c of cases) {
      const before = d.logLines().length;
      const fe = await RawFrontend.connect(sockH);
      const fds: number[] = [];
      try {
        if (c.ack) await fe.negotiate(FEATURES, PROTO_ACK);
        c.send(fe, fds);
        if (c.ack) {
          // Every ack before the last belongs to set-up messages; the last one must be a failure.
          let last: { request: number; payload: Buffer } | null = null;
          for (;;) {
            const r = await fe.reply(1500).catch(() => undefined);
            if (!r) break;
            last = r;
          }
          t.truthy(last, `${c.name}: an ack came back`);
          t.not(codec.u64.decode(last!.payload), 0n, `${c.name}: the ack reports failure`);
          fe.msg(Req.GET_FEATURES);
          t.truthy(await fe.reply(), `${c.name}: the session is still usable after the nack`);
        } else {
          t.true(await fe.hungUp(), `${c.name}: the back-end closed the session`);
        }
      } finally {
        fe.close();
        for (const fd of fds) {
          try {
            native.closeFd(fd);
          } catch {
            // sent fds stay ours to close
          }
        }
      }
      await sleep(50);
      const lines = d.logLines().slice(before);
      const hit = lines.find((l) => l.vf === VF_H && l.level >= 40 && c.reason.test(`${l.reason ?? ""} ${l.msg ?? ""}`));
      t.truthy(hit, `${c.name}: a warning/error line names ${VF_H} and says why (got ${JSON.stringify(lines.filter((l) => l.level >= 40))})`);
      t.is((await d.cli(["version"])).code, 0, `${c.name}: the daemon still answers RPC`);
    }

    const sent = await tx.stop();
    await sleep(500);
    const info = async (vf: string) => (await d.ok(["vf", "-i", vf])) as any;
    const b = await info(VF_B);
    const a = await info(VF_A);
    const q = (x: any) => x.device.queues;
    const got = await rx.stop();
    const bRx = q(b).filter((x: any) => x.index % 2 === 0);
    const delivered = bRx.reduce((s: number, x: any) => s + x.packets, 0);
    const dropped = bRx.reduce((s: number, x: any) => s + x.drops, 0);
    t.true(unsentInRing(sent.txPackets, q(a)[1].packets, 1), "VF A took every frame testpmd sent, but what was left in its ring at stop");
    t.is(delivered + dropped, q(a)[1].packets, "every frame taken from A was delivered to B or counted as dropped");
    t.is(got.rxPackets, delivered, "testpmd on B received exactly what was delivered");
    t.is(b.device.reconnects, 0, "VF B never lost its front-end");
  } finally {
    await d.stop();
  }
});
