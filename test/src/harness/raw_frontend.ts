// A deliberately dumb vhost-user front-end for hostile tests: sends whatever bytes and fds it
// is given and reports what came back (replies, or the back-end hanging up).
import { native, sendAllBlocking } from "@vhostd/native";
import { decodeHeader, encodeMessage, HEADER_SIZE, MsgFlag, codec, Req } from "@vhostd/proto";
import { sleep } from "./wait.js";

export class RawFrontend {
  private buf = Buffer.alloc(0);
  closedByPeer = false;

  private constructor(readonly fd: number) {}

  static async connect(path: string, timeoutMs = 5000): Promise<RawFrontend> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return new RawFrontend(native.unixConnect(path));
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(20);
      }
    }
  }

  send(bytes: Buffer, fds: number[] = []): void {
    sendAllBlocking(this.fd, bytes, fds);
  }

  msg(req: Req | number, payload: Buffer = Buffer.alloc(0), flags = MsgFlag.VERSION, fds: number[] = []): void {
    this.send(encodeMessage(req, payload, flags), fds);
  }

  /** Waits for one reply message, or for the back-end to hang up (returns null). */
  async reply(timeoutMs = 3000): Promise<{ request: number; payload: Buffer } | null> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.buf.length >= HEADER_SIZE) {
        const h = decodeHeader(this.buf);
        if (this.buf.length >= HEADER_SIZE + h.size) {
          const payload = this.buf.subarray(HEADER_SIZE, HEADER_SIZE + h.size);
          this.buf = this.buf.subarray(HEADER_SIZE + h.size);
          return { request: h.request, payload };
        }
      }
      if (this.closedByPeer) return null;
      let r;
      try {
        r = native.recvWithFds(this.fd, 65536, 8);
      } catch {
        this.closedByPeer = true;
        return null;
      }
      if (r === null) {
        await sleep(10);
        continue;
      }
      for (const fd of r.fds) native.closeFd(fd);
      if (r.data.length === 0) {
        this.closedByPeer = true;
        continue;
      }
      this.buf = Buffer.concat([this.buf, r.data]);
    }
    throw new Error(`no reply and no hang-up within ${timeoutMs} ms`);
  }

  /** True when the back-end closes the connection within the timeout. */
  async hungUp(timeoutMs = 3000): Promise<boolean> {
    for (;;) {
      const r = await this.reply(timeoutMs).catch(() => undefined);
      if (r === null) return true;
      if (r === undefined) return false;
    }
  }

  /**
   * Minimal negotiation so later messages are judged on their own merits. Generous: a server VF
   * serves one front-end at a time, and the previous one's teardown (unmapping its memory) can
   * take seconds on a loaded host before this connection is accepted.
   */
  async negotiate(features: bigint, protocolFeatures: bigint, timeoutMs = 10_000): Promise<void> {
    this.msg(Req.SET_OWNER);
    this.msg(Req.GET_FEATURES);
    await this.reply(timeoutMs);
    this.msg(Req.GET_PROTOCOL_FEATURES);
    await this.reply(timeoutMs);
    this.msg(Req.SET_PROTOCOL_FEATURES, codec.u64.encode(protocolFeatures));
    this.msg(Req.SET_FEATURES, codec.u64.encode(features));
  }

  close(): void {
    try {
      native.closeFd(this.fd);
    } catch {
      // already closed
    }
  }
}
