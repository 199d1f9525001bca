// systemd's fd store, with the test playing systemd: pushed fds arrive as SCM_RIGHTS beside
// "FDSTORE=1\nFDNAME=...", a removal is "FDSTOREREMOVE=1"; LISTEN_FDS/LISTEN_FDNAMES are read
// as sd_listen_fds_with_names(3) reads them.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { native } from "@vhostd/native";
import { testSupport } from "@vhostd/native/testing";
import { FdStore, LISTEN_FDS_START, listenFds, validFdName } from "../src/index.js";

test.serial("pushed fds reach systemd with their name (the same files), and a name can be removed", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-fdstore-"));
  const sock = path.join(dir, "notify.sock");
  const listener = testSupport.notifyListen(sock);
  const saved = process.env.NOTIFY_SOCKET;
  process.env.NOTIFY_SOCKET = sock;
  const ev = native.eventFd(0);
  const [a, b] = native.socketPair();
  try {
    const store = new FdStore();
    t.true(store.available);
    t.true(store.push("vf5.conn", [ev, a]));
    const n = testSupport.notifyRecv(listener)!;
    t.is(n.data, "FDSTORE=1\nFDNAME=vf5.conn");
    t.is(n.pid, process.pid);
    t.is(n.fds.length, 2);
    t.is(fs.fstatSync(n.fds[0]!).ino, fs.fstatSync(ev).ino, "the store gets the same file, not a copy");
    t.is(fs.fstatSync(n.fds[1]!).ino, fs.fstatSync(a).ino);
    n.fds.forEach((fd) => native.closeFd(fd));
    t.true(store.remove("vf5.conn"));
    t.like(testSupport.notifyRecv(listener), { data: "FDSTOREREMOVE=1\nFDNAME=vf5.conn", fds: [] });
    t.throws(() => store.push("vf5:conn", [ev]), { instanceOf: RangeError }, "':' separates LISTEN_FDNAMES");
    t.throws(() => store.push("", [ev]), { instanceOf: RangeError });
    delete process.env.NOTIFY_SOCKET;
    t.false(new FdStore().available);
    t.false(new FdStore().push("vf5.conn", [ev]), "outside systemd: a no-op");
  } finally {
    if (saved === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved;
    [ev, a, b, listener].forEach((fd) => native.closeFd(fd));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("LISTEN_FDS are this process's only when LISTEN_PID says so; names may repeat; the variables are cleared", (t) => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: "4242", LISTEN_FDS: "4", LISTEN_FDNAMES: "vf1.conn:vf1.mem0:vf1.conn:bad name" };
  const got = listenFds(env, 4242);
  t.deepEqual([...got], [
    ["vf1.conn", [LISTEN_FDS_START, LISTEN_FDS_START + 2]],
    ["vf1.mem0", [LISTEN_FDS_START + 1]],
    ["unknown", [LISTEN_FDS_START + 3]],
  ]);
  t.deepEqual(env, {}, "a child must not take them for its own");
  t.is(listenFds({ LISTEN_PID: "1", LISTEN_FDS: "2", LISTEN_FDNAMES: "a:b" }, 4242).size, 0, "another process's");
  t.is(listenFds({ LISTEN_PID: "4242", LISTEN_FDS: "x" }, 4242).size, 0);
  t.true(validFdName("vf12.kick3"));
  t.false(validFdName("a".repeat(256)));
  t.false(validFdName("tab\there"));
});
