// How a VF takes a vhost-user message off its connection so that it is handled exactly once,
// whichever instruction a SIGKILL lands on (docs/recovery.md, "Exactly once").
//
// Each message gets the next sequence number of its VF. With a standby (the HA mirror's
// holder) connected, the whole message is first copied off the socket without consuming it
// (MSG_PEEK, which also duplicates its fds) and announced to the standby; only once that
// announcement is in the mirror socket is the message consumed, through the VF's inbox slot
// (cc/inbox.cc). An adopter then knows, for the last message announced and not yet handled,
// whether it is still in the socket (read it from there) or was taken (handle the announced
// copy). Without a standby the message is still consumed through the slot, so the slot always
// names the last message taken.
import { native, type NativeInbox, type RecvResult } from "@vhostd/native";
import { MAX_FDS } from "@vhostd/proto";
import { closeAll } from "./connection.js";

/** What the intake needs from the HA mirror. */
export interface Announcer {
  /** A standby would hear an announcement now. */
  standby(): boolean;
  /** Tells the standby that message seq (bytes, fds: the caller's, duplicated by the kernel) is about to be taken. */
  announce(seq: number, bytes: Buffer, fds: readonly number[]): void;
  /** Calls fn once everything announced is in the mirror socket (at once, usually). */
  whenSent(fn: () => void): void;
}

export type Taken = RecvResult & { seq: number };

export class Intake {
  /** The last message taken off the connection (or begun in pieces). */
  private lastSeq: number;
  /** A message announced and not taken yet, waiting for its announcement to leave this process. */
  private announced = 0;
  private waiting = false;

  constructor(
    private readonly devId: number,
    private readonly inbox: NativeInbox | undefined,
    private readonly announcer: Announcer | undefined,
    lastSeq = 0,
  ) {
    this.lastSeq = lastSeq;
  }

  get seq(): number {
    return this.lastSeq;
  }

  /**
   * Takes the whole message of `len` bytes at the head of `fd` (the caller peeked it: one
   * recvmsg() returns it whole). "wait": its announcement is still queued in this process;
   * `resume` is called once it went. "pieces": the message cannot be taken in one piece after
   * all; read it with beginPiecewise(). null: nothing there (EAGAIN).
   */
  take(fd: number, len: number, resume: () => void): Taken | "wait" | "pieces" | null {
    const seq = this.lastSeq + 1;
    if (this.waiting) return "wait";
    if (this.announced !== seq && this.announcer?.standby()) {
      // One byte more than the message: Linux's MSG_PEEK on a stream socket, once it has the
      // bytes asked for, steps into the next message and hands over *its* fds (0 bytes from
      // it) when the peeked one has none. More than `len` bytes back means exactly that case:
      // the fds are the next message's, not this one's. A message with fds of its own stops
      // the peek at its end (len bytes).
      const peek = native.recvWithFds(fd, len + 1, MAX_FDS, true);
      if (!peek) return null;
      try {
        if (peek.data.length < len || peek.fdsTruncated) return "pieces";
        const own = peek.data.length === len ? peek.fds : [];
        this.announcer.announce(seq, peek.data.subarray(0, len), own);
      } finally {
        closeAll(peek.fds);
      }
      this.announced = seq;
      let sent = false;
      this.announcer.whenSent(() => {
        sent = true;
        if (!this.waiting) return;
        this.waiting = false;
        resume();
      });
      if (!sent) {
        this.waiting = true;
        return "wait";
      }
    }
    const r = this.inbox ? this.inbox.consume(this.devId, fd, len, seq, MAX_FDS) : native.recvWithFds(fd, len, MAX_FDS);
    if (!r) return null;
    this.lastSeq = seq;
    this.announced = 0;
    return { ...r, seq };
  }

  /** An adopted session continues after message seq. */
  restart(seq: number): void {
    this.lastSeq = seq;
    this.announced = 0;
    this.waiting = false;
  }

  /** A message is read in pieces from now on (its first bytes are queued): its seq. */
  beginPiecewise(): number {
    const seq = ++this.lastSeq;
    this.announced = 0;
    this.inbox?.beginPiecewise(this.devId, seq);
    return seq;
  }

  /** The connection ended: its slot names nothing any more. */
  clear(): void {
    this.announced = 0;
    this.waiting = false;
    this.inbox?.clear(this.devId);
  }
}
