// ServerEndpoint (session/endpoint.ts): the VF's listening socket gets its mode as it is
// created. A chmod after bind() followed whatever was at the path by then: a symlink swapped in
// between made a root daemon chmod the file it points to.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { connectUnix, native } from "@vhostd/native";
import { ServerEndpoint } from "../src/session/endpoint.js";

test.serial("a symlink swapped in right after bind is not chmodded; the socket is 0660 as created", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-endpoint-"));
  const sock = path.join(dir, "vf.sock");
  const victim = path.join(dir, "victim");
  fs.writeFileSync(victim, "a file the attacker wants writable");
  fs.chmodSync(victim, 0o644);
  const real = native.unixListen;
  let modeAtListen = -1;
  // The race, made deterministic: the instant the native listen returns, the path is replaced
  // by a symlink to the victim (what another local user could do in a shared directory).
  (native as { unixListen: typeof real }).unixListen = (p: string, backlog: number, mode?: number) => {
    const fd = real(p, backlog, mode);
    modeAtListen = fs.lstatSync(p).mode & 0o777;
    fs.unlinkSync(p);
    fs.symlinkSync(victim, p);
    return fd;
  };
  const got: number[] = [];
  const ep = new ServerEndpoint(sock, (fd) => got.push(fd));
  try {
    ep.start();
  } finally {
    (native as { unixListen: typeof real }).unixListen = real;
  }
  try {
    t.is(modeAtListen, 0o660, "the socket file had its mode from the start");
    t.is(fs.statSync(victim).mode & 0o777, 0o644, "the symlink's target was not chmodded");
  } finally {
    ep.stop();
    for (const fd of got) native.closeFd(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial("a server endpoint listens with mode 0660 and accepts a front-end", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vhostd-endpoint-"));
  const sock = path.join(dir, "vf.sock");
  const old = process.umask(0o077);
  let accepted = -1;
  const ep = new ServerEndpoint(sock, (fd) => (accepted = fd));
  try {
    ep.start();
    t.is(fs.lstatSync(sock).mode & 0o777, 0o660);
    const c = connectUnix(sock);
    for (let i = 0; i < 100 && accepted < 0; i++) await new Promise((r) => setTimeout(r, 10));
    t.true(accepted >= 0, "the front-end was accepted");
    native.closeFd(c);
  } finally {
    process.umask(old);
    ep.stop();
    if (accepted >= 0) native.closeFd(accepted);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
