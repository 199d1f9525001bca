// Hostile HA mirror input: while vfe-vhostd runs every VF itself (the keeper was killed), a
// process of the same uid connects to its mirror socket as if it were a keeper and sends
// broken frames: lengths past the limit, bodies that are not msgpack, unknown ops, records
// with bad fields or fd indices, fds the frame does not name, hand-back steps out of order.
// vfe-vhostd closes such a connection (or ignores what changes nothing) and every VF it runs
// keeps running.
import { native } from "@vhostd/native";
import { MIRROR_MAX_FRAME_BYTES } from "@vhostd/proto";
import { mirrorSocketPath } from "@vhostd/runtime";
import { Packr } from "msgpackr";
import { sleep } from "../harness/daemon.js";
import { VF_A, type HostileWorld } from "../harness/hostile_world.js";
import { expect, type HostileCase } from "./case.js";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

function frame(body: Buffer, lengthOverride?: number): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32LE(lengthOverride ?? body.length, 0);
  return Buffer.concat([h, body]);
}

const msg = (v: unknown) => frame(packr.pack(v));

/** A record as the keeper sends it, for a VF nobody has (so a copy of it harms nobody). */
function record(over: Record<string, unknown> = {}, session: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    conn: -1,
    listen: -1,
    reconnects: 0,
    session: { features: "0x0", protocolFeatures: "0x0", status: 0, owner: false, regions: [], vrings: [], ...session },
    ...over,
  };
}

const NOBODY = "0000:af:0e.5";
const vf = (rec: Record<string, unknown>, count = 0, dev = NOBODY) => msg({ op: "vf", dev, rec, count });

interface MirrorSpec {
  name: string;
  bytes(): Buffer;
  /** fds sent with the bytes. */
  fds?: number;
  /** true: vfe-vhostd must hang up on us; false: it may keep the connection. */
  closes: boolean;
}

const specs: MirrorSpec[] = [
  { name: "a length prefix of 0xffffffff", bytes: () => frame(Buffer.alloc(8), 0xffff_ffff), closes: true },
  { name: "a length prefix one past the limit", bytes: () => frame(Buffer.alloc(8), MIRROR_MAX_FRAME_BYTES + 1), closes: true },
  { name: "a zero-length frame", bytes: () => frame(Buffer.alloc(0)), closes: true },
  { name: "a body that is not msgpack", bytes: () => frame(Buffer.from([0xc1, 0xc1, 0xc1, 0xc1])), closes: true },
  { name: "a msgpack number", bytes: () => msg(42), closes: true },
  { name: "a msgpack array", bytes: () => msg([1, 2, 3]), closes: true },
  { name: "msgpack nil", bytes: () => msg(null), closes: true },
  { name: "an unknown op", bytes: () => msg({ op: "nuke" }), closes: true },
  { name: "an op of the wrong type", bytes: () => msg({ op: 7 }), closes: true },
  { name: "a vf frame whose dev is not a PCI address", bytes: () => vf(record(), 0, "not-a-device"), closes: true },
  { name: "a vf frame whose dev is 5000 characters", bytes: () => vf(record(), 0, "0".repeat(5000)), closes: true },
  { name: "a vf frame naming 3 fds and carrying none", bytes: () => vf(record(), 3), closes: true },
  { name: "a vf frame carrying 2 fds it does not name", bytes: () => vf(record(), 0), fds: 2, closes: true },
  { name: "a record whose connection fd index is past its fds", bytes: () => vf(record({ conn: 7 }), 1), fds: 1, closes: true },
  { name: "a record naming one fd twice", bytes: () => vf(record({ conn: 0, listen: 0 }), 1), fds: 1, closes: true },
  { name: "a record whose features are not hex", bytes: () => vf(record({}, { features: "lots" })), closes: true },
  { name: "a record whose features are 80 bits", bytes: () => vf(record({}, { features: "0x" + "f".repeat(20) })), closes: true },
  { name: "a record with a negative reconnect count", bytes: () => vf(record({ reconnects: -1 })), closes: true },
  { name: "a record with 33 memory regions", bytes: () => vf(record({}, { regions: Array.from({ length: 33 }, (_, i) => ({ guestAddr: `0x${(i * 4096).toString(16)}`, size: "0x1000", userAddr: "0x0", mmapOffset: "0x0", fd: -1 })) })), closes: true },
  { name: "a record with 65 rings", bytes: () => vf(record({}, { vrings: Array.from({ length: 65 }, (_, i) => ({ index: i, num: 256, addr: null, base: 0, kick: -1, call: -1, err: -1, kicked: false, enabled: false, started: false })) })), closes: true },
  { name: "a ring of size 1000", bytes: () => vf(record({}, { vrings: [{ index: 0, num: 1000, addr: null, base: 0, kick: -1, call: -1, err: -1, kicked: false, enabled: false, started: false }] })), closes: true },
  { name: "a ring index of 9999", bytes: () => vf(record({}, { vrings: [{ index: 9999, num: 256, addr: null, base: 0, kick: -1, call: -1, err: -1, kicked: false, enabled: false, started: false }] })), closes: true },
  { name: "a region of size 0 whose end wraps", bytes: () => vf(record({}, { regions: [{ guestAddr: "0xffffffffffffffff", size: "0x0", userAddr: "0x0", mmapOffset: "0x0", fd: 0 }] }), 1), fds: 1, closes: true },
  { name: "a reply of odd hex length", bytes: () => vf(record({ reply: "abc" })), closes: true },
  { name: "a reply over the size limit", bytes: () => vf(record({ reply: "00".repeat(20_000) })), closes: true },
  { name: "a dirty log whose size is not hex", bytes: () => vf(record({}, { log: { fd: 0, size: "big", offset: "0x0" } }), 1), fds: 1, closes: true },
  { name: "an inflight area with 0 queues", bytes: () => vf(record({}, { inflight: { fd: 0, size: "0x1000", offset: "0x0", numQueues: 0, queueSize: 256 } }), 1), fds: 1, closes: true },
  { name: "a pf frame with a negative switch id", bytes: () => msg({ op: "pf", dev: "0000:af:00.7", switchId: -5, count: 0 }), closes: true },
  { name: "an offered frame from the keeper's side", bytes: () => msg({ op: "offered", req: 1, devs: [VF_A] }), closes: false },
  { name: "a released frame from the keeper's side", bytes: () => msg({ op: "released", req: 1 }), closes: false },
  { name: "a ready frame for a hand-back never asked for", bytes: () => msg({ op: "ready", req: 99 }), closes: false },
  { name: "a replied frame for a VF it never sent", bytes: () => msg({ op: "replied", dev: NOBODY }), closes: false },
  { name: "a drop frame for a VF it never sent", bytes: () => msg({ op: "drop", dev: NOBODY }), closes: false },
  { name: "a take, then hanging up mid hand-back", bytes: () => msg({ op: "take", req: 1 }), closes: false },
  { name: "two takes in a row, then hanging up", bytes: () => Buffer.concat([msg({ op: "take", req: 1 }), msg({ op: "take", req: 2 })]), closes: false },
];

/** True when the peer closed the connection within `ms`; drains (and closes) whatever it sent. */
async function hungUp(fd: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    let r;
    try {
      r = native.recvWithFds(fd, 65536, 253);
    } catch {
      return true; // ECONNRESET
    }
    if (r === null) {
      await sleep(10);
      continue;
    }
    for (const f of r.fds) native.closeFd(f);
    if (r.data.length === 0) return true;
  }
  return false;
}

function mirrorCase(s: MirrorSpec): HostileCase {
  return {
    area: "mirror",
    name: `HA mirror: ${s.name}`,
    run: async (w) => {
      expect(w.keeperDown, "the mirror cases run while vfe-vhostd runs every VF (keeper killed)");
      const fd = native.unixConnect(mirrorSocketPath(w.d.runDir));
      const fds = Array.from({ length: s.fds ?? 0 }, () => native.eventFd(0));
      try {
        native.sendWithFds(fd, s.bytes(), fds);
        const closed = await hungUp(fd, s.closes ? 3000 : 300);
        if (s.closes) expect(closed, "vfe-vhostd kept the connection open");
      } finally {
        native.closeFd(fd);
        for (const f of fds) native.closeFd(f);
      }
      await sleep(50); // a takeover of copies (if vfe-vhostd made any) happens after the hang-up
      const st = await w.rpc("ha", { status: true });
      const running: string[] = st.result?.mirror?.running ?? [];
      expect(running.includes(VF_A), `vfe-vhostd no longer runs ${VF_A} (runs ${JSON.stringify(running)})`);
    },
  };
}

export function mirrorCases(): HostileCase[] {
  return specs.map(mirrorCase);
}
