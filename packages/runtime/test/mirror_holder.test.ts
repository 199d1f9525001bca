// vfe-vhostd's end of the HA session mirror under hostile input: garbage, truncated frames, fd
// counts that disagree with the frame, records that do not validate, a second connection, a
// peer of another uid. Each is refused with a log line; no fd leaks; nothing is adopted from it.
import test from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { Writable } from "node:stream";
import { FramedFdConnection, connectUnix, native } from "@vhostd/native";
import type { MirrorFrame, MirrorVf } from "@vhostd/proto";
import { MIRROR_CODEC, MirrorHolder, type VfSpec } from "../src/index.js";

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split("\n")) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

const openFds = () => fs.readdirSync("/proc/self/fd").length;
const tick = (ms = 30) => new Promise((r) => setTimeout(r, ms));

function setup(t: import("ava").ExecutionContext): { holder: MirrorHolder; dir: string; lines: Array<Record<string, unknown>> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-mirror-"));
  const { log, lines } = capture();
  const spec: VfSpec = { dev: "0000:af:04.5", pf: "0000:af:00.2", kind: "net", devId: 0, switchId: 0, socketPath: `${dir}/vf.sock`, mode: "client", mac: "52:54:00:dd:bb:01", mtu: 1500, queuePairs: 1 };
  const holder = new MirrorHolder({ runDir: dir, log, specOf: (dev) => (dev === spec.dev ? spec : undefined), pfSwitchOf: (dev) => (dev === spec.pf ? spec.switchId : undefined), lockWaitMs: 50 });
  holder.listen();
  t.teardown(async () => {
    await holder.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { holder, dir, lines };
}

function raw(dir: string): number {
  return connectUnix(path.join(dir, "ha-mirror.sock"));
}

test.serial("garbage, oversize and truncated frames close the connection with a log line and change nothing", async (t) => {
  const { holder, dir, lines } = setup(t);
  const before = openFds();
  for (const bytes of [Buffer.from([0, 0, 0, 0]), Buffer.from([0xff, 0xff, 0xff, 0x7f, 1, 2]), Buffer.concat([Buffer.from([3, 0, 0, 0]), Buffer.from([0xc1, 0xc1, 0xc1])])]) {
    const fd = raw(dir);
    native.sendWithFds(fd, bytes, []);
    await tick();
    native.closeFd(fd);
    await tick();
  }
  // Truncated: a header announcing 100 bytes, then EOF.
  const fd = raw(dir);
  native.sendWithFds(fd, Buffer.from([100, 0, 0, 0, 1]), []);
  native.closeFd(fd);
  await tick();
  const closed = lines.filter((l) => l.event === "mirror_closed");
  t.true(closed.length >= 4, "every bad connection was logged");
  t.true(closed.some((l) => l.violation === true && /frame length|bad frame/.test(String(l.msg))));
  t.is(holder.status().copies, 0);
  t.is(holder.status().running.length, 0, "nothing was adopted");
  t.is(openFds(), before, "no fd leaked");
});

test.serial("a frame whose fds disagree with it is refused and its fds are closed", async (t) => {
  const { holder, dir, lines } = setup(t);
  const before = openFds();
  const fd = raw(dir);
  const body = MIRROR_CODEC.encode({ op: "pf", dev: "0000:af:00.2", switchId: 0, count: 1 });
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length);
  const ev = native.eventFd(0);
  const ev2 = native.eventFd(0);
  native.sendWithFds(fd, Buffer.concat([head, body]), [ev, ev2]); // two fds for a frame that names one
  native.closeFd(ev);
  native.closeFd(ev2);
  await tick();
  native.closeFd(fd);
  await tick();
  t.true(lines.some((l) => /fd count mismatch/.test(String(l.msg))));
  t.is(holder.status().fdsHeld, 0);
  t.is(openFds(), before, "the fds that came with the bad frame were closed");
});

test.serial("an invalid record, a second connection and another uid are refused; a bad adoption fails that VF only", async (t) => {
  const { holder, dir, lines } = setup(t);
  const first = new FramedFdConnection<MirrorFrame>(raw(dir), MIRROR_CODEC, { onFrame: () => undefined, onClose: () => undefined });
  await tick();
  // A second connection while the keeper is connected.
  const second = raw(dir);
  await tick();
  t.true(lines.some((l) => /already connected/.test(String(l.msg))));
  native.closeFd(second);
  // A record the decoder refuses (fd index beyond the frame's fds).
  const bad = { op: "vf", dev: "0000:af:04.5", count: 0, rec: { conn: 3, listen: -1, reconnects: 0, session: { features: "0x0", protocolFeatures: "0x0", status: 0, owner: false, regions: [], vrings: [] } } };
  const body = Buffer.from(MIRROR_CODEC.encode({ op: "drop", dev: "0000:af:04.5" })); // valid shape to learn the header format
  t.true(body.length > 0);
  const { Packr } = await import("msgpackr");
  const junk = new Packr({ useRecords: false }).pack(bad);
  const head = Buffer.alloc(4);
  head.writeUInt32LE(junk.length);
  native.sendWithFds(first.fd, Buffer.concat([head, junk]), []);
  await tick();
  t.true(lines.some((l) => /vf\.rec\.conn must be an integer/.test(String(l.msg))), "the bad field is named in the log");
  t.is(holder.status().copies, 0);

  // A valid frame carrying a session whose features were never offered: on takeover that VF
  // fails with a log line; the holder and the process go on.
  const conn2 = new FramedFdConnection<MirrorFrame>(raw(dir), MIRROR_CODEC, { onFrame: () => undefined, onClose: () => undefined });
  await tick();
  const [a, b] = native.socketPair();
  const rec: MirrorVf = { conn: 0, listen: -1, reconnects: 0, session: { features: "0xffffffffffffffff", protocolFeatures: "0x0", status: 0, owner: true, regions: [], vrings: [] } };
  conn2.send({ op: "pf", dev: "0000:af:00.2", switchId: 0, count: 0 });
  conn2.send({ op: "vf", dev: "0000:af:04.5", rec, count: 1 }, [a]);
  native.closeFd(a);
  await tick();
  t.is(holder.status().copies, 1);
  conn2.close("test", false); // the "keeper" goes away: takeover
  await tick(300);
  t.true(lines.some((l) => l.event === "takeover_done"), "the takeover ran to its end");
  t.true(lines.some((l) => /never offered/.test(JSON.stringify(l))), "the bad session was refused with the reason");
  native.closeFd(b);

  // Another uid cannot even connect (the socket is 0600, and SO_PEERCRED is checked).
  const sock = path.join(dir, "ha-mirror.sock");
  t.is(fs.statSync(sock).mode & 0o777, 0o600);
  if (process.getuid?.() === 0) {
    const out = execFileSync(process.execPath, ["-e", `process.setgid(65534); process.setuid(65534); require("net").connect(${JSON.stringify(sock)}).on("error", (e) => { console.log(e.code); process.exit(0); }).on("connect", () => { console.log("connected"); process.exit(0); });`], { encoding: "utf8" });
    t.is(out.trim(), "EACCES", "a process of another uid is refused at connect");
  }
});

test.serial("a VF removed while vfe-vhostd runs it since a takeover ends at once: its front-end sees the connection close", async (t) => {
  const { holder, dir, lines } = setup(t);
  const conn = new FramedFdConnection<MirrorFrame>(raw(dir), MIRROR_CODEC, { onFrame: () => undefined, onClose: () => undefined });
  await tick();
  const [ours, frontEnd] = native.socketPair();
  // A session that has negotiated nothing yet: just the connection.
  const rec: MirrorVf = { conn: 0, listen: -1, reconnects: 3, session: { features: "0x0", protocolFeatures: "0x0", status: 0, owner: true, regions: [], vrings: [] } };
  conn.send({ op: "pf", dev: "0000:af:00.2", switchId: 0, count: 0 });
  conn.send({ op: "vf", dev: "0000:af:04.5", rec, count: 1 }, [ours]);
  native.closeFd(ours);
  await tick();
  conn.close("keeper killed", false);
  await tick(300);
  t.true(holder.runs("0000:af:04.5"), "adopted in place");
  t.is(holder.runtime("0000:af:04.5")?.reconnects, 3, "the reconnect count carried over");
  t.is(native.recvWithFds(frontEnd, 16, 0), null, "the front-end's connection is open and quiet");
  await holder.closeVf("0000:af:04.5");
  t.false(holder.runs("0000:af:04.5"));
  const r = native.recvWithFds(frontEnd, 16, 0);
  t.is(r?.data.length, 0, "the front-end sees EOF");
  t.true(lines.some((l) => l.msg === "VF datapath released"));
  native.closeFd(frontEnd);
});
