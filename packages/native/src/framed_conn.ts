// One connected unix stream socket carrying length-prefixed frames with SCM_RIGHTS fds: the
// transport of the HA session mirror. Frame: u32 LE body
// length + body (the codec's); a frame that names `n` fds carries exactly that many, sent with
// its bytes in one sendmsg(). Reads never cross the end of the current frame, so fds land on the
// frame they were sent with. Everything received is hostile: a bad frame closes this connection
// and every fd that came with it; nothing else is disturbed.
import { SyncError } from "@vhostd/proto";
import { native, type RecvResult } from "./native.js";
import { OutgoingQueue } from "./send_queue.js";
import { closeFds } from "./unix_socket.js";

export interface FrameCodec<T> {
  /** For messages, e.g. "mirror". */
  name: string;
  encode(f: T): Buffer;
  /** Throws (SyncError) on anything it does not accept. */
  decode(body: Uint8Array): T;
  fdCount(f: T): number;
  describe(f: T): string;
  maxBytes: number;
  maxFds: number;
}

const HEADER_BYTES = 4;
/** Frames handled per readable event before yielding to the event loop. */
const MAX_FRAMES_PER_WAKE = 64;
/**
 * What may wait for a peer daemon that does not read: sends never wait (a stuck peer is its
 * heartbeat's business, not a reason to freeze every VF), but what they queue is bounded. A
 * full mirror of 512 VFs is ~1 MiB and ~5000 fds; queued fds are duplicates, so they count
 * against our own fd limit.
 */
const MAX_QUEUED_BYTES = 64 * 1024 * 1024;
const MAX_QUEUED_FDS = 16384;

export interface FrameEvents<T> {
  onFrame(frame: T, fds: number[]): void;
  onClose(reason: string, violation: boolean): void;
}

/** Framing and fd accounting for one connected socket (both ends use it). */
export class FramedFdConnection<T> {
  private watcher: InstanceType<typeof native.FdWatcher> | null;
  private header: Buffer = Buffer.alloc(0);
  private body: Buffer = Buffer.alloc(0);
  private bodyLen = -1;
  private fds: number[] = [];
  private closed = false;
  private readonly out: OutgoingQueue;

  constructor(
    readonly fd: number,
    private readonly codec: FrameCodec<T>,
    private events: FrameEvents<T>,
  ) {
    // Reading goes on while sends wait: both daemons send to each other, and a side that
    // stopped reading until its own sends went could deadlock with the other doing the same.
    this.out = new OutgoingQueue(fd, {
      maxBytes: MAX_QUEUED_BYTES,
      maxFds: MAX_QUEUED_FDS,
      onBlocked: (b) => {
        this.watcher?.setEvents(true, b);
        if (!b) this.runDrained();
      },
    });
    this.watcher = new native.FdWatcher(
      fd,
      () => this.onReadable(),
      () => this.onWritable(),
    );
  }

  /** Hands the connection to another owner (a take-back connection becomes the mirror). */
  setEvents(events: FrameEvents<T>): void {
    this.events = events;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /**
   * Sends one frame and its fds (the caller keeps its own), now or, when the peer's socket is
   * full, once it is writable again (never waiting; frames keep their order). Throws when closed,
   * and closes and throws when the socket fails or too much waits for a peer that does not read.
   */
  send(frame: T, fds: readonly number[] = []): void {
    if (this.closed) throw new Error(`${this.codec.name} connection is closed`);
    const want = this.codec.fdCount(frame);
    if (fds.length !== want) throw new Error(`frame ${this.codec.describe(frame)} names ${want} fds, ${fds.length} given`);
    const body = this.codec.encode(frame);
    const buf = Buffer.allocUnsafe(HEADER_BYTES + body.length);
    buf.writeUInt32LE(body.length, 0);
    body.copy(buf, HEADER_BYTES);
    try {
      this.out.push(buf, fds);
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, false);
      throw err;
    }
  }

  /** Bytes sent but still waiting for the peer to read them. */
  get queuedBytes(): number {
    return this.out.pendingBytes;
  }

  private drained: Array<() => void> = [];

  /** Calls `fn` once everything queued so far is in the socket (now, if nothing is), or the connection closed. */
  whenDrained(fn: () => void): void {
    if (this.closed || !this.out.blocked) fn();
    else this.drained.push(fn);
  }

  private runDrained(): void {
    const fns = this.drained;
    this.drained = [];
    for (const fn of fns) fn();
  }

  /**
   * Waits (blocking) up to timeoutMs until every queued frame went: for a graceful stop only,
   * when nothing else is served any more. False (and the connection closed) when it could not.
   */
  drainBlocking(timeoutMs: number): boolean {
    if (this.closed) return false;
    try {
      if (this.out.drainBlocking(timeoutMs)) return true;
      this.close(`peer did not read ${this.out.pendingBytes} queued bytes in ${timeoutMs} ms`, false);
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, false);
    }
    return false;
  }

  private onWritable(): void {
    if (this.closed) return;
    try {
      this.out.flush();
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, false);
    }
  }

  close(reason: string, violation: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    this.watcher = null;
    this.out.clear();
    closeFds(this.fds);
    this.fds = [];
    native.closeFd(this.fd);
    this.runDrained();
    this.events.onClose(reason, violation);
  }

  private onReadable(): void {
    let frames = 0;
    while (!this.closed && frames < MAX_FRAMES_PER_WAKE) {
      const need = this.bodyLen < 0 ? HEADER_BYTES - this.header.length : this.bodyLen - this.body.length;
      if (need === 0) {
        frames++;
        this.finishFrame();
        continue;
      }
      let r: RecvResult | null;
      try {
        r = native.recvWithFds(this.fd, need, this.codec.maxFds);
      } catch (err) {
        this.close(`recv failed: ${(err as Error).message}`, false);
        return;
      }
      if (r === null) return;
      this.fds.push(...r.fds);
      if (r.data.length === 0) {
        const partial = this.header.length > 0 || this.fds.length > 0 ? " in the middle of a frame" : "";
        this.close(`peer closed the connection${partial}`, partial !== "");
        return;
      }
      if (r.fdsTruncated || this.fds.length > this.codec.maxFds) {
        this.close(`a frame carried more than ${this.codec.maxFds} fds`, true);
        return;
      }
      if (this.bodyLen < 0) {
        this.header = Buffer.concat([this.header, r.data]);
        if (this.header.length === HEADER_BYTES) {
          const len = this.header.readUInt32LE(0);
          if (len === 0 || len > this.codec.maxBytes) {
            this.close(`frame length ${len} outside 1..${this.codec.maxBytes}`, true);
            return;
          }
          this.bodyLen = len;
        }
      } else {
        this.body = this.body.length === 0 ? r.data : Buffer.concat([this.body, r.data]);
      }
    }
    if (!this.closed) setImmediate(() => this.onReadable());
  }

  private finishFrame(): void {
    const body = this.body;
    const fds = this.fds;
    this.header = Buffer.alloc(0);
    this.body = Buffer.alloc(0);
    this.bodyLen = -1;
    this.fds = [];
    let frame: T;
    try {
      frame = this.codec.decode(body);
    } catch (err) {
      closeFds(fds);
      this.close(`bad frame: ${err instanceof SyncError ? err.message : String(err)}`, true);
      return;
    }
    const want = this.codec.fdCount(frame);
    if (fds.length !== want) {
      closeFds(fds);
      this.close(`fd count mismatch: ${this.codec.describe(frame)} frame names ${want} fds, ${fds.length} arrived`, true);
      return;
    }
    this.events.onFrame(frame, fds);
  }
}

