// TAP uplink with a real tap device: a VF's frame reaches the host kernel's UDP stack, and a
// frame the kernel sends out of the tap reaches the VF.
import test from "ava";
import dgram from "node:dgram";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { native } from "../src/native.js";
import { testSupport } from "../src/testing.js";
import { F, VNet, mac, sleep, waitFor } from "./engine_guest.js";

const haveTun = fs.existsSync("/dev/net/tun") && process.getuid?.() === 0;
const A = "52:54:00:00:04:0a";

function ipv4Udp(dstMac: string, srcMac: string, src: string, dst: string, sport: number, dport: number, payload: Buffer) {
  const f = Buffer.alloc(14 + 20 + 8 + payload.length);
  mac(dstMac).copy(f, 0);
  mac(srcMac).copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  const ip = 14;
  f[ip] = 0x45;
  f.writeUInt16BE(20 + 8 + payload.length, ip + 2);
  f[ip + 8] = 64;
  f[ip + 9] = 17;
  src.split(".").forEach((x, i) => (f[ip + 12 + i] = +x));
  dst.split(".").forEach((x, i) => (f[ip + 16 + i] = +x));
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += f.readUInt16BE(ip + i);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  f.writeUInt16BE(~s & 0xffff, ip + 10);
  f.writeUInt16BE(sport, 34);
  f.writeUInt16BE(dport, 36);
  f.writeUInt16BE(8 + payload.length, 38);
  payload.copy(f, 42);
  return f;
}

(haveTun ? test.serial : test.skip)("tap uplink: VF <-> host kernel through a real tap", async (t) => {
  const name = `vhdt${process.pid % 100000}`;
  const tap = native.openTap(name);
  const ip = (...a: string[]) => execFileSync("ip", a);
  try {
    ip("addr", "add", "10.213.7.1/24", "dev", name);
    ip("link", "set", "dev", name, "up");
    ip("neigh", "replace", "10.213.7.2", "lladdr", A, "dev", name, "nud", "permanent");
    const tapMac = fs.readFileSync(`/sys/class/net/${name}/address`, "utf8").trim();

    const eng = new native.Engine({ maxDevices: 8, workers: 2 }, () => {});
    eng.addSwitch(1);
    eng.setSwitchUplink(1, tap);
    const a = new VNet(eng, 1, A, F.VERSION_1);
    a.postRx(64);

    // VF -> kernel: a UDP datagram to a socket bound on the tap's address
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((r) => sock.bind(41000, "10.213.7.1", () => r()));
    const got: Buffer[] = [];
    sock.on("message", (m) => got.push(m));
    const rxBefore = Number(fs.readFileSync(`/sys/class/net/${name}/statistics/rx_packets`, "utf8"));
    a.send(ipv4Udp(tapMac, A, "10.213.7.2", "10.213.7.1", 40000, 41000, Buffer.from("hello from the VF")));
    t.true(await waitFor(() => got.length > 0), "datagram reached the host stack");
    t.is(got[0].toString(), "hello from the VF");
    t.true(Number(fs.readFileSync(`/sys/class/net/${name}/statistics/rx_packets`, "utf8")) > rxBefore);
    t.true(eng.uplinkStats(1).txPackets >= 1);

    // kernel -> VF: the kernel sends to 10.213.7.2 (A) out of the tap; the engine reads it
    const out = dgram.createSocket("udp4");
    await new Promise<void>((r) => out.send(Buffer.from("hello from the host"), 42000, "10.213.7.2", () => r()));
    let seen: Buffer | undefined;
    t.true(
      await waitFor(() => {
        for (const r of a.recv()) {
          if (r.frame.readUInt16BE(12) === 0x0800 && r.frame[23] === 17 && r.frame.readUInt16BE(36) === 42000) seen = r.frame;
        }
        return seen !== undefined;
      }),
      "frame from the kernel reached the VF",
    );
    t.is(seen!.subarray(42).toString(), "hello from the host");
    t.deepEqual(seen!.subarray(0, 6), mac(A));
    t.true(eng.fdb(1).some((e) => e.devId === -1 && e.mac === tapMac), "uplink MAC learned on port -1");
    t.true(eng.uplinkStats(1).rxPackets >= 1);

    // detach: the engine lets go of its dup; frames no longer leave
    eng.setSwitchUplink(1, -1);
    t.false(eng.uplinkStats(1).attached);
    t.false(eng.fdb(1).some((e) => e.devId === -1));
    sock.close();
    out.close();
    eng.close();
    a.close();
    await sleep(1);
  } finally {
    testSupport.closeFd(tap);
  }
});
