// What the session knows about one virtqueue, and when it is ready to run.
import type { VringAddr } from "@vhostd/proto";
import { closeAll } from "./connection.js";

export const MAX_RING_SIZE = 32768;

export class Vring {
  /** SET_VRING_NUM; 0 until set. */
  num = 0;
  addr: VringAddr | null = null;
  /** SET_VRING_BASE, or the index the engine reported when it stopped the ring. */
  base = 0;
  /** -1 = none. Owned by the session. */
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  /** SET_VRING_KICK seen (possibly with NOFD = poll mode) since the ring last stopped. */
  kicked = false;
  /** SET_VRING_ENABLE; survives ring (re)configuration because QEMU sends it only once, early. */
  enabled = false;
  /** The engine is running this ring. */
  started = false;

  constructor(readonly index: number) {}

  get configured(): boolean {
    return this.num > 0 && this.addr !== null && this.kicked;
  }

  replaceFd(which: "kickFd" | "callFd" | "errFd", fd: number): void {
    if (this[which] >= 0 && this[which] !== fd) closeAll([this[which]]);
    this[which] = fd;
  }

  /** Forget everything (connection gone); closes the fds. */
  reset(): void {
    closeAll([this.kickFd, this.callFd, this.errFd]);
    this.kickFd = this.callFd = this.errFd = -1;
    this.num = 0;
    this.addr = null;
    this.base = 0;
    this.kicked = false;
    this.enabled = false;
    this.started = false;
  }
}
