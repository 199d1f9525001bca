// Exactly one process runs a VF's queues at any instant: whoever runs them holds an OFD write
// lock on <run-dir>/locks/<dev>.lock. The kernel drops the lock with the holder's last fd, so a
// process killed with -9 releases it by dying, and the peer taking over waits for exactly that,
// or, when it knows the holder is exiting (mirror/process_exit.ts), runs at once and takes the lock
// once the kernel has finished the teardown.
import fs from "node:fs";
import path from "node:path";
import { native } from "@vhostd/native";

export class VfLock {
  private constructor(
    private fd: number,
    readonly path: string,
  ) {}

  static file(dir: string, dev: string): string {
    return path.join(dir, `${dev}.lock`);
  }

  /** The lock, or null while another process holds it. */
  static tryTake(dir: string, dev: string): VfLock | null {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const p = VfLock.file(dir, dev);
    const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600); // libuv opens close-on-exec
    try {
      if (native.ofdTryLock(fd)) return new VfLock(fd, p);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    fs.closeSync(fd);
    return null;
  }

  /**
   * Retries every `everyMs` until `timeoutMs` (a dying holder releases it while the kernel tears
   * it down). "holder-exiting" as soon as `holderExiting()` says the holder will never run user
   * code again: the lock then only waits for the kernel's teardown, which can take seconds.
   */
  static async take(dir: string, dev: string, timeoutMs: number, holderExiting?: () => boolean, everyMs = 1): Promise<VfLock | null | "holder-exiting"> {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const l = VfLock.tryTake(dir, dev);
      if (l) return l;
      if (holderExiting?.()) return "holder-exiting";
      if (performance.now() >= until) return null;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }

  release(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}
