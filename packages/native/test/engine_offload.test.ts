// Offload pass-through between VMs: virtio-net header copied as is, software checksum for a
// destination without GUEST_CSUM, GSO dropped for a destination without the GUEST_TSO bit.
import test from "ava";
import { native } from "../src/native.js";
import { F, VNet, counter, frame, waitFor } from "./engine_guest.js";

const A = "52:54:00:00:01:0a";
const BC = "ff:ff:ff:ff:ff:ff";

function csum(buf: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (buf.length & 1) s += buf[buf.length - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return ~s & 0xffff;
}

function hdr(flags: number, gso: number, csumStart: number, csumOffset: number, gsoSize = 0): Buffer {
  const h = Buffer.alloc(12);
  h[0] = flags;
  h[1] = gso;
  h.writeUInt16LE(54, 2);
  h.writeUInt16LE(gsoSize, 4);
  h.writeUInt16LE(csumStart, 6);
  h.writeUInt16LE(csumOffset, 8);
  return h;
}

test("NEEDS_CSUM: passed through to GUEST_CSUM, computed in software otherwise", async (t) => {
  const eng = new native.Engine({ maxDevices: 8 }, () => {});
  eng.addSwitch(1);
  const a = new VNet(eng, 1, A, F.VERSION_1 | F.CSUM);
  const b = new VNet(eng, 2, "52:54:00:00:01:0b", F.VERSION_1 | F.GUEST_CSUM);
  const c = new VNet(eng, 3, "52:54:00:00:01:0c", F.VERSION_1);
  b.postRx(4);
  c.postRx(4);
  const f = frame(BC, A, 200, 0x5a);
  f.writeUInt16BE(0x1234, 34 + 6); // partial (pseudo-header) sum in the UDP checksum field
  const h = hdr(1, 0, 34, 6);
  a.send(f, h);
  t.true(await waitFor(() => b.rx.usedIdx() === 1 && c.rx.usedIdx() === 1));
  const rb = b.recv()[0];
  t.deepEqual(rb.frame, f); // untouched
  t.is(rb.hdr[0], 1);
  t.is(rb.hdr.readUInt16LE(6), 34);
  t.is(rb.hdr.readUInt16LE(8), 6);
  const rc = c.recv()[0];
  t.is(rc.hdr[0], 0);
  const expect = Buffer.from(f);
  expect.writeUInt16BE(csum(f.subarray(34)), 40);
  t.deepEqual(rc.frame, expect);
  // Bad csum_start: dropped for the software path, counted as error on the destination.
  a.send(frame(BC, A, 60), hdr(1, 0, 100, 6));
  t.true(await waitFor(() => counter(eng, 3, 0, "errors") === 1n));
  eng.close();
  for (const d of [a, b, c]) d.close();
});

test("GSO frames reach only destinations with the matching GUEST_TSO feature", async (t) => {
  const eng = new native.Engine({ maxDevices: 8 }, () => {});
  eng.addSwitch(1);
  const a = new VNet(eng, 1, A, F.VERSION_1 | F.CSUM);
  const b = new VNet(eng, 2, "52:54:00:00:01:0b", F.VERSION_1 | F.GUEST_CSUM | F.GUEST_TSO4 | F.MRG_RXBUF);
  const c = new VNet(eng, 3, "52:54:00:00:01:0c", F.VERSION_1 | F.GUEST_CSUM);
  b.postRx(64, 4096);
  c.postRx(4);
  const f = frame(BC, A, 9000, 0x11);
  const h = hdr(1, 1 /* TCPV4 */, 34, 16, 1448);
  a.send(f, h);
  t.true(await waitFor(() => b.rx.usedIdx() === 3));
  const rb = b.recv()[0];
  t.is(rb.hdr[1], 1);
  t.is(rb.hdr.readUInt16LE(4), 1448);
  t.is(rb.hdr.readUInt16LE(2), 54);
  t.is(rb.numBuffers, 3);
  t.deepEqual(rb.frame, f);
  t.true(await waitFor(() => counter(eng, 3, 0, "drops") === 1n));
  t.is(c.rx.usedIdx(), 0);
  eng.close();
  for (const d of [a, b, c]) d.close();
});
