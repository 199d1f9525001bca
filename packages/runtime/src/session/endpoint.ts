// Getting a connected fd for a VF's vhost-user socket, in either direction:
// client mode connects to the front-end's listening socket and retries with a short capped
// backoff (so a restarted VM or testpmd is picked up quickly); server mode listens and takes
// one front-end at a time.
import fs from "node:fs";
import { native } from "@vhostd/native";

export type ConnectedHandler = (fd: number) => void;

export interface Endpoint {
  /** Begin (or resume, after a connection ended) getting a connection. */
  start(): void;
  /** Stop trying and release the listening socket, if any. */
  stop(): void;
  readonly description: string;
}

/** Backoff for client mode: quick first retries, capped well under a second. */
export const RETRY_MIN_MS = 10;
export const RETRY_MAX_MS = 250;

export class ClientEndpoint implements Endpoint {
  private timer: NodeJS.Timeout | null = null;
  private delay = RETRY_MIN_MS;
  private stopped = true;
  /** The last failure, so the log says once why we are waiting, not once per retry. */
  lastError = "";

  constructor(private readonly path: string, private readonly onConnected: ConnectedHandler) {}

  get description(): string {
    return `client of ${this.path}`;
  }

  start(): void {
    this.stopped = false;
    this.delay = RETRY_MIN_MS;
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.attempt(), ms);
    this.timer.unref?.();
  }

  private attempt(): void {
    this.timer = null;
    if (this.stopped) return;
    let fd: number;
    try {
      fd = native.unixConnect(this.path);
    } catch (err) {
      this.lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      this.schedule(this.delay);
      this.delay = Math.min(this.delay * 2, RETRY_MAX_MS);
      return;
    }
    this.lastError = "";
    this.onConnected(fd);
  }
}

export class ServerEndpoint implements Endpoint {
  private listenFd = -1;
  private watcher: InstanceType<typeof native.FdWatcher> | null = null;
  /** True while a front-end is connected: further connections wait in the backlog. */
  private busy = false;

  constructor(private readonly path: string, private readonly onConnected: ConnectedHandler) {}

  get description(): string {
    return `server on ${this.path}`;
  }

  start(): void {
    if (this.listenFd < 0) {
      // Created 0660 as it is bound: a chmod after bind would follow a symlink swapped in.
      this.listenFd = native.unixListen(this.path, 16, 0o660);
    }
    this.busy = false;
    // The watcher is level-triggered: watch only while free, or a waiting second front-end
    // would wake us in a loop.
    this.watcher ??= new native.FdWatcher(this.listenFd, () => this.accept());
    this.accept();
  }

  stop(): void {
    this.watcher?.stop();
    this.watcher = null;
    if (this.listenFd >= 0) {
      native.closeFd(this.listenFd);
      this.listenFd = -1;
      try {
        fs.unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }

  /** The listening fd (-1 when not listening), for the HA mirror. */
  get fd(): number {
    return this.listenFd;
  }

  /** Takes over a listening socket another daemon created; `busy` when a front-end is connected. */
  adopt(listenFd: number, busy: boolean): void {
    this.listenFd = listenFd;
    if (busy) this.busy = true;
    else this.start();
  }

  /** Stops watching without closing or unlinking: the socket now belongs to a mirror copy. */
  detach(): void {
    this.watcher?.stop();
    this.watcher = null;
    this.listenFd = -1;
  }

  private accept(): void {
    if (this.busy || this.listenFd < 0) return;
    const fd = native.unixAccept(this.listenFd);
    if (fd < 0) return;
    this.busy = true;
    this.watcher?.stop();
    this.watcher = null;
    this.onConnected(fd);
  }
}
