// Typed conveniences over the unix-socket primitives of the native module.
import { chmodSync } from "node:fs";
import { native } from "./native.js";

export interface ListenUnixOptions {
  /** Mode of the socket file, e.g. 0o660 (default: whatever the umask leaves). */
  mode?: number;
  /** listen() backlog (default 16). */
  backlog?: number;
}

/**
 * Listens on a filesystem unix socket and returns the non-blocking listening fd.
 * A socket file left by a dead server is replaced; one a live server listens on is
 * not (throws EADDRINUSE). The mode is applied right after bind, before anyone is
 * expected to connect; on failure the fd is closed.
 */
export function listenUnix(path: string, opts: ListenUnixOptions = {}): number {
  const fd = native.unixListen(path, opts.backlog ?? 16);
  if (opts.mode !== undefined) {
    try {
      chmodSync(path, opts.mode);
    } catch (err) {
      native.closeFd(fd);
      throw err;
    }
  }
  return fd;
}

/**
 * Connects to a unix socket; returns the non-blocking connected fd. Throws an Error
 * with .code (ENOENT, ECONNREFUSED, EAGAIN when the backlog is full, EACCES, ...).
 */
export function connectUnix(path: string): number {
  return native.unixConnect(path);
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
