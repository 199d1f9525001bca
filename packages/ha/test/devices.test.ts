// The keeper's devices table: a blk VF's disk is validated like vhostd's journal validates it
// (it is what the keeper opens, and reopens at its own restart).
import test from "ava";
import { parseDeviceEntry } from "../src/devices.js";

const VF = "0000:af:05.1";
const base = { dev: VF, pf: "0000:af:00.3", kind: "blk", devId: 3, switchId: 1, socketPath: "/tmp/blk.sock", mode: "client", mac: "52:54:00:00:af:29", mtu: 1500, queuePairs: 2 };
const disk = { path: "/var/lib/vm/a.raw", size: 1 << 30, readonly: false, direct: true };

test("a blk VF carries its disk through the devices table", (t) => {
  const e = parseDeviceEntry(`vf/${VF}`, { ...base, disk });
  t.is(e.kind, "vf");
  t.deepEqual((e.value as { disk?: unknown }).disk, disk);
  t.deepEqual((parseDeviceEntry(`vf/${VF}`, { ...base, disk: { ...disk, path: "null", size: 1 << 20 } }).value as { disk?: unknown }).disk, { ...disk, path: "null", size: 1 << 20 });
});

test("hostile disks are refused", (t) => {
  const bad: unknown[] = [
    undefined, // blk without disk
    "/x.raw",
    { ...disk, path: "rel.raw" },
    { ...disk, path: "/a/../b" },
    { ...disk, path: "/" + "x".repeat(5000) },
    { ...disk, path: "/a\0b" },
    { ...disk, size: -1 },
    { ...disk, size: 2 ** 60 },
    { ...disk, size: 1.5 },
    { ...disk, path: "null", size: 100 },
    { ...disk, readonly: 1 },
    { ...disk, direct: "yes" },
    { ...disk, extra: true },
  ];
  for (const d of bad) t.throws(() => parseDeviceEntry(`vf/${VF}`, d === undefined ? base : { ...base, disk: d }), undefined, JSON.stringify(d));
  t.throws(() => parseDeviceEntry("vf/0000:af:04.5", { ...base, dev: "0000:af:04.5", kind: "net", disk }), { message: /only blk VFs/ });
});

test("a net VF's port security rides in the devices table; absent means the defaults; hostile values are refused", (t) => {
  const net = { ...base, kind: "net" };
  t.deepEqual(parseDeviceEntry(`vf/${VF}`, net).value, net, "a record from before the fields");
  const ps = { spoofchk: false, trust: true, macAdmin: true };
  t.like(parseDeviceEntry(`vf/${VF}`, { ...net, ...ps }).value, ps);
  t.throws(() => parseDeviceEntry(`vf/${VF}`, { ...net, trust: 1 }), { message: /trust must be a boolean/ });
  t.throws(() => parseDeviceEntry(`vf/${VF}`, { ...base, disk, spoofchk: false }), { message: /net VFs only/ });
});
