// The keeper's replica journal keeps a blk guest's cache-mode choice (CONFIG_WCE) beside the
// replicated tables: durable at once, invisible to the tables' reader, gone with the VF.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ReplicaJournal } from "../src/replica.js";

test("a guest's write-through choice survives reopening the journal and is forgotten on request", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-replica-"));
  try {
    let r = ReplicaJournal.open(dir);
    t.is(r.writeback("0000:af:05.1"), undefined, "never set");
    r.setWriteback("0000:af:05.1", 0);
    r.setWriteback("0000:af:05.2", 1);
    await r.close();
    r = ReplicaJournal.open(dir);
    t.is(r.writeback("0000:af:05.1"), 0, "write-through, after a restart");
    t.is(r.writeback("0000:af:05.2"), 1);
    const contents = r.read();
    t.deepEqual(contents.errors, [], "the tables' reader skips the guest choices");
    r.forgetGuest("0000:af:05.1");
    t.is(r.writeback("0000:af:05.1"), undefined);
    await r.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
