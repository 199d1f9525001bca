// Hostile front-end, fd level: requests that carry fds but are refused (malformed payloads with
// REPLY_ACK, so the session goes on) must not leave a single fd behind in the daemon. Each one
// used to leak every fd it carried (up to 8), until accept, eventfd and the journal failed for
// every VF. Standalone and HA (the keeper runs the session; vfe-vhostd holds its mirror).
import test from "ava";
import fs from "node:fs";
import { native } from "@vhostd/native";
import { codec, MsgFlag, ProtocolFeature, Req, VirtioFeatureBit as F, bit, protocolFeatureMask } from "@vhostd/proto";
import { Daemon, sleep } from "./harness/daemon.js";
import { RawFrontend } from "./harness/raw_frontend.js";

const PF = "0000:af:00.2";
const VF_H = "0000:af:04.5";

const FEATURES = bit(F.VERSION_1) | bit(F.VHOST_USER_PROTOCOL_FEATURES);
const PROTO = protocolFeatureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.LOG_SHMFD);
const ACK = MsgFlag.VERSION | MsgFlag.NEED_REPLY;
const REQUESTS = 200;

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Refused requests with fds: each is well framed, carries 1..8 fds and has a payload its decoder rejects. */
const bad: Array<{ name: string; send(fe: RawFrontend): void }> = [
  {
    name: "SET_MEM_TABLE with a 7-byte payload and 8 fds",
    send: (fe) => withFds(8, (fds) => fe.msg(Req.SET_MEM_TABLE, Buffer.alloc(7), ACK, fds)),
  },
  {
    name: "SET_VRING_KICK with a 4-byte payload and an eventfd",
    send: (fe) => withFds(1, (fds) => fe.msg(Req.SET_VRING_KICK, Buffer.alloc(4), ACK, fds)),
  },
  {
    name: "SET_VRING_CALL with a 3-byte payload and an eventfd",
    send: (fe) => withFds(1, (fds) => fe.msg(Req.SET_VRING_CALL, Buffer.alloc(3), ACK, fds)),
  },
  {
    name: "SET_VRING_ERR with a 12-byte payload and an eventfd",
    send: (fe) => withFds(1, (fds) => fe.msg(Req.SET_VRING_ERR, Buffer.alloc(12), ACK, fds)),
  },
  {
    name: "ADD_MEM_REG with a 5-byte payload and a memfd",
    send: (fe) => withFds(1, (fds) => fe.msg(Req.ADD_MEM_REG, Buffer.alloc(5), ACK, fds)),
  },
  {
    name: "ADD_MEM_REG of a region of size 0",
    send: (fe) => withFds(1, (fds) => fe.msg(Req.ADD_MEM_REG, Buffer.alloc(40), ACK, fds)),
  },
  {
    name: "REM_MEM_REG of no region, with an fd",
    send: (fe) => withFds(1, (fds) => fe.msg(Req.REM_MEM_REG, codec.memRegion.encode({ guestAddr: 1n << 40n, size: 4096n, userAddr: 0n, mmapOffset: 0n }), ACK, fds)),
  },
];

/** Sends with fresh fds and closes ours after (the kernel gave the daemon its own copies). */
function withFds(n: number, send: (fds: number[]) => void): void {
  const fds = Array.from({ length: n }, (_, i) => (i % 2 === 0 ? native.memfdCreate("hostile-fd", 4096) : native.eventFd(0)));
  try {
    send(fds);
  } finally {
    for (const fd of fds) native.closeFd(fd);
  }
}

async function floodRefusedFds(t: import("ava").ExecutionContext, d: Daemon, pids: () => number[]): Promise<void> {
  await d.ok(["mgmtpf", "-a", PF]);
  await d.ok(["vf", "-a", VF_H, "-v", d.sock("h"), "--server"]);
  const fe = await RawFrontend.connect(d.sock("h"));
  try {
    await fe.negotiate(FEATURES, PROTO);
    fe.msg(Req.GET_FEATURES);
    t.truthy(await fe.reply(), "the session answers before the flood");
    await sleep(300); // the HA mirror settles after the negotiation
    const before = pids().map(fdCount);
    for (let i = 0; i < REQUESTS; i++) {
      const c = bad[i % bad.length]!;
      c.send(fe);
      const r = await fe.reply(3000);
      t.truthy(r, `${c.name}: a reply came back (request ${i})`);
      if (!r) return;
      t.not(codec.u64.decode(r.payload), 0n, `${c.name}: refused`);
    }
    await sleep(300);
    const after = pids().map(fdCount);
    // Generous slack for the daemon's own churn (log files, CLI connections): 200 refused
    // requests carried 400 fds, every one of which used to stay open.
    after.forEach((n, i) => t.true(n - before[i]! < 20, `process ${pids()[i]}: ${before[i]} fds before, ${n} after ${REQUESTS} refused requests carrying ${REQUESTS * 2} fds`));
    fe.msg(Req.GET_FEATURES);
    const r = await fe.reply();
    t.is(r?.request, Req.GET_FEATURES, "the session still answers");
    t.is((await d.cli(["version"])).code, 0, "the daemon still answers RPC");
  } finally {
    fe.close();
  }
}

test.serial("refused requests leave none of their fds open in vfe-vhostd", async (t) => {
  const d = await Daemon.start();
  try {
    const pid = d.proc!.pid!;
    await floodRefusedFds(t, d, () => [pid]);
    // Framing violations that carry fds (a bad version, an oversized payload): each ends its
    // connection, and the fds that came with the broken message are closed with it.
    const before = fdCount(pid);
    for (let i = 0; i < 40; i++) {
      const fe = await RawFrontend.connect(d.sock("h"));
      try {
        const head = Buffer.alloc(12);
        head.writeUInt32LE(Req.SET_MEM_TABLE, 0);
        head.writeUInt32LE(i % 2 === 0 ? 0x2 : 0x1, 4); // bad version | good version with...
        head.writeUInt32LE(i % 2 === 0 ? 0 : 1 << 20, 8); // ... a payload over the limit
        withFds(8, (fds) => fe.send(head, fds));
        t.true(await fe.hungUp(), `violation ${i}: the session ended`);
      } finally {
        fe.close();
      }
    }
    await sleep(300);
    t.true(fdCount(pid) - before < 20, `framing violations with 320 fds: ${before} fds before, ${fdCount(pid)} after`);
    t.is(d.proc!.pid, pid);
    t.is(d.proc!.exitCode, null, "vfe-vhostd lives");
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test.serial("HA: refused requests leave no fd open in the keeper nor in vfe-vhostd's mirror", async (t) => {
  const d = await Daemon.start({ ha: true });
  try {
    const pids = () => [d.keeper!.pid!, d.proc!.pid!];
    await floodRefusedFds(t, d, pids);
    // Refused messages reach vfe-vhostd as reply frames only (no record, no fds): the mirror
    // takes them without complaint and stays connected.
    t.falsy(d.logLines().find((l) => l.event === "mirror_closed"), "the HA mirror stayed connected");
    t.is(d.keeper!.exitCode, null, "the keeper lives");
    t.is(d.proc!.exitCode, null, "vfe-vhostd lives");
  } finally {
    await d.stop();
    d.cleanup();
  }
});
