// A connection's reply pipe (cc/reply_pipe.cc): replies are put in the pipe and spliced from
// there to the front-end's socket. The pipe's fds travel in the VF's HA record, so after a kill
// an adopter finds in it exactly the bytes the front-end was not sent yet.
import { native } from "@vhostd/native";
import { closeAll } from "./connection.js";

/** splice() moves at most this much per call; replies are far smaller. */
const SPLICE_MAX = 64 * 1024;

export class ReplyPipe {
  private closed = false;

  constructor(
    readonly read: number,
    readonly write: number,
  ) {}

  static create(): ReplyPipe {
    const [read, write] = native.pipe();
    return new ReplyPipe(read, write);
  }

  /** Puts one reply in the pipe, whole (a pipe write up to PIPE_BUF is atomic). */
  put(bytes: Buffer): void {
    native.pipeWrite(this.write, bytes);
  }

  /** Bytes in the pipe, not sent yet. */
  get pending(): number {
    return native.queuedBytes(this.read);
  }

  /** Moves to `socket` what it takes now; true once the pipe is empty. Throws when the socket is gone. */
  flushTo(socket: number): boolean {
    while (native.spliceOut(this.read, socket, SPLICE_MAX) > 0);
    return this.pending === 0;
  }

  /** Drops what is in the pipe: a reply to a message whose handling did not count. Returns its length. */
  discard(): number {
    return native.pipeDiscard(this.read);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeAll([this.read, this.write]);
  }
}
