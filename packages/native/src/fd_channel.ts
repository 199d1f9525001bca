// The HA fd channel: vfe-vhostd hands duplicates of the fds that keep a VM's I/O alive to the
// keeper, and fetches them back after a restart. ZeroMQ cannot carry fds, so this is a plain
// unix stream socket with SCM_RIGHTS at <run-dir>/ha-fds.sock (0600).
//
// Frame: u32 LE body length + msgpack body (FdFrame in @vhostd/proto); a frame that names
// `count` fds carries exactly that many, sent with its bytes in one sendmsg(). Reads never
// cross the end of the current frame, so fds land on the frame they were sent with (Linux
// hands over a sendmsg's fds with the first read that reaches its bytes and stops the read
// there). Everything received is hostile: a bad frame closes that connection and every fd
// that came with it; nothing else is disturbed.
import { EventEmitter } from "node:events";
import {
  FD_CHANNEL_MAX_FDS_PER_FRAME,
  FD_CHANNEL_MAX_FRAME_BYTES,
  FD_CHANNEL_MAX_IDS,
  decodeFdFrameBody,
  encodeFdFrameBody,
  fdFrameFdCount,
  type FdFrame,
} from "@vhostd/proto";
import { native, type PeerCred } from "./native.js";
import { closeFds, connectUnix, listenUnix } from "./unix_socket.js";
import { FramedFdConnection, type FrameCodec, type FrameEvents } from "./framed_conn.js";

/** The subset of a pino Logger this file uses (native does not depend on pino). */
export interface FdChannelLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}


/** Why a peer may not use the channel, or null when it may: only our own effective uid. */
export function checkPeerCred(cred: PeerCred, euid: number): string | null {
  if (cred.uid !== euid) return `peer uid ${cred.uid} (pid ${cred.pid}) is not our euid ${euid}`;
  return null;
}

/** The fd channel's frames on a FramedFdConnection. */
const FD_FRAME_CODEC: FrameCodec<FdFrame> = {
  name: "fd channel",
  encode: encodeFdFrameBody,
  decode: decodeFdFrameBody,
  fdCount: fdFrameFdCount,
  describe: (f) => f.op,
  maxBytes: FD_CHANNEL_MAX_FRAME_BYTES,
  maxFds: FD_CHANNEL_MAX_FDS_PER_FRAME,
};

class FrameConn extends FramedFdConnection<FdFrame> {
  constructor(fd: number, events: FrameEvents<FdFrame>) {
    super(fd, FD_FRAME_CODEC, events);
  }
}

/* ------------------------------------------------------------------------------ server */

export interface HeldFds {
  kind: string;
  fds: number[];
}

export interface FdChannelServerOptions {
  /** <run-dir>/ha-fds.sock */
  path: string;
  log: FdChannelLog;
  /** New fds for `id`; the receiver owns them from now on (store or close). Must not throw. */
  onFds(id: string, kind: string, fds: number[]): void;
  /** The fds held for an id, to send back (duplicated by the kernel; the holder keeps them). */
  getFds(id: string): HeldFds | undefined;
  /** The holder closes and forgets these ids. */
  onRelease?(ids: string[]): void;
  /** How many fds the holder holds now; with maxHeldFds, a put beyond the cap is refused. */
  heldFds?(): number;
  maxHeldFds?: number;
  /** Simultaneous connections (vhostd needs one; a restart briefly overlaps). Default 4. */
  maxConnections?: number;
  /** The uid a peer must have (default: our effective uid). */
  euid?: number;
}

/**
 * The keeper's end. Events: "peer" ({pid, uid}) when a connection is accepted, "closed"
 * ({pid, reason, violation}) when one ends.
 */
export class FdChannelServer extends EventEmitter {
  private listenFd = -1;
  private watcher: InstanceType<typeof native.FdWatcher> | null = null;
  private readonly conns = new Set<FrameConn>();
  private readonly opts: FdChannelServerOptions;

  constructor(opts: FdChannelServerOptions) {
    super();
    this.opts = opts;
  }

  get connections(): number {
    return this.conns.size;
  }

  listen(): void {
    if (this.listenFd >= 0) return;
    this.listenFd = listenUnix(this.opts.path, { mode: 0o600, backlog: 8 });
    this.watcher = new native.FdWatcher(this.listenFd, () => this.onAcceptable());
    this.opts.log.info({ path: this.opts.path }, "fd channel listening");
  }

  close(): void {
    for (const c of [...this.conns]) c.close("server closing", false);
    this.watcher?.stop();
    this.watcher = null;
    if (this.listenFd >= 0) native.closeFd(this.listenFd);
    this.listenFd = -1;
  }

  private onAcceptable(): void {
    for (;;) {
      let fd: number;
      try {
        fd = native.unixAccept(this.listenFd);
      } catch (err) {
        this.opts.log.warn({ err: (err as Error).message }, "fd channel accept failed");
        return;
      }
      if (fd < 0) return;
      this.admit(fd);
    }
  }

  private admit(fd: number): void {
    const { log } = this.opts;
    let cred: PeerCred;
    try {
      cred = native.peerCred(fd);
    } catch (err) {
      native.closeFd(fd);
      log.warn({ err: (err as Error).message }, "fd channel: peer credentials unavailable; connection closed");
      return;
    }
    const refusal = checkPeerCred(cred, this.opts.euid ?? process.geteuid!());
    if (refusal !== null) {
      native.closeFd(fd);
      log.warn({ pid: cred.pid, uid: cred.uid }, `fd channel: connection refused: ${refusal}`);
      return;
    }
    if (this.conns.size >= (this.opts.maxConnections ?? 4)) {
      native.closeFd(fd);
      log.warn({ pid: cred.pid }, "fd channel: connection refused: too many connections");
      return;
    }
    const conn: FrameConn = new FrameConn(fd, {
      onFrame: (frame, fds) => this.onFrame(conn, cred, frame, fds),
      onClose: (reason, violation) => {
        this.conns.delete(conn);
        (violation ? log.warn : log.info).call(log, { pid: cred.pid, violation }, `fd channel connection closed: ${reason}`);
        this.emit("closed", { pid: cred.pid, reason, violation });
      },
    });
    this.conns.add(conn);
    log.info({ pid: cred.pid, uid: cred.uid }, "fd channel peer connected");
    this.emit("peer", { pid: cred.pid, uid: cred.uid });
  }

  private onFrame(conn: FrameConn, cred: PeerCred, frame: FdFrame, fds: number[]): void {
    const { log } = this.opts;
    const reply = (f: FdFrame, withFds: number[] = []) => {
      try {
        conn.send(f, withFds);
      } catch {
        // the connection is closed and logged by FrameConn
      }
    };
    switch (frame.op) {
      case "put": {
        const cap = this.opts.maxHeldFds;
        const held = this.opts.heldFds?.() ?? 0;
        if (cap !== undefined && held + fds.length > cap) {
          closeFds(fds);
          log.warn({ pid: cred.pid, id: frame.id, held, cap }, "fd channel: put refused: the keeper holds too many fds");
          reply({ op: "error", req: frame.req, reason: `holding ${held} fds; ${fds.length} more exceed the cap of ${cap}` });
          return;
        }
        try {
          this.opts.onFds(frame.id, frame.kind, fds);
        } catch (err) {
          closeFds(fds); // the holder did not take them
          log.warn({ id: frame.id, err: (err as Error).message }, "fd channel: holder refused fds");
          reply({ op: "error", req: frame.req, reason: (err as Error).message.slice(0, 1000) });
          return;
        }
        log.debug({ id: frame.id, kind: frame.kind, count: fds.length }, "fd channel: fds received");
        reply({ op: "done", req: frame.req, missing: [] });
        return;
      }
      case "get": {
        const missing: string[] = [];
        for (const id of frame.ids) {
          const held = this.opts.getFds(id);
          if (!held || held.fds.length === 0 || held.fds.length > FD_CHANNEL_MAX_FDS_PER_FRAME) {
            missing.push(id);
            continue;
          }
          reply({ op: "fds", req: frame.req, id, kind: held.kind, count: held.fds.length }, held.fds);
          if (!conn.isOpen) return;
        }
        log.info({ pid: cred.pid, sent: frame.ids.length - missing.length, missing: missing.length }, "fd channel: fds sent back");
        reply({ op: "done", req: frame.req, missing });
        return;
      }
      case "del":
        this.opts.onRelease?.(frame.ids);
        reply({ op: "done", req: frame.req, missing: [] });
        return;
      default:
        // Answers are the keeper's to send, never to receive.
        closeFds(fds);
        conn.close(`unexpected ${frame.op} frame from the client`, true);
    }
  }
}

/** A plain holder for the server: id → fds, replaced entries and releases are closed. */
export class FdStore {
  private readonly map = new Map<string, HeldFds>();
  private total_ = 0;

  get total(): number {
    return this.total_;
  }
  get size(): number {
    return this.map.size;
  }
  ids(): string[] {
    return [...this.map.keys()];
  }
  put(id: string, kind: string, fds: number[]): void {
    this.delete(id);
    this.map.set(id, { kind, fds });
    this.total_ += fds.length;
  }
  get(id: string): HeldFds | undefined {
    return this.map.get(id);
  }
  delete(id: string): void {
    const old = this.map.get(id);
    if (!old) return;
    this.map.delete(id);
    this.total_ -= old.fds.length;
    closeFds(old.fds);
  }
  closeAll(): void {
    for (const id of [...this.map.keys()]) this.delete(id);
  }
  /** Wiring for FdChannelServerOptions. */
  serverHooks(): Pick<FdChannelServerOptions, "onFds" | "getFds" | "onRelease" | "heldFds"> {
    return {
      onFds: (id, kind, fds) => this.put(id, kind, fds),
      getFds: (id) => this.get(id),
      onRelease: (ids) => ids.forEach((id) => this.delete(id)),
      heldFds: () => this.total,
    };
  }
}

/* ------------------------------------------------------------------------------ client */

export interface FdChannelClientOptions {
  path: string;
  log: FdChannelLog;
  /** A request not answered in this time fails (and the connection is closed). Default 5000. */
  requestTimeoutMs?: number;
}

interface Pending {
  resolve(got: Map<string, HeldFds>): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  got: Map<string, HeldFds>;
}

/** vfe-vhostd's end. Event "closed" ({reason, violation}) when the connection ends. */
export class FdChannelClient extends EventEmitter {
  private conn: FrameConn | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextReq = 1;

  constructor(private readonly opts: FdChannelClientOptions) {
    super();
  }

  get connected(): boolean {
    return this.conn?.isOpen ?? false;
  }

  /** Connects (throws ENOENT/ECONNREFUSED when the keeper is not listening). */
  connect(): void {
    if (this.conn?.isOpen) return;
    const fd = connectUnix(this.opts.path);
    this.conn = new FrameConn(fd, {
      onFrame: (frame, fds) => this.onFrame(frame, fds),
      onClose: (reason, violation) => {
        (violation ? this.opts.log.warn : this.opts.log.info).call(this.opts.log, { violation }, `fd channel connection closed: ${reason}`);
        this.failAll(new Error(`fd channel closed: ${reason}`));
        this.emit("closed", { reason, violation });
      },
    });
    this.opts.log.info({ path: this.opts.path }, "fd channel connected");
  }

  /** Hands duplicates of `fds` to the keeper under `id`; resolves once the keeper holds them. */
  async sendFds(id: string, kind: string, fds: readonly number[]): Promise<void> {
    if (fds.length < 1 || fds.length > FD_CHANNEL_MAX_FDS_PER_FRAME)
      throw new RangeError(`sendFds: 1..${FD_CHANNEL_MAX_FDS_PER_FRAME} fds per id, got ${fds.length}`);
    await this.request((req) => ({ op: "put", req, id, kind, count: fds.length }), fds);
  }

  /** Fetches the fds of these ids back (restart case); ids the keeper lacks are absent from the map. */
  async requestFds(ids: readonly string[]): Promise<Map<string, HeldFds>> {
    const out = new Map<string, HeldFds>();
    for (let i = 0; i < ids.length; i += FD_CHANNEL_MAX_IDS) {
      try {
        const part = await this.request((req) => ({ op: "get", req, ids: ids.slice(i, i + FD_CHANNEL_MAX_IDS) }));
        for (const [k, v] of part) out.set(k, v);
      } catch (err) {
        for (const v of out.values()) closeFds(v.fds);
        throw err;
      }
    }
    return out;
  }

  /** The keeper closes and forgets these ids. */
  async releaseFds(ids: readonly string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += FD_CHANNEL_MAX_IDS)
      await this.request((req) => ({ op: "del", req, ids: ids.slice(i, i + FD_CHANNEL_MAX_IDS) }));
  }

  close(): void {
    this.conn?.close("client closing", false);
    this.conn = null;
  }

  private request(make: (req: number) => FdFrame, fds: readonly number[] = []): Promise<Map<string, HeldFds>> {
    const conn = this.conn;
    if (!conn?.isOpen) return Promise.reject(new Error("fd channel is not connected"));
    const req = this.nextReq;
    this.nextReq = this.nextReq >= 0xffffffff ? 1 : this.nextReq + 1;
    return new Promise((resolve, reject) => {
      const timeoutMs = this.opts.requestTimeoutMs ?? 5000;
      const timer = setTimeout(() => conn.close(`request ${req} not answered in ${timeoutMs} ms`, false), timeoutMs);
      this.pending.set(req, { resolve, reject, timer, got: new Map() });
      try {
        conn.send(make(req), fds);
      } catch (err) {
        const p = this.pending.get(req);
        if (p) {
          this.pending.delete(req);
          clearTimeout(timer);
          reject(err as Error);
        }
      }
    });
  }

  private onFrame(frame: FdFrame, fds: number[]): void {
    const conn = this.conn!;
    const p = this.pending.get(frame.req);
    if (!p || frame.op === "put" || frame.op === "get" || frame.op === "del") {
      closeFds(fds);
      conn.close(`unexpected ${frame.op} frame (request ${frame.req})`, true);
      return;
    }
    switch (frame.op) {
      case "fds":
        if (p.got.has(frame.id)) closeFds(p.got.get(frame.id)!.fds);
        p.got.set(frame.id, { kind: frame.kind, fds });
        return;
      case "done":
        this.pending.delete(frame.req);
        clearTimeout(p.timer);
        p.resolve(p.got);
        return;
      case "error":
        this.pending.delete(frame.req);
        clearTimeout(p.timer);
        for (const v of p.got.values()) closeFds(v.fds);
        this.opts.log.warn({ req: frame.req }, `fd channel request refused: ${frame.reason}`);
        p.reject(new Error(`keeper refused: ${frame.reason}`));
        return;
    }
  }

  private failAll(err: Error): void {
    for (const [req, p] of this.pending) {
      this.pending.delete(req);
      clearTimeout(p.timer);
      for (const v of p.got.values()) closeFds(v.fds);
      p.reject(err);
    }
  }
}
