// One vhost-user connection: turns a byte stream with SCM_RIGHTS fds into whole messages.
// Everything here is hostile input: sizes are capped, fds are counted and never leaked, and
// a framing violation ends this connection only.
import { native, OutgoingQueue, type RecvResult } from "@vhostd/native";
import type { Intake } from "./intake.js";
import type { ReplyPipe } from "./reply_pipe.js";
import { HEADER_SIZE, MAX_FDS, MAX_PAYLOAD, decodeHeader, encodeMessage, MsgFlag, type Header } from "@vhostd/proto";

export interface VhostMessage {
  /** Its sequence number on the VF (intake.ts). */
  seq: number;
  header: Header;
  payload: Buffer;
  /** Received fds: the message owns them until a handler take()s one; the rest are closed after it. */
  fds: MessageFds;
}

/**
 * The fds that came with one message. Ownership is explicit so a leak cannot depend on every
 * handler's error path: a handler peek()s at an fd while it checks or applies the message and
 * take()s the ones it keeps, only once it keeps them; whoever dispatched the message calls
 * closeUntaken() afterwards, whatever happened (success, rejection, violation, exception).
 */
export class MessageFds {
  private readonly taken: boolean[];
  private done = false;

  constructor(private readonly fds: readonly number[]) {
    this.taken = fds.map(() => false);
  }

  get length(): number {
    return this.fds.length;
  }

  /** The i-th fd, still the message's (valid until closeUntaken()). */
  peek(i: number): number {
    const fd = this.fds[i];
    if (fd === undefined || this.done) throw new RangeError(`message has no fd ${i}`);
    return fd;
  }

  /** The i-th fd, now the caller's to keep and close. */
  take(i: number): number {
    const fd = this.peek(i);
    if (this.taken[i]) throw new Error(`fd ${i} of the message was taken twice`);
    this.taken[i] = true;
    return fd;
  }

  /** Closes every fd no handler took; idempotent. Returns how many it closed. */
  closeUntaken(): number {
    if (this.done) return 0;
    this.done = true;
    const left = this.fds.filter((_, i) => !this.taken[i]);
    closeAll(left);
    return left.length;
  }
}

export interface ConnectionEvents {
  onMessage(msg: VhostMessage): void;
  /** The connection is gone (EOF, error or violation); reason is for the log. */
  onClose(reason: string, violation: boolean): void;
  /** Everything a send() queued has gone (the front-end read enough of its replies). */
  onDrained?(): void;
}

/** Messages handled per readable event before yielding, so one flood cannot starve other VFs. */
const MAX_MESSAGES_PER_WAKE = 64;

/**
 * How long a front-end may leave a reply unread once its socket is full. Sends never wait
 * (waiting would freeze every VF's control plane and the HA heartbeats), so a reply the socket
 * does not take is queued and reading stops until it went: a front-end that never reads cannot
 * make us hold more than one message's replies. QEMU and DPDK read every reply before their
 * next request; a front-end that left ~200 KiB of replies unread and still does not read after
 * this long is broken or hostile, and loses its session.
 */
export const REPLY_STALL_MS = 2000;
/** What one message's replies may come to (they are a few hundred bytes at most). */
const MAX_QUEUED_REPLY_BYTES = 256 * 1024;

export class VhostUserConnection {
  private watcher: InstanceType<typeof native.FdWatcher> | null;
  /** The bytes of the message being assembled (never more: see onReadable). */
  private buf: Buffer = Buffer.alloc(0);
  /** fds that arrived with the message being assembled. */
  private fds: number[] = [];
  /** The sequence number of the message being assembled (intake.ts). */
  private seq = 0;
  private closed = false;
  private readonly out: OutgoingQueue;
  private stallTimer: NodeJS.Timeout | null = null;

  /** The reply pipe still holds bytes the socket did not take. */
  private pipeBlocked = false;

  constructor(
    readonly fd: number,
    private readonly events: ConnectionEvents,
    private readonly intake: Intake,
    /** Replies without fds go through it (owned: closed with the connection, not at detach). */
    readonly pipe: ReplyPipe,
  ) {
    this.out = new OutgoingQueue(fd, { maxBytes: MAX_QUEUED_REPLY_BYTES, maxFds: 8, onBlocked: (b) => this.onBlocked(b) });
    this.watcher = new native.FdWatcher(
      fd,
      () => this.onReadable(),
      () => this.onWritable(),
    );
  }

  /** Replies wait for the front-end to read (queued, or left in the pipe). */
  private get sendBlocked(): boolean {
    return this.out.blocked || this.pipeBlocked;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Sends a reply to `request` carrying `payload`. */
  reply(request: number, payload: Buffer): void {
    this.send(encodeMessage(request, payload, MsgFlag.VERSION | MsgFlag.REPLY), []);
  }

  /**
   * Sends now what the socket takes and queues the rest (never waits). True when all of it
   * went; false when some waits for the front-end to read (onDrained follows) or the
   * connection closed.
   */
  send(bytes: Buffer, fds: number[]): boolean {
    if (this.closed) return false;
    try {
      return this.out.push(bytes, fds);
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, false);
      return false;
    }
  }

  /**
   * Sends what the reply pipe holds (the caller put a reply there); true when all of it went.
   * Otherwise reading stops until it did (onDrained follows), as for send().
   */
  sendPiped(): boolean {
    if (this.closed) return false;
    let empty: boolean;
    try {
      empty = this.pipe.flushTo(this.fd);
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, false);
      return false;
    }
    if (!empty && !this.pipeBlocked) {
      this.pipeBlocked = true;
      this.onBlocked(true);
    }
    return empty;
  }

  /**
   * Stops reading without closing the fd: it now belongs to the peer daemon's mirror copy.
   * Returns what a send() queued and never wrote (the new owner sends it), and whether part of it
   * had gone (replies are far smaller than what a unix socket takes in one piece, so in practice
   * a reply goes whole or not at all).
   */
  detach(): { bytes: Buffer; partial: boolean } {
    const unsent = this.out.unsent();
    this.stopReading();
    return unsent;
  }

  /** Reading paused by the owner (a reply waits for the HA mirror). */
  private held = false;

  /** Pauses (or resumes) reading messages, e.g. while a reply waits for something else. */
  holdReading(hold: boolean): void {
    if (this.closed || this.held === hold) return;
    this.held = hold;
    this.watcher?.setEvents(!hold && !this.sendBlocked && !this.intakeWait, this.sendBlocked);
    if (!hold && !this.sendBlocked) setImmediate(() => this.onReadable());
  }

  /** Socket full: stop reading (see REPLY_STALL_MS) and watch for writable; drained: read again. */
  private onBlocked(blocked: boolean): void {
    if (this.closed) return;
    if (!blocked && this.pipeBlocked) return; // the pipe still waits for the socket
    this.watcher?.setEvents(!blocked && !this.held && !this.intakeWait, blocked);
    if (blocked) {
      if (this.stallTimer) return; // already waiting (queue and pipe both blocked)
      this.stallTimer = setTimeout(() => {
        let waiting = this.out.pendingBytes;
        try {
          waiting += this.pipe.pending;
        } catch {
          /* closed */
        }
        this.close(`front-end did not read its replies for ${REPLY_STALL_MS} ms (its socket is full; ${waiting} bytes of replies wait)`, true);
      }, REPLY_STALL_MS);
      this.stallTimer.unref();
    } else if (this.stallTimer) {
      clearTimeout(this.stallTimer);
      this.stallTimer = null;
    }
  }

  private onWritable(): void {
    if (this.closed) return;
    let drained: boolean;
    try {
      drained = this.out.flush();
      if (this.pipeBlocked && this.pipe.flushTo(this.fd)) {
        this.pipeBlocked = false;
        if (!this.out.blocked) this.onBlocked(false);
      }
      drained = drained && !this.pipeBlocked;
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, false);
      return;
    }
    if (!drained) return;
    this.events.onDrained?.();
    // Messages that waited in the socket meanwhile (the watcher reads again from now on, but
    // only when new data arrives if the socket's state does not change).
    if (!this.closed) setImmediate(() => this.onReadable());
  }

  close(reason: string, violation: boolean): void {
    if (!this.stopReading()) return;
    native.closeFd(this.fd);
    this.pipe.close();
    this.intake.clear();
    this.events.onClose(reason, violation);
  }

  /** False when already stopped. Drops a half-assembled message and its fds. */
  private stopReading(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.watcher?.stop();
    this.watcher = null;
    this.out.clear();
    this.pipeBlocked = false;
    this.intakeWait = false;
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    closeAll(this.fds);
    this.fds = [];
    this.buf = Buffer.alloc(0);
    return true;
  }

  /**
   * Reads never cross the end of the message being assembled. Linux hands over SCM_RIGHTS fds
   * with the bytes of the sendmsg() that carried them, so fds received while assembling a
   * message belong to that message and to no other.
   */
  private onReadable(): void {
    let handled = 0;
    while (!this.closed && handled < MAX_MESSAGES_PER_WAKE) {
      if (this.sendBlocked || this.held || this.intakeWait) return; // replies wait: read on once they went
      let need = this.bytesNeeded();
      if (need < 0) return; // violation: already closed
      if (need === 0) {
        handled++;
        this.emit();
        continue;
      }
      let r: RecvResult | null;
      try {
        if (this.buf.length === 0) {
          // A message that is all there is taken in one piece, exactly once (intake.ts).
          const whole = this.wholeMessageBytes();
          const t = whole === undefined ? "pieces" : this.intake.take(this.fd, whole, () => this.resumeReading());
          if (t === "wait") {
            // Its announcement to the standby is still queued here: read on once it went.
            this.intakeWait = true;
            this.watcher?.setEvents(false, this.sendBlocked);
            return;
          }
          if (t === "pieces") {
            if (!this.anythingQueued()) return;
            this.seq = this.intake.beginPiecewise();
            r = native.recvWithFds(this.fd, need, MAX_FDS);
          } else {
            r = t;
            if (t) this.seq = t.seq;
          }
        } else r = native.recvWithFds(this.fd, need, MAX_FDS);
      } catch (err) {
        this.close(`recv failed: ${(err as Error).message}`, false);
        return;
      }
      if (r === null) return; // drained; the watcher fires again on new data
      if (r.data.length === 0) {
        closeAll(r.fds);
        const partial = this.buf.length > 0 ? ` with ${this.buf.length} bytes of an unfinished message` : "";
        this.close(`front-end closed the connection${partial}`, false);
        return;
      }
      this.fds.push(...r.fds);
      if (r.fdsTruncated || this.fds.length > MAX_FDS) {
        this.close(`message carried more than ${MAX_FDS} fds`, true);
        return;
      }
      this.buf = this.buf.length === 0 ? r.data : Buffer.concat([this.buf, r.data]);
    }
    // The flood cap was hit: continue on the next turn so other VFs get the event loop too.
    if (!this.closed && !this.sendBlocked && !this.held && !this.intakeWait) setImmediate(() => this.onReadable());
  }

  /** Reading waits for the intake (an announcement to the standby is queued). */
  private intakeWait = false;

  private resumeReading(): void {
    this.intakeWait = false;
    if (this.closed) return;
    this.watcher?.setEvents(!this.held && !this.sendBlocked, this.sendBlocked);
    setImmediate(() => this.onReadable());
  }

  /** Something is queued (or the peer hung up): a piecewise read will consume or report it. */
  private anythingQueued(): boolean {
    try {
      return native.peekBytes(this.fd, 1) !== null;
    } catch {
      return true; // the recvmsg() that follows reports the error
    }
  }

  /**
   * When a whole message is already queued, its size, so one recvmsg() consumes it with its
   * fds: a process killed between two reads would leave half a message on the connection, and
   * with HA the connection outlives the process that reads it (the peer process adopts it).
   * Undefined when the message has not fully arrived yet (then it is read piecewise).
   */
  private wholeMessageBytes(): number | undefined {
    try {
      const head = native.peekBytes(this.fd, HEADER_SIZE);
      if (!head || head.length < HEADER_SIZE) return undefined;
      const { size } = decodeHeader(head);
      if (size > MAX_PAYLOAD) return undefined; // the piecewise path reports the violation
      const whole = native.peekBytes(this.fd, HEADER_SIZE + size);
      return whole && whole.length === HEADER_SIZE + size ? whole.length : undefined;
    } catch {
      return undefined; // the recvmsg() that follows reports the error
    }
  }

  /** Bytes still missing from the current message; 0 when whole; -1 after a violation. */
  private bytesNeeded(): number {
    if (this.buf.length < HEADER_SIZE) return HEADER_SIZE - this.buf.length;
    const header = decodeHeader(this.buf);
    if ((header.flags & 0x3) !== 0x1) {
      this.close(`bad protocol version in flags 0x${header.flags.toString(16)} (request ${header.request})`, true);
      return -1;
    }
    if (header.size > MAX_PAYLOAD) {
      this.close(`payload of ${header.size} bytes exceeds the ${MAX_PAYLOAD}-byte limit (request ${header.request})`, true);
      return -1;
    }
    return HEADER_SIZE + header.size - this.buf.length;
  }

  private emit(): void {
    const header = decodeHeader(this.buf);
    const msg: VhostMessage = { seq: this.seq, header, payload: Buffer.from(this.buf.subarray(HEADER_SIZE)), fds: new MessageFds(this.fds) };
    this.buf = Buffer.alloc(0);
    this.fds = [];
    try {
      this.events.onMessage(msg);
    } finally {
      msg.fds.closeUntaken(); // the dispatcher did already; this covers a throwing listener
    }
  }
}

export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) {
    if (fd >= 0) {
      try {
        native.closeFd(fd);
      } catch {
        // already closed: nothing to release
      }
    }
  }
}
