// Writes the hand-made seeds of the JS targets (well-formed messages of each decoder) into
// OUTDIR/js_<target>/: node js/seeds.mjs OUTDIR.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

import {
  HA_SYNC_PROTOCOL_VERSION, RPC_METHODS, Req, codec, encodeMessage, encodeMirrorFrame, encodeSyncMessage,
} from "@vhostd/proto";

const rec = () => ({
  conn: 0, listen: -1, reconnects: 2,
  session: {
    features: "0x150000000", protocolFeatures: "0x8000", status: 15, owner: true,
    regions: [{ guestAddr: "0x0", size: "0x40000000", userAddr: "0x7f0000000000", mmapOffset: "0x0", fd: 1 }],
    vrings: [
      { index: 0, num: 256, addr: { flags: 0, desc: "0x1000", used: "0x3000", avail: "0x2000", log: "0x0" }, base: 7, kick: 2, call: 3, err: -1, kicked: true, enabled: true, started: true },
      { index: 1, num: 0, addr: null, base: 0, kick: -1, call: -1, err: -1, kicked: false, enabled: false, started: false },
    ],
  },
});
const region = { guestAddr: 0n, size: 0x40000000n, userAddr: 0x7f0000000000n, mmapOffset: 0n };
const seeds = {
  vhost_user: [
    encodeMessage(Req.GET_FEATURES),
    encodeMessage(Req.SET_FEATURES, codec.u64.encode(0x150000000n)),
    encodeMessage(Req.SET_MEM_TABLE, codec.memTable.encode([region])),
    encodeMessage(Req.SET_VRING_ADDR, codec.vringAddr.encode({ index: 1, flags: 0, desc: 0x7f0000001000n, used: 0x7f0000003000n, avail: 0x7f0000002000n, log: 0n })),
    encodeMessage(Req.SET_VRING_KICK, codec.vringFd.encode({ index: 0, noFd: false })),
    encodeMessage(Req.ADD_MEM_REG, codec.memRegion.encode(region)),
    encodeMessage(Req.SET_LOG_BASE, codec.log.encode({ size: 0x1000n, offset: 0n })),
    encodeMessage(Req.GET_CONFIG, codec.config.encode({ offset: 0, size: 8, flags: 0, data: Buffer.alloc(8) })),
    encodeMessage(Req.SET_INFLIGHT_FD, codec.inflight.encode({ mmapSize: 0x1000n, mmapOffset: 0n, numQueues: 1, queueSize: 128 })),
    encodeMessage(Req.SEND_RARP, codec.rarp.encode("52:54:00:12:34:56")),
  ],
  mirror: [
    { op: "vf", dev: "0000:af:04.5", rec: rec(), count: 4 },
    { op: "pf", dev: "0000:af:00.2", switchId: 3, count: 1 },
    { op: "drop", dev: "0000:af:04.5" },
    { op: "offered", req: 1, devs: ["0000:af:04.5", "0000:af:05.5"] },
  ].map(encodeMirrorFrame),
  sync: [
    { type: "hello", protocolVersion: HA_SYNC_PROTOCOL_VERSION, epoch: 7, pid: 1234, version: "0.1.0" },
    { type: "snapshot", epoch: 7, seq: 3, state: { devices: { "vf-0": { mac: "52:54:00:00:00:01", features: 0x1_0000_0000n, blob: Buffer.from([1, 2, 3]) } }, sessions: { s1: { rings: [{ idx: 3 }], up: true, note: null } }, fds: { "vf-0/kick0": { id: "vf-0/kick0", kind: "eventfd", count: 1 } } } },
    { type: "delta", epoch: 7, seq: 1, ops: [{ op: "put", table: "devices", key: "vf-1", value: { mtu: 1500 } }, { op: "del", table: "sessions", key: "s0" }] },
    { type: "nack", epoch: 7, seq: 5, of: "delta", code: "gap", reason: "expected seq 2" },
  ].map(encodeSyncMessage),
  rpc: RPC_METHODS.flatMap((m, i) => (m.actions.length ? m.actions : [{ name: null, required: [] }]).map((a) => {
    const p = {};
    if (a.name) p[a.name] = true;
    for (const r of a.required) p[r] = m.params[r]?.type.kind === "int" ? 1 : m.params[r]?.type.kind === "bool" ? true : "0000:af:00.2";
    return Buffer.concat([Buffer.from([i]), Buffer.from(JSON.stringify(p))]);
  })),
};
const out = process.argv[2];
for (const [t, list] of Object.entries(seeds)) {
  const dir = path.join(out, `js_${t}`);
  mkdirSync(dir, { recursive: true });
  list.forEach((b, i) => writeFileSync(path.join(dir, `seed-${i}`), b));
}
console.log(`js seeds written to ${out}`);
