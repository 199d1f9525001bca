// What one connection still has to send, for sockets the daemons must never wait on
// (vhost-user connections, the HA mirror): a send takes what the socket takes now
// and queues the rest, to be flushed when the socket is writable again. A message's fds ride
// on its first byte, so a message that went partly has no fds left to send, and one that did
// not go at all keeps duplicates of its fds: the caller's own may be closed or reused before
// the flush, and sending whatever fd number is open by then would hand a peer the wrong file.
import { native } from "./native.js";
import { closeFds } from "./unix_socket.js";

export interface OutgoingQueueOptions {
  /** Queued bytes beyond this make push() throw SendOverflow (the caller closes the connection). */
  maxBytes: number;
  /** Queued (duplicated) fds beyond this make push() throw SendOverflow. Default 1024. */
  maxFds?: number;
  /** The queue went from empty to not empty (true) or back (false): watch for writable, or stop. */
  onBlocked(blocked: boolean): void;
}

/** The peer does not read what is sent to it: more is waiting than the connection allows. */
export class SendOverflow extends Error {}

interface Pending {
  bytes: Buffer;
  /** Bytes of `bytes` already sent. */
  sent: number;
  /** Duplicates, ours, until the first byte goes. */
  fds: number[];
}

export class OutgoingQueue {
  private readonly queue: Pending[] = [];
  private bytes = 0;
  private fds = 0;
  /** When the queue last went from empty to not empty (performance.now()); -1 while empty. */
  blockedSince = -1;

  constructor(
    private readonly fd: number,
    private readonly opts: OutgoingQueueOptions,
  ) {}

  get blocked(): boolean {
    return this.queue.length > 0;
  }

  /** Bytes waiting. */
  get pendingBytes(): number {
    return this.bytes;
  }

  /**
   * Sends `bytes` with `fds` (the caller keeps its fds) or queues what the socket did not take.
   * Returns true when all of it went now. Throws the socket's error, or SendOverflow.
   */
  push(bytes: Buffer, fds: readonly number[] = []): boolean {
    if (bytes.length === 0) return true;
    let sent = 0;
    if (this.queue.length === 0) {
      sent = native.sendWithFds(this.fd, bytes, [...fds]);
      if (sent === bytes.length) return true;
    }
    const keep = sent === 0 ? fds.length : 0;
    if (this.bytes + bytes.length - sent > this.opts.maxBytes || this.fds + keep > (this.opts.maxFds ?? 1024))
      throw new SendOverflow(`${this.bytes + bytes.length - sent} bytes${this.fds + keep > 0 ? ` and ${this.fds + keep} fds` : ""} waiting for a peer that does not read`);
    const dups: number[] = [];
    try {
      if (sent === 0) for (const fd of fds) dups.push(native.dupFd(fd));
    } catch (err) {
      closeFds(dups);
      throw err;
    }
    this.queue.push({ bytes, sent, fds: dups });
    this.bytes += bytes.length - sent;
    this.fds += dups.length;
    if (this.queue.length === 1) {
      this.blockedSince = performance.now();
      this.opts.onBlocked(true);
    }
    return false;
  }

  /** Sends what the socket takes now (call when writable). True when nothing is left. Throws the socket's error. */
  flush(): boolean {
    while (this.queue.length > 0) {
      const p = this.queue[0]!;
      const n = native.sendWithFds(this.fd, p.sent === 0 ? p.bytes : p.bytes.subarray(p.sent), p.sent === 0 ? p.fds : []);
      if (n > 0 && p.sent === 0 && p.fds.length > 0) {
        closeFds(p.fds); // the peer has its own copies now
        this.fds -= p.fds.length;
        p.fds = [];
      }
      p.sent += n;
      this.bytes -= n;
      if (p.sent < p.bytes.length) return false;
      this.queue.shift();
    }
    this.blockedSince = -1;
    this.opts.onBlocked(false);
    return true;
  }

  /**
   * Waits (blocking the thread) until everything went, for up to timeoutMs: for a graceful
   * stop only, when the process has nothing else to serve. True when drained.
   */
  drainBlocking(timeoutMs: number): boolean {
    const deadline = performance.now() + timeoutMs;
    while (!this.flush()) {
      const left = Math.floor(deadline - performance.now());
      if (left <= 0 || !native.waitWritable(this.fd, left)) return false;
    }
    return true;
  }

  /** The bytes not sent yet (the rest of a message that went partly, then whole ones), and whether one went partly. */
  unsent(): { bytes: Buffer; partial: boolean } {
    const partial = this.queue.length > 0 && this.queue[0]!.sent > 0;
    return { bytes: Buffer.concat(this.queue.map((p) => p.bytes.subarray(p.sent))), partial };
  }

  /** Forgets everything queued (closing the duplicated fds). */
  clear(): void {
    for (const p of this.queue) closeFds(p.fds);
    this.queue.length = 0;
    this.bytes = 0;
    this.fds = 0;
    this.blockedSince = -1;
  }
}
