// Exactly once across keeper kills (docs/recovery.md, "Exactly once"): a front-end sends
// request/reply vhost-user messages in a tight loop while the keeper is killed -9 within a
// few hundred microseconds of a request, again and again, and restarted each time while the
// loop goes on (so hand-backs happen mid-loop too). Every request must get exactly one reply,
// the right one; the connection must never close; and no message may take effect twice:
// memory regions are added and removed in turn (adding one twice is refused), and the ring
// base the front-end last set is the one GET_VRING_BASE returns.
import test from "ava";
import { native } from "@vhostd/native";
import { bit, codec, MsgFlag, ProtocolFeature, Req, VirtioFeatureBit as F } from "@vhostd/proto";
import { Daemon, sleep, waitFor } from "./harness/daemon.js";
import { RawFrontend } from "./harness/raw_frontend.js";
import { rng } from "./harness/ha_traffic.js";

const KILLS = Number(process.env.VHOSTD_MSG_KILLS ?? 50);
const SEED = Number(process.env.VHOSTD_MSG_SEED ?? 20261207);
const PF = "0000:af:00.2";
const VF = "0000:af:04.5";
const ACK = MsgFlag.VERSION | MsgFlag.NEED_REPLY;
const REGION = 1n << 20n;

function spinMicros(us: number): void {
  const until = process.hrtime.bigint() + BigInt(Math.round(us * 1000));
  while (process.hrtime.bigint() < until);
}

test.serial(`kill -9 the keeper ${KILLS} times inside request/reply message bursts: every request gets exactly its reply, no reconnect, nothing applied twice`, async (t) => {
  const d = await Daemon.start({ ha: true });
  const sock = d.sock("msg");
  const mem = native.memfdCreate("msg-kill", Number(REGION));
  let fe: RawFrontend | undefined;
  try {
    await d.ok(["mgmtpf", "-a", PF]);
    await d.ok(["vf", "-a", VF, "-v", sock, "--server"]);
    fe = await RawFrontend.connect(sock);
    const f = fe;
    await f.negotiate(bit(F.VERSION_1) | bit(F.VHOST_USER_PROTOCOL_FEATURES), bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIGURE_MEM_SLOTS));
    const rand = rng(SEED);
    let requests = 0;
    let base = 0;
    let regionIn = false;
    /** One request and its reply; the reply must be this request's and (for acks) a success. */
    const roundTrip = async (kill: boolean): Promise<void> => {
      const kind = Math.floor(rand() * 5);
      let req: Req;
      const fds: number[] = [];
      if (kind === 0) {
        req = Req.GET_FEATURES;
        f.msg(req);
      } else if (kind === 1) {
        req = Req.SET_VRING_BASE;
        base = (base + 1) & 0x7fff;
        f.msg(req, codec.vringState.encode({ index: 0, num: base }), ACK);
      } else if (kind === 2) {
        req = Req.SET_VRING_CALL;
        fds.push(native.eventFd(0));
        f.msg(req, codec.u64.encode(0n), ACK, fds);
      } else if (kind === 3) {
        req = regionIn ? Req.REM_MEM_REG : Req.ADD_MEM_REG;
        const region = codec.memRegion.encode({ guestAddr: 0x100000n, size: REGION, userAddr: 0x7f0000000000n, mmapOffset: 0n });
        if (!regionIn) fds.push(mem);
        f.msg(req, region, ACK, regionIn ? [] : [mem]);
        regionIn = !regionIn;
        fds.length = 0; // mem stays ours
      } else {
        req = Req.GET_VRING_BASE;
        f.msg(req, codec.vringState.encode({ index: 0, num: 0 }));
      }
      if (kill) {
        spinMicros(rand() * 1500);
        const pid = d.keeper?.pid;
        if (pid) process.kill(pid, "SIGKILL");
      }
      for (const fd of fds) native.closeFd(fd);
      requests++;
      const r = await f.reply(15_000);
      if (r === null) throw new Error(`request ${requests} (${Req[req]}): the back-end hung up`);
      if (r.request !== req) throw new Error(`request ${requests} (${Req[req]}): got the reply to ${Req[r.request] ?? r.request}`);
      if (req === Req.GET_VRING_BASE) {
        const st = codec.vringState.decode(r.payload);
        if (st.num !== base) throw new Error(`GET_VRING_BASE says ${st.num}; the front-end last set ${base}`);
      } else if (req !== Req.GET_FEATURES && codec.u64.decode(r.payload) !== 0n) {
        throw new Error(`request ${requests} (${Req[req]}) was refused: a message applied twice?`);
      }
    };

    let restarts = 0;
    for (let k = 0; k < KILLS; k++) {
      // A few messages on the keeper, then one with a kill right behind it.
      const before = Math.floor(rand() * 6);
      for (let i = 0; i < before; i++) await roundTrip(false);
      await roundTrip(true);
      await waitFor(() => d.keeper?.exitCode !== null || d.keeper?.signalCode !== null, 10_000, `kill ${k}: keeper gone`);
      // Messages on vfe-vhostd, then the keeper restarts while the loop goes on (the hand-back
      // happens between messages, wherever it falls).
      const during = Math.floor(rand() * 4);
      for (let i = 0; i < during; i++) await roundTrip(false);
      const starting = d.startKeeper();
      let running = false;
      void starting.then(() => (running = true), () => (running = true));
      while (!running) await roundTrip(false);
      await starting;
      restarts++;
      await waitFor(async () => ((await d.keeperCall({ method: "list" })).vfs as string[]).includes(VF), 10_000, `kill ${k}: the keeper runs the VF again`);
    }
    // Nothing more may come: a reply written twice would be waiting now.
    await sleep(300);
    const extra = native.recvWithFds(f.fd, 4096, 8);
    t.is(extra, null, "no reply beyond one per request");
    const info = (await d.ok(["vf", "-i", VF])) as any;
    t.is(info.device.reconnects, 0, "the front-end never reconnected");
    const rehandled = d.log().split("\n").filter((l) => l.includes("handling again the message")).length + d.keeperLog().split("\n").filter((l) => l.includes("handling again the message")).length;
    const resent = d.log().split("\n").filter((l) => l.includes("sending the rest of the dead runner's reply")).length;
    t.log({ kills: KILLS, restarts, requests, rehandled, resent, seed: SEED });
    t.true(f.closedByPeer === false, "the connection stayed open");
  } finally {
    fe?.close();
    native.closeFd(mem);
    await d.stop();
  }
});
