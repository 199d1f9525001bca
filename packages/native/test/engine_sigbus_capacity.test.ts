// The SIGBUS guard registers every mapping of a front-end file (guest memory regions, dirty
// logs, inflight areas). Its registry used to be a fixed table of 16384 slots: 257 VFs with 64
// regions each filled it and the next memory table was refused. It now grows in chunks up to
// the product's limits, and a mapping it guards still turns a shrunk file into a device fault.
import test from "ava";
import fs from "node:fs";
import { native, type EngineEvent } from "../src/native.js";
import { testSupport } from "../src/testing.js";
import { waitFor } from "./engine_guest.js";

const PAGE = 4096;
const REGIONS = 64;
const DEVICES = 300; // 300 x 64 = 19200 mappings, more than the old 16384

test("300 devices x 64 memory regions each fit under the guard; a fault in the last one is still caught", async (t) => {
  const events: EngineEvent[] = [];
  const eng = new native.Engine({ maxDevices: DEVICES + 1 }, (ev) => events.push(ev));
  eng.addSwitch(1);
  // One file, one page per region: every region is its own mapping (and registry slot).
  const fd = testSupport.memfd("guard-capacity", REGIONS * PAGE);
  const regions = Array.from({ length: REGIONS }, (_, i) => ({
    fd,
    guestAddr: BigInt(i * PAGE),
    size: BigInt(PAGE),
    userAddr: BigInt(i * PAGE),
    mmapOffset: BigInt(i * PAGE),
  }));
  t.teardown(() => {
    eng.close();
    testSupport.closeFd(fd);
  });
  for (let dev = 0; dev < DEVICES; dev++) {
    const mac = `52:54:00:01:${(dev >> 8).toString(16).padStart(2, "0")}:${(dev & 0xff).toString(16).padStart(2, "0")}`;
    eng.addNetDevice(dev, { switchId: 1, mac, mtu: 1500, maxQueuePairs: 1 });
    eng.setMemTable(dev, regions);
  }
  t.pass(`${DEVICES * REGIONS} guest memory mappings registered`);

  // The guard still works for a mapping in the newest chunk: shrink the file, touch the last
  // device's memory through a ring start (its rings are read: SIGBUS in the engine's thread).
  const last = DEVICES - 1;
  fs.ftruncateSync(fd, 0);
  const err = testSupport.eventFd();
  t.teardown(() => testSupport.closeFd(err));
  try {
    eng.startQueue(last, 1, { size: 16, descAddr: BigInt(63 * PAGE), availAddr: BigInt(63 * PAGE + 256), usedAddr: BigInt(63 * PAGE + 512), lastAvailIdx: 0, kickFd: -1, callFd: -1, errFd: err });
  } catch {
    // refused once the fault was seen: also fine
  }
  t.true(await waitFor(() => events.some((e) => e.devId === last && /shrank under us/.test(e.reason)), 5000), "the fault is reported for that device");
});
