// One vhost-user connection: turns a byte stream with SCM_RIGHTS fds into whole messages.
// Everything here is hostile input: sizes are capped, fds are counted and never leaked, and
// a framing violation ends this connection only.
import { native, type RecvResult } from "@vhostd/native";
import { HEADER_SIZE, MAX_FDS, MAX_PAYLOAD, decodeHeader, encodeMessage, MsgFlag, type Header } from "@vhostd/proto";

export interface VhostMessage {
  header: Header;
  payload: Buffer;
  /** Received fds; the handler owns them (store or close). */
  fds: number[];
}

export interface ConnectionEvents {
  onMessage(msg: VhostMessage): void;
  /** The connection is gone (EOF, error or violation); reason is for the log. */
  onClose(reason: string, violation: boolean): void;
}

/** Messages handled per readable event before yielding, so one flood cannot starve other VFs. */
const MAX_MESSAGES_PER_WAKE = 64;
const READ_CHUNK = 64 * 1024;

interface FdMark {
  /** Stream offset of the first byte that arrived with these fds. */
  pos: number;
  fds: number[];
}

export class VhostUserConnection {
  private watcher: InstanceType<typeof native.FdWatcher> | null;
  private buf: Buffer = Buffer.alloc(0);
  /** Stream offset of buf[0]. */
  private base = 0;
  private marks: FdMark[] = [];
  private closed = false;

  constructor(readonly fd: number, private readonly events: ConnectionEvents) {
    this.watcher = new native.FdWatcher(fd, () => this.onReadable());
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Sends a reply to `request` carrying `payload`. */
  reply(request: number, payload: Buffer): void {
    this.send(encodeMessage(request, payload, MsgFlag.VERSION | MsgFlag.REPLY), []);
  }

  send(bytes: Buffer, fds: number[]): void {
    if (this.closed) return;
    try {
      native.sendWithFds(this.fd, bytes, fds);
    } catch (err) {
      this.close(`send failed: ${(err as Error).message}`, false);
    }
  }

  close(reason: string, violation: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    this.watcher = null;
    for (const m of this.marks) closeAll(m.fds);
    this.marks = [];
    this.buf = Buffer.alloc(0);
    native.closeFd(this.fd);
    this.events.onClose(reason, violation);
  }

  private onReadable(): void {
    let handled = 0;
    while (!this.closed && handled < MAX_MESSAGES_PER_WAKE) {
      const msg = this.nextBuffered();
      if (msg) {
        handled++;
        this.events.onMessage(msg);
        continue;
      }
      if (this.closed) return;
      let r: RecvResult | null;
      try {
        r = native.recvWithFds(this.fd, READ_CHUNK, MAX_FDS);
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
      if (r.fdsTruncated) {
        closeAll(r.fds);
        this.close(`message carried more than ${MAX_FDS} fds`, true);
        return;
      }
      if (r.fds.length > 0) this.marks.push({ pos: this.base + this.buf.length, fds: r.fds });
      this.buf = this.buf.length === 0 ? r.data : Buffer.concat([this.buf, r.data]);
    }
    // More messages may be buffered: continue on the next turn without waiting for data.
    if (!this.closed && handled >= MAX_MESSAGES_PER_WAKE) setImmediate(() => this.onReadable());
  }

  /** Cuts one whole message from the buffer, or returns null (closing on a violation). */
  private nextBuffered(): VhostMessage | null {
    if (this.buf.length < HEADER_SIZE) return null;
    const header = decodeHeader(this.buf);
    if ((header.flags & 0x3) !== 0x1) {
      this.close(`bad protocol version in flags 0x${header.flags.toString(16)} (request ${header.request})`, true);
      return null;
    }
    if (header.size > MAX_PAYLOAD) {
      this.close(`payload of ${header.size} bytes exceeds the ${MAX_PAYLOAD}-byte limit (request ${header.request})`, true);
      return null;
    }
    const total = HEADER_SIZE + header.size;
    if (this.buf.length < total) return null;
    const payload = Buffer.from(this.buf.subarray(HEADER_SIZE, total));
    const start = this.base;
    const fds: number[] = [];
    while (this.marks.length > 0 && this.marks[0].pos < start + total) {
      fds.push(...this.marks.shift()!.fds);
    }
    this.buf = this.buf.subarray(total);
    this.base += total;
    if (fds.length > MAX_FDS) {
      closeAll(fds);
      this.close(`message carried ${fds.length} fds, more than ${MAX_FDS}`, true);
      return null;
    }
    return { header, payload, fds };
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
