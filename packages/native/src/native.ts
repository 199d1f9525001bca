// Every symbol of the N-API module, declared once (the contract between C++ and TS). Helpers
// only tests use are another addon's, declared in testing.ts (@vhostd/native/testing).
// The C++ side lives in ../cc/, one file per concept; ../cc/addon.cc registers them all.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/* ---------------------------------------------------------------- sockets (cc/socket.cc) */

/** One recvmsg() worth of bytes and the fds that came with them. */
export interface RecvResult {
  /** Bytes read; empty means the peer closed the connection (EOF). */
  data: Buffer;
  /** File descriptors received with SCM_RIGHTS (now owned by the caller). */
  fds: number[];
  /** True when the peer sent more fds than maxFds (MSG_CTRUNC); the extras were closed. */
  fdsTruncated: boolean;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/* -------------------------------------------------------------- engine (cc/engine_*.cc) */

/** A guest memory region as vhost-user describes it, plus the fd that backs it. */
export interface MemRegion {
  /** fd to mmap(MAP_SHARED); the engine maps it and does not take ownership. */
  fd: number;
  guestAddr: bigint;
  size: bigint;
  /** The front-end's virtual address of the region (ring addresses are in this space). */
  userAddr: bigint;
  mmapOffset: bigint;
}

/** Everything needed to run one virtqueue (split ring). */
export interface QueueConfig {
  /** Ring size, a power of two from 1 to 32768. */
  size: number;
  /** Front-end virtual addresses, as SET_VRING_ADDR carries them. */
  descAddr: bigint;
  availAddr: bigint;
  usedAddr: bigint;
  /** The avail index to resume from (SET_VRING_BASE). */
  lastAvailIdx: number;
  /** Eventfd the front-end writes to kick; -1 means no kick fd (poll only). Not owned. */
  kickFd: number;
  /** Eventfd to signal used buffers; -1 means never signal. Not owned. */
  callFd: number;
  /** Eventfd to report a broken ring; -1 for none. Not owned. */
  errFd: number;
  /** VHOST_VRING_F_LOG: the used ring's guest-physical address for the dirty log. */
  logAddr?: bigint;
}

export interface NetDeviceOptions {
  /** The L2 switch (one per net PF) the device's port joins. */
  switchId: number;
  /** "52:54:00:12:34:56" */
  mac: string;
  mtu: number;
  /** Queue pairs the device offers (queue 2i is RX of pair i, 2i+1 its TX). */
  maxQueuePairs: number;
  /** HA takeover: continue the counters (and TX progress) the previous runner left in shared memory. */
  keepCounters?: boolean;
  /** Port security of the device's switch port (default: spoofchk on, untrusted, MAC not admin). */
  portSecurity?: PortSecurity;
}

/**
 * A VF port's security on its switch (cc/l2_switch.h). The port's MAC is `mac` of the device:
 * the operator's (adminMac) or its default, which the first source MAC the port sends replaces
 * (the port locks to it). Pinned MACs never move to another port.
 */
export interface PortSecurity {
  /** Drop frames whose source is not the port's MAC (default true). */
  spoofchk?: boolean;
  /** Any source MAC (spoofchk lifted) and a larger FDB share (default false). */
  trust?: boolean;
  /** The device's MAC was set by the operator: the port is locked to it from the start. */
  adminMac?: boolean;
  /** A lock learned earlier (e.g. by the engine of the process that ran the VF before); "" none. */
  lockedMac?: string;
  /** Post a "port-locked" event (reason: the MAC) when the port locks to a learned MAC. */
  reportLock?: boolean;
}

export interface PortState {
  spoofchk: boolean;
  trust: boolean;
  adminMac: boolean;
  mac: string;
  /** The MAC the port is locked to ("" while not yet locked). */
  lockedMac: string;
  /** FDB entries the port may own, and owns. */
  limit: number;
  learned: number;
}

/** A virtio-blk device (cc/blk_device.h): request queues 0..numQueues-1 on a backing fd. */
export interface BlkDeviceOptions {
  /** Backing file or block device, open read-write (or read-only with `readonly`); dup'ed, not owned. -1: null backing. */
  fd: number;
  /** Size of the null backing in bytes (fd -1). */
  nullBytes?: bigint | number;
  numQueues: number;
  /** Writes fail with VIRTIO_BLK_S_IOERR. */
  readonly?: boolean;
  /** Reads and writes through an O_DIRECT reopen of the backing (unaligned requests fall back to the page cache). */
  direct?: boolean;
  /** GET_ID answer, at most 20 bytes. */
  serial?: string;
  keepCounters?: boolean;
}

export interface BlkDeviceInfo {
  /** In 512-byte sectors (the backing's size rounded down). */
  capacity: bigint;
  logicalBlockSize: number;
  physicalBlockSize: number;
}

/** Something the datapath noticed that an operator must see (rate-limited by the engine). */
export interface EngineEvent {
  devId: number;
  /** Queue index, or -1 when the event is about the device or a switch. */
  queue: number;
  /** spoofed: frames dropped by port security (rate-limited); port-locked: the port locked to the MAC in `reason`. */
  kind: "ring-error" | "chain-error" | "queue-broken" | "tap-error" | "spoofed" | "port-locked";
  reason: string;
}

export interface EngineOptions {
  /** Datapath worker threads (default 1). Devices are spread over them. */
  workers?: number;
  /** Device ids range over [0, maxDevices) (default 1024). */
  maxDevices?: number;
  /** Busy-poll this long after the last work before sleeping on kick fds (default 200 µs). */
  pollUs?: number;
  /**
   * A file holding counters and TX progress records, shared by the processes that may run these
   * devices (grown to size; the engine maps it, the caller may close its fd). Default: private.
   */
  sharedFd?: number;
  /**
   * Crash attribution (cc/crash_attr.h): whose area of the shared file this engine's threads
   * write, 0 the keeper (vfe-vhostd-ha), 1 vfe-vhostd (default).
   */
  crashRole?: number;
}

/** A crash the fatal-signal handler of a daemon recorded before it died (NativeEngine.claimCrashes). */
export interface CrashRecord {
  /** The dead daemon: 0 the keeper, 1 vfe-vhostd. */
  role: number;
  pid: number;
  tid: number;
  /** The signal (0: an uncaught JS exception). */
  sig: number;
  code: number;
  /** The crashing thread's slot: 0 the JS thread, 1 + w worker w, -1 not one of ours. */
  slot: number;
  /** The device the thread was serving (-1: none) and the one it delivered frames to (-1: none). */
  serve: number;
  peer: number;
  /** The ledger's tags of those devices then (which VF used each device id). */
  serveTag: number;
  peerTag: number;
  atMs: number;
  jsException: boolean;
  /** A worker died running a command for the JS thread: `serve` is the JS thread's device. */
  command: boolean;
  /** Sent by another process (SIGABRT of systemd's watchdog): `serve` is the JS thread's device. */
  external: boolean;
}

export interface FdbEntry {
  mac: string;
  /** Device id behind the port, or -1 for the uplink. */
  devId: number;
  ageMs: number;
  /** A port's own MAC (admin or locked): never moves, never ages. */
  pinned: boolean;
}

export interface NativeEngine {
  addSwitch(switchId: number): void;
  removeSwitch(switchId: number): void;
  /** Attach a TAP fd (opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) as the uplink; -1 detaches. Not owned. */
  setSwitchUplink(switchId: number, tapFd: number): void;
  fdb(switchId: number): FdbEntry[];

  addNetDevice(devId: number, opts: NetDeviceOptions): void;
  /** Opens the backing's io_uring and sizes it; throws when io_uring or the backing is unusable. */
  addBlkDevice(devId: number, opts: BlkDeviceOptions): BlkDeviceInfo;
  /**
   * INFLIGHT_SHMFD: a blk device's inflight area (fd -1: none; the engine maps it). `fresh`: we
   * just created it (GET_INFLIGHT_FD); otherwise it is checked first. Returns, per queue, the
   * requests still marked in flight (the previous back-end took them and never completed them).
   */
  setBlkInflight(devId: number, area: { fd: number; size?: bigint; offset?: bigint; numQueues?: number; queueSize?: number; fresh?: boolean }): number[];
  /** CONFIG_WCE: write-back (default) or write-through (every write is made durable before it completes). */
  setBlkWriteback(devId: number, writeback: boolean): void;
  /** Stops every queue and unmaps the device's memory. */
  removeDevice(devId: number): void;
  /** The negotiated virtio features (decides header size, EVENT_IDX, MRG_RXBUF, offloads). */
  setFeatures(devId: number, features: bigint): void;
  /** Replaces the whole memory table; throws on overlapping or unmappable regions. */
  setMemTable(devId: number, regions: MemRegion[]): void;
  /** SET_LOG_BASE: `size` bytes of fd at `offset` become the device's dirty log (the engine maps it; fd -1: none). */
  setDirtyLog(devId: number, fd: number, size?: bigint, offset?: bigint): void;
  addMemRegion(devId: number, region: MemRegion): void;
  /** Removes the region with this guestAddr/size/userAddr (fd is ignored). */
  removeMemRegion(devId: number, region: MemRegion): void;
  /**
   * Starts (or restarts) a queue; throws with a reason when the ring does not fit guest memory.
   * Returns where it resumed and the used index guest memory held: when they differ from
   * cfg.lastAvailIdx, the ring overruled a stale base (we complete in order).
   */
  startQueue(devId: number, queue: number, cfg: QueueConfig): { resumedAt: number; usedInMemory: number };
  /** Stops a queue and returns its last avail index (GET_VRING_BASE); returns 0 if it never ran. */
  stopQueue(devId: number, queue: number): number;
  /** SET_VRING_ENABLE: a disabled queue is not processed, but keeps its configuration. */
  setQueueEnabled(devId: number, queue: number, enabled: boolean): void;
  /** Replace the call fd of a running or stopped queue (front-ends remask interrupts this way). */
  setQueueCall(devId: number, queue: number, callFd: number): void;
  /** Process every running queue of the device once and signal each call fd once (after a restart). */
  kickAll(devId: number): void;
  /** The next avail index a running queue will take (what it has processed up to); -1 when it does not run. */
  queueLastAvail(devId: number, queue: number): number;
  /** One used-buffer notification (call) on a running queue; nothing is processed. */
  signalQueue(devId: number, queue: number): void;
  /** One Ethernet frame (no virtio header) into the device's switch as if the device sent it; throws when port security would drop it. */
  injectFrame(devId: number, frame: Buffer): void;
  /** Changes a net device's port security (fields left out keep their value; a learned lock stays unless lockedMac is given). */
  setPortSecurity(devId: number, ps: PortSecurity): void;
  portState(devId: number): PortState;
  /** While held, workers run commands but poll no queue (an HA adoption starts every ring at once). */
  hold(on: boolean): void;
  /** Shared counter memory: see COUNTERS_PER_QUEUE / counterIndex() in index.ts. */
  readonly counters: BigUint64Array;
  /**
   * Crash attribution in the shared file (cc/crash_attr.h): `jsSlot[0]` = devId + 1 of the VF the
   * JS thread handles (0: none), a plain store per message; `ledger` = 4 u32 per device id
   * (tag, count, flags, lastAt), kept by session/crash_ledger.ts in @vhostd/vhostd.
   */
  readonly crash: { readonly jsSlot: Uint32Array; readonly ledger: Uint32Array; readonly role: number };
  /** Takes every crash record either daemon left in the shared file (each exactly once). */
  claimCrashes(): CrashRecord[];
  readonly maxDevices: number;
  readonly maxQueues: number;
  /** Stops every worker; the engine is unusable afterwards. */
  close(): void;
  /** Extra (engine): TAP uplink counters of a switch (drops on write EAGAIN, read errors). */
  uplinkStats(switchId: number): UplinkStats;
}

export interface UplinkStats {
  attached: boolean;
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  txDrops: number;
  rxErrors: number;
}

export interface InboxSlotState {
  /** The last message announced in the slot (0: none since the slot was cleared). */
  seq: number;
  len: number;
  /** The message left the socket (recvmsg() wrote its header into the slot). */
  consumed: boolean;
  /** It was being read in pieces outside the slot: how far is unknown. */
  multipart: boolean;
  bytes: Buffer;
}

export interface NativeInbox {
  /** One recvmsg() of up to len bytes into devId's slot, which then names message seq; null on EAGAIN. */
  consume(devId: number, fd: number, len: number, seq: number, maxFds: number): RecvResult | null;
  /** Message seq is about to be read in pieces, outside the slot. */
  beginPiecewise(devId: number, seq: number): void;
  state(devId: number): InboxSlotState;
  clear(devId: number): void;
  close(): void;
}

/* --------------------------------------------------------------------- the module itself */

export interface NativeModule {
  /**
   * Listens on a filesystem unix socket. With `mode` the socket file is created with exactly
   * that mode, and nothing at `path` is followed or replaced (EADDRINUSE): see BindWithMode in
   * cc/socket.cc for why not chmod or umask. Without, it gets what the umask leaves.
   */
  unixListen(path: string, backlog: number, mode?: number): number;
  unixConnect(path: string): number;
  /** Returns -1 when no connection is pending. */
  unixAccept(listenFd: number): number;
  /**
   * Returns null when nothing is available (EAGAIN). Throws an Error with .code on failure.
   * With `peek` (MSG_PEEK) nothing is consumed, but the fds are: the kernel installs
   * duplicates of them at every peek, which the caller must close.
   */
  recvWithFds(fd: number, maxBytes: number, maxFds: number, peek?: boolean): RecvResult | null;
  /** Copies up to maxBytes queued on a socket without consuming them (no fds); null on EAGAIN. */
  peekBytes(fd: number, maxBytes: number): Buffer | null;
  /**
   * Maps [offset, offset+size) of fd now and keeps it: the engine's next mapping of the same
   * file range (guest memory, dirty log, inflight area) takes it instead of calling mmap().
   * Returns an id for premapRelease; throws (with .errno) when it cannot map.
   */
  premapKeep(fd: number, offset: bigint | number, size: bigint | number): number;
  /** Unmaps a kept mapping the engine has not taken (a taken or unknown id is ignored). */
  premapRelease(id: number): void;
  /** Kept mappings not yet taken. */
  premapCount(): number;
  /** Takes an OFD write lock on the whole file (released with its last fd: close it to unlock); false if held elsewhere. */
  ofdTryLock(fd: number): boolean;
  /**
   * Sends what the socket takes now, never waiting: returns the bytes that went (0 when it is
   * full, and then the fds did not go either). The fds ride on the first byte. Throws on errors
   * other than EAGAIN. Queue the rest with OutgoingQueue (send_queue.ts); tools may use
   * sendAllBlocking (unix_socket.ts).
   */
  sendWithFds(fd: number, data: Buffer, fds: number[]): number;
  /** Waits up to timeoutMs for fd to be writable (or in error); false on timeout. Blocks: tools and graceful stops only. */
  waitWritable(fd: number, timeoutMs: number): boolean;
  socketPair(): [number, number];
  peerCred(fd: number): PeerCred;
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  eventFd(initial: number): number;
  /** Write 1 to an eventfd (ignored when its counter is saturated). */
  eventFdWrite(fd: number): void;
  /** Read and reset an eventfd; returns 0 when it was not signalled. */
  eventFdRead(fd: number): number;
  memfdCreate(name: string, size: number): number;
  /**
   * An uncaught exception is about to end the process: records it as a crash of `devId` (-1:
   * whatever device the JS thread's crash slot names) in every engine's shared file.
   */
  noteFatalException(devId: number): void;

  /**
   * One look at a process in /proc (cc/exit_probe.cc): "exiting" once every thread is on its
   * way out (PF_EXITING or zombie), "gone" when there is no such process, else "alive".
   */
  processFate(pid: number): "alive" | "exiting" | "gone";
  /**
   * A thread that makes the eventfd `fd` readable (watch it with FdWatcher) once
   * processFate(pid) is not "alive"; fate() tells which. With `beaconPath`, the live exit
   * beacon of pid (armExitBeacon), it sleeps until the kernel reports the beacon's owner dead
   * and only then reads /proc (mode "beacon"); otherwise, or when that file does not check out
   * (beaconError says why), it asks every intervalMs (mode "poll"). close() stops the thread
   * and closes the fds: stop the FdWatcher first.
   */
  ExitProbe: new (pid: number, intervalMs: number, beaconPath?: string) => {
    readonly fd: number;
    readonly mode: "beacon" | "poll";
    readonly beaconError: string;
    fate(): "alive" | "exiting" | "gone";
    close(): void;
  };
  /**
   * Publishes this process's exit beacon at `path` (cc/exit_beacon.h): a thread of ours owns
   * its robust futex until the process dies. Once per process; returns the owner's tid.
   */
  armExitBeacon(path: string): number;

  /**
   * Watches fd on the event loop: onReadable when readable (or hung up / in error), onWritable
   * (if given) when writable. Starts with readable interest only; setEvents() changes that.
   */
  FdWatcher: new (fd: number, onReadable: () => void, onWritable?: () => void) => {
    /** Which interests are on; writable needs onWritable. Both off: quiet until set again. */
    setEvents(readable: boolean, writable: boolean): void;
    stop(): void;
    ref(): void;
    unref(): void;
  };

  Engine: new (opts: EngineOptions, onEvent: (ev: EngineEvent) => void) => NativeEngine;

  /** Opens /dev/net/tun as a TAP (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) named `name`; returns the fd. */
  openTap(name: string): number;

  /* sd_notify (cc/sd_notify.cc) */
  /** Sends one sd_notify(3) datagram ("READY=1", "WATCHDOG=1", ...) to $NOTIFY_SOCKET (a path or
   *  an "@abstract" name) from this process; false when $NOTIFY_SOCKET is unset or empty. Throws
   *  (Error with .code) on a malformed $NOTIFY_SOCKET or a failed send (EAGAIN when full).
   *  `fds` ride on it (SCM_RIGHTS; the fd store: "FDSTORE=1\nFDNAME=..."); the caller keeps its own. */
  sdNotify(state: string, fds?: number[]): boolean;

  /**
   * The message inbox shared by both daemons (cc/inbox.cc): one slot per device id, through
   * which a vhost-user message is consumed, so that after a SIGKILL an adopter knows whether
   * the dead reader took the message it had announced off the socket.
   */
  Inbox: {
    new (path: string, maxDevices: number): NativeInbox;
    /** The longest message a slot takes (header included). */
    readonly MAX_MESSAGE: number;
  };

  /* the reply pipe (cc/reply_pipe.cc) */
  /** [readFd, writeFd], non-blocking, close-on-exec. */
  pipe(): [number, number];
  /** Writes all of bytes (1..PIPE_BUF, so atomically) or throws. */
  pipeWrite(fd: number, bytes: Buffer): void;
  /** splice() from a pipe to a socket: bytes moved, 0 when the socket is full or the pipe empty. */
  spliceOut(pipeFd: number, socketFd: number, max: number): number;
  /** FIONREAD: bytes queued in a pipe or a socket's receive queue. */
  queuedBytes(fd: number): number;
  /** Reads and drops whatever a pipe holds; returns how many bytes. */
  pipeDiscard(fd: number): number;

  /** Layout constants of the shared counter memory. */
  COUNTERS_PER_QUEUE: number;
  COUNTER_NAMES: string[];
  /** Port security counters: a second block after the first (see portCounterIndex()). */
  PORT_COUNTERS_PER_QUEUE: number;
  PORT_COUNTER_NAMES: string[];
}

// VHOSTD_NATIVE_ADDON: another build of the same addon, e.g. the ASan+UBSan one
// (scripts/build-asan.mjs, run by scripts/test-native-asan.sh at the root).
export const native: NativeModule = require(process.env.VHOSTD_NATIVE_ADDON || "../../build/Release/vhostd_native.node");
