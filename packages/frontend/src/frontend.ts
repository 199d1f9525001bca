// The project's own vhost-user front-end: the VM (or DPDK virtio-user) side of the protocol
// over a unix socket, driving a native device (guest memory + rings + traffic thread): a
// virtio-net DriverDevice by default, or another kind through open() (blk_frontend.ts).
// Used by drills, benchmarks and tests; every message it sends is also available raw.
import {
  ConfigFlag,
  HEADER_SIZE,
  MESSAGES,
  MsgFlag,
  ProtocolFeature,
  Req,
  VirtioFeatureBit as F,
  bit,
  codec,
  decodeMessage,
  encodeMessage,
  hasFeature,
  requestName,
  type Header,
} from "@vhostd/proto";
import { native, sendAllBlocking } from "@vhostd/native";
import { frontendAddon, type NativeDriverDevice, type NativeDriverRings } from "./native.js";

export interface FrontendOptions {
  queuePairs?: number;
  queueSize?: number;
  memSize?: number;
  /** Virtio features we are willing to use; negotiated = offered & wanted. */
  wantFeatures?: bigint;
  /** Protocol features we are willing to use; negotiated = offered & wanted. */
  wantProtocolFeatures?: bigint;
  /** Our MAC (the default source of test frames); a random locally administered one by default. */
  mac?: string;
  /** connect(): retry for this long; listen(): wait this long for a back-end (default 5000). */
  connectTimeoutMs?: number;
  /** A request whose reply does not come within this time rejects (default 10000). */
  replyTimeoutMs?: number;
}

export const DEFAULT_WANT_FEATURES: bigint = [
  F.VERSION_1,
  F.NET_MRG_RXBUF,
  F.RING_EVENT_IDX,
  F.RING_INDIRECT_DESC,
  F.VHOST_USER_PROTOCOL_FEATURES,
  F.NET_MQ,
  F.NET_MAC,
  F.NET_STATUS,
  F.NET_MTU,
  F.NET_CTRL_VQ,
].reduce((m, b) => m | bit(b), 0n);

export const DEFAULT_WANT_PROTOCOL_FEATURES: bigint = [ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.STATUS].reduce(
  (m, b) => m | bit(b),
  0n,
);

/** What request() resolves with: the reply and any fds that came with it (now the caller's). */
export interface FrontendReply {
  header: Header;
  payload: Buffer;
  fds: number[];
}

interface Pending {
  request: number;
  resolve: (r: FrontendReply) => void;
  reject: (e: Error) => void;
  /** Rejected already (timeout): its reply is still consumed when it comes, then dropped. */
  settled: boolean;
  timer?: NodeJS.Timeout;
}

type Watcher = InstanceType<typeof native.FdWatcher>;

/** The device a FrontendDriver sets up: what the handshake must know beyond the options. */
export interface FrontendDevice<D extends NativeDriverRings> {
  device: D;
  /** Virtqueues to set up (net: 2 per queue pair). */
  queues: number;
  queueSize: number;
  /** GET_QUEUE_NUM must answer at least this (net: queue pairs); 0 = do not ask. */
  minQueueNum: number;
  /** Used when the options give no wantFeatures / wantProtocolFeatures. */
  wantFeatures: bigint;
  wantProtocolFeatures: bigint;
}

/** The virtio-net DriverDevice of the options (the default device). */
function netDevice(o: FrontendOptions): FrontendDevice<NativeDriverDevice> {
  const queuePairs = o.queuePairs ?? 1;
  const queueSize = o.queueSize ?? 256;
  return {
    device: new frontendAddon.DriverDevice({ queuePairs, queueSize, memSize: o.memSize }),
    queues: 2 * queuePairs,
    queueSize,
    minQueueNum: queuePairs > 1 ? queuePairs : 0,
    wantFeatures: DEFAULT_WANT_FEATURES,
    wantProtocolFeatures: DEFAULT_WANT_PROTOCOL_FEATURES,
  };
}

/** ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK */
const STATUS_DRIVER_OK = 0x1 | 0x2 | 0x8 | 0x4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function randomMac(): string {
  const b = [0x52, 0x54, 0x00, ...Array.from({ length: 3 }, () => Math.floor(Math.random() * 256))];
  return b.map((x) => x.toString(16).padStart(2, "0")).join(":");
}

function checkOptions(o: FrontendOptions): void {
  const int = (v: unknown, name: string, lo: number, hi: number) => {
    if (v === undefined) return;
    if (typeof v !== "number") throw new TypeError(`${name} must be a number`);
    if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${name} must be an integer in [${lo}, ${hi}]`);
  };
  int(o.queuePairs, "queuePairs", 1, 128);
  int(o.queueSize, "queueSize", 1, 32768);
  int(o.connectTimeoutMs, "connectTimeoutMs", 0, 3_600_000);
  int(o.replyTimeoutMs, "replyTimeoutMs", 1, 3_600_000);
  for (const k of ["wantFeatures", "wantProtocolFeatures"] as const) {
    if (o[k] !== undefined && typeof o[k] !== "bigint") throw new TypeError(`${k} must be a bigint`);
  }
  if (o.mac !== undefined && (typeof o.mac !== "string" || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(o.mac))) {
    throw new TypeError(`mac must look like 52:54:00:12:34:56`);
  }
}

export class FrontendDriver<D extends NativeDriverRings = NativeDriverDevice> {
  readonly device: D;
  readonly mac: string;
  /** net: queue pairs of the options (meaningless for other devices). */
  readonly queuePairs: number;
  /** Virtqueues set up by handshake(). */
  readonly queues: number;
  readonly queueSize: number;
  /** Negotiated virtio features (0 until handshake()). */
  features = 0n;
  /** Negotiated protocol features (0 until handshake()). */
  protocolFeatures = 0n;
  /** Features and protocol features the back-end offered at the last handshake. */
  offeredFeatures = 0n;
  offeredProtocolFeatures = 0n;

  private fd = -1;
  private listenFd = -1;
  private watcher: Watcher | undefined;
  private rxBuf: Buffer = Buffer.alloc(0);
  /** fds received, keyed by the stream offset of the chunk they came with. */
  private rxFds: { at: number; fds: number[] }[] = [];
  private rxConsumed = 0; // stream offset of rxBuf[0]
  private pending: Pending[] = [];
  private closedP!: Promise<void>;
  private resolveClosed!: () => void;
  private isClosed = true;
  private shutDown = false;

  private readonly spec: FrontendDevice<D>;

  private constructor(
    private readonly path: string,
    private readonly mode: "client" | "server",
    private readonly opts: FrontendOptions,
    makeDevice: (o: FrontendOptions) => FrontendDevice<D>,
  ) {
    checkOptions(opts);
    this.queuePairs = opts.queuePairs ?? 1;
    this.mac = (opts.mac ?? randomMac()).toLowerCase();
    this.spec = makeDevice(opts);
    this.device = this.spec.device;
    this.queues = this.spec.queues;
    this.queueSize = this.spec.queueSize;
    this.newConnectionState();
    this.resolveClosed(); // no connection yet
  }

  /** Client: connects to a back-end listening on path, retrying until connectTimeoutMs. */
  static connect(path: string, opts: FrontendOptions = {}): Promise<FrontendDriver> {
    return FrontendDriver.open(path, "client", opts, netDevice);
  }

  /** Server: listens on path and resolves once a back-end connected (like QEMU server=on). */
  static listen(path: string, opts: FrontendOptions = {}): Promise<FrontendDriver> {
    return FrontendDriver.open(path, "server", opts, netDevice);
  }

  /**
   * connect() (client) or listen() (server) with any device (blk_frontend.ts: a BlkDriver);
   * makeDevice runs once the options are checked, and close() closes the device it made.
   */
  static async open<D extends NativeDriverRings>(
    path: string,
    mode: "client" | "server",
    opts: FrontendOptions,
    makeDevice: (o: FrontendOptions) => FrontendDevice<D>,
  ): Promise<FrontendDriver<D>> {
    const f = new FrontendDriver<D>(path, mode, opts, makeDevice);
    try {
      if (mode === "server") f.listenFd = native.unixListen(path, 4);
      await f.reconnect();
    } catch (e) {
      f.close();
      throw e;
    }
    return f;
  }

  /** Resolves when the current connection ends (back-end closed it, or close()). */
  get closed(): Promise<void> {
    return this.closedP;
  }

  get connected(): boolean {
    return !this.isClosed;
  }

  /**
   * Drops the current connection (if any) and gets a new one: client mode connects again,
   * server mode waits for the back-end to connect again. Guest memory, rings and traffic
   * state survive; call handshake() afterwards (it restarts the rings at index 0).
   */
  async reconnect(): Promise<void> {
    if (this.shutDown) throw new Error("FrontendDriver is closed");
    this.dropConnection(new Error("reconnecting"));
    const timeout = this.opts.connectTimeoutMs ?? 5000;
    const fd = this.mode === "client" ? await this.connectRetry(timeout) : await this.acceptOne(timeout);
    if (this.shutDown) {
      native.closeFd(fd);
      throw new Error("FrontendDriver is closed");
    }
    this.fd = fd;
    this.newConnectionState();
    this.isClosed = false;
    this.watcher = new native.FdWatcher(fd, () => this.onReadable());
  }

  private async connectRetry(timeoutMs: number): Promise<number> {
    const t0 = Date.now();
    for (;;) {
      try {
        return native.unixConnect(this.path);
      } catch (e) {
        const code = (e as { code?: string }).code;
        const retry = code === "ENOENT" || code === "ECONNREFUSED" || code === "EAGAIN";
        if (!retry || Date.now() - t0 >= timeoutMs) throw e;
      }
      await sleep(20);
      if (this.shutDown) throw new Error("FrontendDriver is closed");
    }
  }

  private acceptOne(timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      let w: Watcher | undefined;
      const done = (err: Error | undefined, fd?: number) => {
        clearTimeout(timer);
        w?.stop();
        if (err) reject(err);
        else resolve(fd!);
      };
      const tryAccept = () => {
        try {
          if (this.shutDown || this.listenFd < 0) return done(new Error("FrontendDriver is closed"));
          const fd = native.unixAccept(this.listenFd);
          if (fd >= 0) done(undefined, fd);
        } catch (e) {
          done(e as Error);
        }
      };
      const timer = setTimeout(() => done(new Error(`no back-end connected to ${this.path} within ${timeoutMs} ms`)), timeoutMs);
      w = new native.FdWatcher(this.listenFd, tryAccept);
      tryAccept();
    });
  }

  private newConnectionState(): void {
    this.rxBuf = Buffer.alloc(0);
    this.rxFds = [];
    this.rxConsumed = 0;
    this.closedP = new Promise((r) => (this.resolveClosed = r));
  }

  /** Sends anything at all (hostile tests). Throws when not connected. */
  sendRaw(bytes: Buffer, fds: number[] = []): void {
    if (this.isClosed) throw new Error("FrontendDriver: not connected");
    // A tool, not a daemon: waiting (up to 1 s per stall) for the back-end to read is fine here.
    sendAllBlocking(this.fd, bytes, fds);
  }

  /**
   * Sends one request; resolves with the reply when the message has one (GET_* and
   * SET_LOG_BASE always, others when flags carries NEED_REPLY), else with undefined.
   */
  request(req: number, payload: Buffer = Buffer.alloc(0), fds: number[] = [], flags: number = MsgFlag.VERSION): Promise<FrontendReply | undefined> {
    const spec = MESSAGES.get(req);
    const hasReply = spec?.reply === "value" || (flags & MsgFlag.NEED_REPLY) !== 0;
    let bytes: Buffer;
    try {
      bytes = encodeMessage(req, payload, flags);
      this.sendRaw(bytes, fds);
    } catch (e) {
      return Promise.reject(e);
    }
    if (!hasReply) return Promise.resolve(undefined);
    return new Promise<FrontendReply>((resolve, reject) => {
      const p: Pending = { request: req, resolve, reject, settled: false };
      const ms = this.opts.replyTimeoutMs ?? 10_000;
      p.timer = setTimeout(() => {
        p.settled = true;
        reject(new Error(`${requestName(req)}: no reply within ${ms} ms`));
      }, ms);
      this.pending.push(p);
    });
  }

  /** GET_VRING_BASE: stops the queue in the back-end and returns its next avail index. */
  async getVringBase(queue: number): Promise<number> {
    const r = await this.request(Req.GET_VRING_BASE, codec.vringState.encode({ index: queue, num: 0 }));
    const st = codec.vringState.decode(r!.payload, "GET_VRING_BASE reply");
    if (st.index !== queue) throw new Error(`GET_VRING_BASE reply is for queue ${st.index}, asked ${queue}`);
    return st.num;
  }

  /** A set message, acknowledged when REPLY_ACK was negotiated; a non-zero ack rejects. */
  private async set(req: Req, payload?: Buffer, fds?: number[]): Promise<void> {
    const ack = (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
    const r = await this.request(req, payload, fds, MsgFlag.VERSION | (ack ? MsgFlag.NEED_REPLY : 0));
    if (!ack) return;
    const v = r!.payload.length === 8 ? r!.payload.readBigUInt64LE(0) : -1n;
    if (v !== 0n) throw new Error(`${requestName(req)} rejected by the back-end (ack ${v === -1n ? `of ${r!.payload.length} bytes` : v})`);
  }

  /** GET_CONFIG of [offset, offset+size) of the device config space (needs the CONFIG protocol feature). */
  async getConfig(offset: number, size: number): Promise<Buffer> {
    if (!hasFeature(this.protocolFeatures, ProtocolFeature.CONFIG)) throw new Error("GET_CONFIG needs the CONFIG protocol feature, not negotiated");
    const r = await this.request(Req.GET_CONFIG, codec.config.encode({ offset, size, flags: ConfigFlag.FRONTEND, data: Buffer.alloc(size) }));
    const c = codec.config.decode(r!.payload, "GET_CONFIG reply");
    if (c.offset !== offset || c.size !== size) throw new Error(`GET_CONFIG reply is for ${c.offset}+${c.size}, asked ${offset}+${size}`);
    return c.data;
  }

  private async getU64(req: Req): Promise<bigint> {
    const r = await this.request(req);
    return codec.u64.decode(r!.payload, `${requestName(req)} reply`);
  }

  /**
   * The first-connect sequence: SET_OWNER, GET_FEATURES, [GET_PROTOCOL_FEATURES,
   * SET_PROTOCOL_FEATURES, GET_QUEUE_NUM when MQ], SET_FEATURES, SET_MEM_TABLE, per queue
   * NUM/ADDR/BASE(0)/KICK/CALL, SET_VRING_ENABLE(1) per queue with PROTOCOL_FEATURES, and
   * SET_STATUS(DRIVER_OK) with STATUS. The device's rings are reset first (indices 0).
   */
  async handshake(): Promise<void> {
    this.protocolFeatures = 0n;
    this.features = 0n;
    await this.request(Req.SET_OWNER);
    const offered = await this.getU64(Req.GET_FEATURES);
    this.offeredFeatures = offered;
    const want = this.opts.wantFeatures ?? this.spec.wantFeatures;
    const features = offered & want;
    let pf = 0n;
    if (hasFeature(features, F.VHOST_USER_PROTOCOL_FEATURES)) {
      const offeredPf = await this.getU64(Req.GET_PROTOCOL_FEATURES);
      this.offeredProtocolFeatures = offeredPf;
      pf = offeredPf & (this.opts.wantProtocolFeatures ?? this.spec.wantProtocolFeatures);
      await this.request(Req.SET_PROTOCOL_FEATURES, codec.u64.encode(pf));
      this.protocolFeatures = pf; // REPLY_ACK applies from the next message on
    }
    const minQueueNum = this.spec.minQueueNum;
    if (minQueueNum > 0) {
      if (!hasFeature(pf, ProtocolFeature.MQ)) throw new Error(`${minQueueNum} queue pairs need the MQ protocol feature`);
      const n = await this.getU64(Req.GET_QUEUE_NUM);
      if (n < BigInt(minQueueNum)) throw new Error(`back-end offers ${n} queue pairs, ${minQueueNum} wanted`);
    }
    await this.set(Req.SET_FEATURES, codec.u64.encode(features));
    this.features = features;
    const d = this.device;
    d.resetRings(features);
    const region = { guestAddr: d.memAddr, size: BigInt(d.memSize), userAddr: d.memAddr, mmapOffset: 0n };
    await this.set(Req.SET_MEM_TABLE, codec.memTable.encode([region]), [d.memFd]);
    const nq = this.queues;
    for (let q = 0; q < nq; q++) {
      const r = d.ring(q);
      await this.set(Req.SET_VRING_NUM, codec.vringState.encode({ index: q, num: this.queueSize }));
      await this.set(Req.SET_VRING_ADDR, codec.vringAddr.encode({ index: q, flags: 0, desc: r.desc, used: r.used, avail: r.avail, log: 0n }));
      await this.set(Req.SET_VRING_BASE, codec.vringState.encode({ index: q, num: 0 }));
      await this.set(Req.SET_VRING_KICK, codec.vringFd.encode({ index: q, noFd: false }), [r.kickFd]);
      await this.set(Req.SET_VRING_CALL, codec.vringFd.encode({ index: q, noFd: false }), [r.callFd]);
    }
    if (hasFeature(features, F.VHOST_USER_PROTOCOL_FEATURES)) {
      for (let q = 0; q < nq; q++) await this.set(Req.SET_VRING_ENABLE, codec.vringState.encode({ index: q, num: 1 }));
    }
    if (hasFeature(pf, ProtocolFeature.STATUS)) await this.set(Req.SET_STATUS, codec.u64.encode(BigInt(STATUS_DRIVER_OK)));
  }

  /** Closes the socket (and the listening socket) and the device. Idempotent. */
  close(): void {
    if (this.shutDown) return;
    this.shutDown = true;
    this.dropConnection(new Error("FrontendDriver closed"));
    if (this.listenFd >= 0) {
      native.closeFd(this.listenFd);
      this.listenFd = -1;
    }
    this.device.close();
  }

  /* --------------------------------------------------------------------- receiving */

  private onReadable(): void {
    if (this.isClosed) return;
    for (;;) {
      let r;
      try {
        r = native.recvWithFds(this.fd, 65536, 16);
      } catch (e) {
        this.dropConnection(e as Error);
        return;
      }
      if (r === null) break;
      if (r.data.length === 0) {
        this.dropConnection(new Error("vhost-user connection closed by the back-end"));
        return;
      }
      if (r.fds.length) this.rxFds.push({ at: this.rxConsumed + this.rxBuf.length, fds: r.fds });
      this.rxBuf = this.rxBuf.length ? Buffer.concat([this.rxBuf, r.data]) : r.data;
    }
    this.parse();
  }

  private parse(): void {
    while (!this.isClosed) {
      let m;
      try {
        m = decodeMessage(this.rxBuf);
      } catch (e) {
        this.dropConnection(new Error(`bad message from the back-end: ${(e as Error).message}`));
        return;
      }
      if (!m) return;
      const len = HEADER_SIZE + m.header.size;
      const start = this.rxConsumed;
      const fds: number[] = [];
      while (this.rxFds.length && this.rxFds[0]!.at < start + len) fds.push(...this.rxFds.shift()!.fds);
      const payload = Buffer.from(m.payload);
      this.rxBuf = this.rxBuf.subarray(len);
      this.rxConsumed += len;
      this.onMessage({ header: m.header, payload, fds });
    }
  }

  private onMessage(msg: FrontendReply): void {
    if ((msg.header.flags & MsgFlag.REPLY) === 0) return closeAll(msg.fds); // requests come on the back-end channel, not here
    // A request that timed out may never be answered: skip such entries when this reply is not theirs.
    while (this.pending.length && this.pending[0]!.settled && this.pending[0]!.request !== msg.header.request) this.pending.shift();
    const p = this.pending.shift();
    if (!p) return closeAll(msg.fds); // nothing waits for it
    if (p.timer) clearTimeout(p.timer);
    if (p.settled) return closeAll(msg.fds); // the late reply of a timed-out request
    p.settled = true;
    if (msg.header.request !== p.request) {
      closeAll(msg.fds);
      p.reject(new Error(`${requestName(p.request)}: the back-end replied to ${requestName(msg.header.request)}`));
      return;
    }
    p.resolve(msg);
  }

  private dropConnection(err: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.watcher?.stop();
    this.watcher = undefined;
    try {
      native.closeFd(this.fd);
    } catch {
      // already gone
    }
    this.fd = -1;
    for (const e of this.rxFds) closeAll(e.fds);
    this.rxFds = [];
    const pend = this.pending;
    this.pending = [];
    for (const p of pend) {
      if (p.timer) clearTimeout(p.timer);
      if (!p.settled) {
        p.settled = true;
        p.reject(new Error(`${requestName(p.request)}: ${err.message}`));
      }
    }
    this.resolveClosed();
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      native.closeFd(fd);
    } catch {
      // not ours to worry about any more
    }
  }
}
