// HA session mirror frames: round trips, and hostile input (only SyncError ever escapes; an fd
// index that no fd of the frame backs, or one fd named twice, is refused).
import test from "ava";
import { Packr } from "msgpackr";
import {
  MIRROR_MAX_FDS_PER_FRAME,
  MIRROR_MAX_FRAME_BYTES,
  SyncError,
  decodeMirrorFrame,
  encodeMirrorFrame,
  mirrorFrameFdCount,
  mirrorVfFdIndices,
  type MirrorFrame,
  type MirrorVf,
} from "../src/index.js";

const std = new Packr({ useRecords: false });

function rec(): MirrorVf {
  return {
    conn: 0,
    listen: -1,
    reconnects: 2,
    session: {
      features: "0x150000000",
      protocolFeatures: "0x8000",
      status: 15,
      owner: true,
      regions: [{ guestAddr: "0x0", size: "0x40000000", userAddr: "0x7f0000000000", mmapOffset: "0x0", fd: 1 }],
      vrings: [
        { index: 0, num: 256, addr: { flags: 0, desc: "0x1000", used: "0x3000", avail: "0x2000", log: "0x0" }, base: 7, kick: 2, call: 3, err: -1, kicked: true, enabled: true, started: true },
        { index: 1, num: 0, addr: null, base: 0, kick: -1, call: -1, err: -1, kicked: false, enabled: false, started: false },
      ],
    },
  };
}

const samples: MirrorFrame[] = [
  { op: "vf", dev: "0000:af:04.5", rec: rec(), count: 4 },
  { op: "pf", dev: "0000:af:00.2", switchId: 3, count: 1 },
  { op: "pf", dev: "0000:af:00.2", switchId: 3, count: 0 },
  { op: "drop", dev: "0000:af:04.5" },
  { op: "replied", dev: "0000:af:04.5" },
  { op: "reply", dev: "0000:af:04.5", reply: "030000000d0000000800000001000000000000" },
  { op: "vf", dev: "0000:af:04.5", rec: { ...rec(), reply: "0100000005000000080000000000000000" }, count: 4 },
  { op: "vf", dev: "0000:af:05.1", rec: { ...rec(), session: { ...rec().session, writeback: 0 } }, count: 4 },
  { op: "vf", dev: "0000:af:04.5", rec: { ...rec(), lockedMac: "52:54:00:12:34:56" }, count: 4 },
  { op: "vf", dev: "0000:af:04.5", rec: { ...rec(), seq: 41, replyPipe: { read: 4, write: 5 } }, count: 6 },
  { op: "msg", dev: "0000:af:04.5", seq: 42, bytes: "010000000100000000000000", count: 0 },
  { op: "msg", dev: "0000:af:04.5", seq: 43, bytes: "0d0000000500000008000000" + "00".repeat(8), count: 1 },
  { op: "done", dev: "0000:af:04.5", seq: 42 },
  { op: "handover" },
  { op: "take", req: 1 },
  { op: "offered", req: 1, devs: ["0000:af:04.5", "0000:af:05.5"] },
  { op: "ready", req: 1 },
  { op: "released", req: 1 },
];

test("every frame round-trips and names its fds", (t) => {
  for (const f of samples) t.deepEqual(decodeMirrorFrame(encodeMirrorFrame(f)), f, f.op);
  t.is(mirrorFrameFdCount(samples[0]!), 4);
  t.deepEqual(mirrorVfFdIndices(rec()).sort(), [0, 1, 2, 3]);
});

function refused(t: import("ava").ExecutionContext, body: unknown, why: RegExp): void {
  const err = t.throws(() => decodeMirrorFrame(std.pack(body)), { instanceOf: SyncError });
  t.regex(err!.message, why);
}

test("a reply frame carries whole hex reply bytes and nothing else", (t) => {
  t.is(mirrorFrameFdCount({ op: "reply", dev: "0000:af:04.5", reply: "00".repeat(20) }), 0);
  refused(t, { op: "reply", dev: "0000:af:04.5", reply: "xyz" }, /reply/);
  refused(t, { op: "reply", dev: "0000:af:04.5", reply: "00" }, /reply/); // shorter than a header
  refused(t, { op: "reply", dev: "0000:af:04.5", reply: "0".repeat(25) }, /reply/); // odd
  refused(t, { op: "reply", dev: "0000:af:04.5", reply: "00".repeat(9000) }, /reply/);
  refused(t, { op: "reply", dev: "0000:af:04.5" }, /reply/);
  refused(t, { op: "reply", dev: "0000:af:04.5", reply: "00".repeat(20), count: 1 }, /count|field/);
});

test("hostile vf records are refused with the field named", (t) => {
  const base = { op: "vf", dev: "0000:af:04.5", rec: rec(), count: 4 };
  refused(t, { ...base, count: 3 }, /call must be an integer in \[-1, 2\]/);
  refused(t, { ...base, count: 5 }, /uses 4 fds but the frame carries 5/);
  refused(t, { ...base, count: MIRROR_MAX_FDS_PER_FRAME + 1 }, /count/);
  const twice = rec();
  twice.session.vrings[0]!.call = 2;
  refused(t, { ...base, rec: twice, count: 3 }, /twice/);
  const badHex = rec();
  badHex.session.features = "12";
  refused(t, { ...base, rec: badHex }, /features/);
  const bigRing = rec();
  bigRing.session.vrings[0]!.num = 65536;
  refused(t, { ...base, rec: bigRing }, /num/);
  const oddRing = rec();
  oddRing.session.vrings[0]!.num = 1000;
  refused(t, { ...base, rec: oddRing }, /num must be a power of two/);
  const emptyRegion = rec();
  emptyRegion.session.regions[0]!.size = "0x0";
  refused(t, { ...base, rec: emptyRegion }, /size must not be 0/);
  const wraps = rec();
  wraps.session.regions[0]!.guestAddr = "0xffffffffffff0000";
  refused(t, { ...base, rec: wraps }, /guestAddr range wraps/);
  const wrongIndex = rec();
  wrongIndex.session.vrings[1]!.index = 5;
  refused(t, { ...base, rec: wrongIndex }, /index/);
  refused(t, { ...base, dev: "../../etc" }, /dev/);
  refused(t, { ...base, extra: 1 }, /extra/);
  refused(t, { ...base, rec: { ...rec(), session: { ...rec().session, writeback: 2 } } }, /writeback/);
  refused(t, { ...base, rec: { ...rec(), session: { ...rec().session, writeback: true } } }, /writeback/);
  refused(t, { ...base, rec: { ...rec(), reply: "xyz" } }, /reply/);
  refused(t, { ...base, rec: { ...rec(), reply: "ab".repeat(9000) } }, /reply/);
  const proto = JSON.parse('{"op":"vf","dev":"0000:af:04.5","count":4,"__proto__":{"x":1}}') as Record<string, unknown>;
  refused(t, { ...proto, rec: rec() }, /./);
});

test("a session's dirty log (migration) rides in the record as one more fd, validated like the others", (t) => {
  const withLog = rec();
  withLog.session.log = { fd: 4, size: "0x2000", offset: "0x0" };
  const f: MirrorFrame = { op: "vf", dev: "0000:af:04.5", rec: withLog, count: 5 };
  t.deepEqual(decodeMirrorFrame(encodeMirrorFrame(f)), f);
  t.deepEqual(mirrorVfFdIndices(withLog).sort(), [0, 1, 2, 3, 4]);
  refused(t, { ...f, count: 4 }, /log.*fd|fd.*\[0, 3\]/);
  const shared = rec();
  shared.session.log = { fd: 2, size: "0x2000", offset: "0x0" };
  refused(t, { ...f, rec: shared, count: 4 }, /twice/);
  const badSize = rec();
  badSize.session.log = { fd: 4, size: "8192", offset: "0x0" } as never;
  refused(t, { ...f, rec: badSize }, /size/);
  refused(t, { ...f, rec: { ...rec(), session: { ...rec().session, log: { fd: 4, size: "0x1", offset: "0x0", extra: 1 } } } }, /extra/);
});

test("a blk session's inflight area rides in the record as one more fd, its geometry checked", (t) => {
  const r = rec();
  r.session.inflight = { fd: 4, size: "0x1040", offset: "0x0", numQueues: 1, queueSize: 256 };
  const f: MirrorFrame = { op: "vf", dev: "0000:af:05.1", rec: r, count: 5 };
  t.deepEqual(decodeMirrorFrame(encodeMirrorFrame(f)), f);
  t.deepEqual(mirrorVfFdIndices(r).sort(), [0, 1, 2, 3, 4]);
  refused(t, { ...f, rec: { ...r, session: { ...r.session, inflight: { ...r.session.inflight, queueSize: 65536 } } } }, /queueSize/);
  refused(t, { ...f, rec: { ...r, session: { ...r.session, inflight: { ...r.session.inflight, numQueues: 0 } } } }, /numQueues/);
  refused(t, { ...f, rec: { ...r, session: { ...r.session, inflight: { ...r.session.inflight, fd: 3 } } }, count: 4 }, /twice/);
});

test("garbage never escapes as anything but SyncError", (t) => {
  for (const junk of [Buffer.alloc(0), Buffer.from([0xc1]), Buffer.alloc(MIRROR_MAX_FRAME_BYTES + 1), std.pack([1, 2]), std.pack({ op: "nope" }), std.pack({ op: "take", req: -1 }), std.pack({ op: "offered", req: 1, devs: ["x"] })]) {
    t.throws(() => decodeMirrorFrame(junk), { instanceOf: SyncError });
  }
});

test("a port's locked MAC rides in the record, and must be a canonical unicast MAC", (t) => {
  for (const bad of ["01:00:5e:00:00:01", "52:54:00:12:34:5G", "52-54-00-12-34-56", "00:00:00:00:00:00", "52:54:00:12:34:56:00", 5]) {
    refused(t, { op: "vf", dev: "0000:af:04.5", rec: { ...rec(), lockedMac: bad }, count: 4 }, /lockedMac/);
  }
});

test("an announced message (msg) is one whole vhost-user message with its fds; seq and done are checked", (t) => {
  const dev = "0000:af:04.5";
  const getFeatures = "010000000100000000000000";
  t.is(mirrorFrameFdCount({ op: "msg", dev, seq: 1, bytes: getFeatures, count: 2 }), 2);
  refused(t, { op: "msg", dev, seq: 1, bytes: getFeatures + "00", count: 0 }, /header says 12/);
  refused(t, { op: "msg", dev, seq: 1, bytes: "0100000001000000080000000000", count: 0 }, /header says 20/);
  refused(t, { op: "msg", dev, seq: 1, bytes: "00".repeat(8), count: 0 }, /bytes/); // shorter than a header
  refused(t, { op: "msg", dev, seq: 1, bytes: "00".repeat(12 + 4097), count: 0 }, /bytes/);
  refused(t, { op: "msg", dev, seq: 0, bytes: getFeatures, count: 0 }, /seq/);
  refused(t, { op: "msg", dev, seq: 1, bytes: getFeatures, count: 9 }, /count/);
  refused(t, { op: "msg", dev, seq: 1, bytes: "zz".repeat(12), count: 0 }, /hex/);
  refused(t, { op: "done", dev, seq: 0 }, /seq/);
  refused(t, { op: "done", dev, seq: 1.5 }, /seq/);
  refused(t, { op: "vf", dev, rec: { ...rec(), seq: -1 }, count: 4 }, /seq/);
  refused(t, { op: "vf", dev, rec: { ...rec(), replyPipe: { read: 4, write: 4 } }, count: 5 }, /twice/);
  refused(t, { op: "vf", dev, rec: { ...rec(), replyPipe: { read: 4, write: 9 } }, count: 6 }, /write/);
  refused(t, { op: "vf", dev, rec: { ...rec(), conn: -1, session: { ...rec().session, regions: [], vrings: [] }, replyPipe: { read: 0, write: 1 } }, count: 2 }, /connection/);
});
