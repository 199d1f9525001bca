// Typed conveniences over the unix-socket primitives of the native module.
import type { Server } from "node:net";
import { native, type PeerCred } from "./native.js";

export interface ListenUnixOptions {
  /** Mode of the socket file, e.g. 0o660 (default: whatever the umask leaves). */
  mode?: number;
  /** listen() backlog (default 16). */
  backlog?: number;
}

/**
 * Listens on a filesystem unix socket and returns the non-blocking listening fd.
 * A socket file left by a dead server is replaced; one a live server listens on is
 * not (throws EADDRINUSE). The file is created with `mode` (no chmod after the fact,
 * which would follow a symlink put in its place).
 */
export function listenUnix(path: string, opts: ListenUnixOptions = {}): number {
  return native.unixListen(path, opts.backlog ?? 16, opts.mode);
}

/**
 * Serves a node:net (or node:http) Server on a unix socket that the native bind creates with
 * `mode` (default 0600: the daemons' private sockets), as listenUnix() does; resolves once
 * Node listens. The fd is closed again if Node refuses it.
 */
export async function serveUnix(server: Server, path: string, mode = 0o600, backlog = 511): Promise<void> {
  const fd = native.unixListen(path, backlog, mode);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ fd }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    native.closeFd(fd);
    throw err;
  }
}

/**
 * Connects to a unix socket; returns the non-blocking connected fd. Throws an Error
 * with .code (ENOENT, ECONNREFUSED, EAGAIN when the backlog is full, EACCES, ...).
 */
export function connectUnix(path: string): number {
  return native.unixConnect(path);
}

/**
 * Sends all of data, waiting up to stallMs each time the socket is full: for tools (the
 * project's front-end driver, tests), never for a daemon's sockets (use OutgoingQueue). The fds
 * ride on the first byte. Throws EAGAIN when a stall outlasts stallMs; part of the data may have
 * gone by then, so the connection must be treated as broken.
 */
export function sendAllBlocking(fd: number, data: Buffer, fds: readonly number[] = [], stallMs = 1000): number {
  let sent = native.sendWithFds(fd, data, [...fds]);
  while (sent < data.length) {
    if (!native.waitWritable(fd, stallMs)) throw Object.assign(new Error("sendmsg EAGAIN (peer does not read)"), { code: "EAGAIN", errno: -11, syscall: "sendmsg" });
    sent += native.sendWithFds(fd, sent === 0 ? data : data.subarray(sent), sent === 0 ? [...fds] : []);
  }
  return sent;
}

/** Closes every fd of a list, ignoring errors (for cleanup paths that must not throw). */
export function closeFds(fds: Iterable<number>): void {
  for (const fd of fds) {
    try {
      native.closeFd(fd);
    } catch {
      // already closed: nothing left to release
    }
  }
}

/** Why a peer may not use one of our unix sockets, or null when it may: only our own effective uid. */
export function checkPeerCred(cred: PeerCred, euid: number): string | null {
  if (cred.uid !== euid) return `peer uid ${cred.uid} (pid ${cred.pid}) is not our euid ${euid}`;
  return null;
}
