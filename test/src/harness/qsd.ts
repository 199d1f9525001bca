// qemu-storage-daemon exporting a raw file as vhost-user-blk: the reference blk back-end of the
// tests and benchmarks. Through the host page cache (cache.direct=off), like our blk VF
// without --direct, one request queue, qsd listening on the socket.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import { sleep } from "./wait.js";

export interface QsdOptions {
  disk: string;
  /** Where qsd listens; removed first if it exists. */
  socket: string;
  /** stdout and stderr of qsd are appended here. */
  logFile: string;
  /** taskset CPU list qsd (every thread) runs on; default: anywhere. */
  cpus?: string;
}

export class Qsd {
  private stopped = false;

  private constructor(
    readonly proc: ChildProcess,
    private readonly logFd: number,
  ) {}

  get pid(): number {
    return this.proc.pid!;
  }

  /** Starts qsd and resolves once its socket exists. */
  static async start(o: QsdOptions): Promise<Qsd> {
    fs.rmSync(o.socket, { force: true });
    const logFd = fs.openSync(o.logFile, "a");
    const args = [
      "--blockdev", `driver=file,node-name=f0,filename=${o.disk},cache.direct=off,aio=threads`,
      "--export", `type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=${o.socket},writable=on,num-queues=1`,
    ];
    // taskset execs qsd: same pid, and threads qsd creates inherit the mask.
    const proc = o.cpus === undefined ? spawn("qemu-storage-daemon", args, { stdio: ["ignore", logFd, logFd] }) : spawn("taskset", ["-c", o.cpus, "qemu-storage-daemon", ...args], { stdio: ["ignore", logFd, logFd] });
    const q = new Qsd(proc, logFd);
    try {
      for (let i = 0; i < 100 && !fs.existsSync(o.socket) && proc.exitCode === null; i++) await sleep(50);
      if (!fs.existsSync(o.socket)) throw new Error(`qemu-storage-daemon did not create its socket (log: ${o.logFile})`);
    } catch (e) {
      await q.stop();
      throw e;
    }
    return q;
  }

  /** SIGTERM and wait for the exit. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      await exited;
    }
    fs.closeSync(this.logFd);
  }
}
