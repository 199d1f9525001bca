// The keeper's half of the HA session mirror (see mirror_holder.ts).
//
// While we run the VFs, every change of a session (each vhost-user message handled, each
// connect and disconnect) is pushed to vfe-vhostd with duplicates of the fds it needs, so that
// if we die it adopts every session in place. At start, before opening anything, we ask
// vfe-vhostd to give back the sessions it took over while we were down; at a graceful stop we
// hand everything to it instead of closing the VMs' connections.
import type { Logger } from "pino";
import { FramedFdConnection, closeFds, connectUnix } from "@vhostd/native";
import type { MirrorFrame, MirrorVf } from "@vhostd/proto";
import { mirrorSocketPath } from "../paths.js";
import type { EngineVfHost, MirrorSink } from "../session/engine_vf_host.js";
import { MIRROR_CODEC } from "./mirror_codec.js";

export interface TakenBack {
  pfs: Array<{ dev: string; switchId: number; fd: number }>;
  vfs: Array<{ dev: string; rec: MirrorVf; fds: number[] }>;
}

const RECONNECT_MS = 50;
/** How long a graceful stop waits for vfe-vhostd to read the final records. */
const HANDOVER_DRAIN_MS = 2000;

export class MirrorSender implements MirrorSink {
  private conn: FramedFdConnection<MirrorFrame> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private host: EngineVfHost | undefined;
  /** The take-back connection between the offer and release(). */
  private pending: FramedFdConnection<MirrorFrame> | null = null;

  constructor(
    private readonly runDir: string,
    private readonly log: Logger,
  ) {}

  get connected(): boolean {
    return this.conn?.isOpen ?? false;
  }

  /**
   * Asks a running vfe-vhostd for the sessions it took over while we were down. Returns its
   * offer (records + fds, now ours; its rings still run) or an empty one when no vfe-vhostd
   * answers in time. Prepare everything, then call release() — the datapath pauses only from
   * there until our rings start.
   */
  async takeBack(timeoutMs: number): Promise<TakenBack> {
    const out: TakenBack = { pfs: [], vfs: [] };
    let fd: number;
    try {
      fd = connectUnix(mirrorSocketPath(this.runDir));
    } catch {
      return out; // no vfe-vhostd: nobody ran anything while we were down
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => conn.close(`no offer in ${timeoutMs} ms`, false), timeoutMs);
      const conn: FramedFdConnection<MirrorFrame> = new FramedFdConnection(fd, MIRROR_CODEC, {
        onFrame: (f, fds) => {
          if (f.op === "vf") out.vfs.push({ dev: f.dev, rec: f.rec, fds });
          else if (f.op === "pf") out.pfs.push({ dev: f.dev, switchId: f.switchId, fd: fds[0] ?? -1 });
          else if (f.op === "offered") {
            clearTimeout(timer);
            this.pending = conn;
            resolve();
          } else {
            closeFds(fds);
            conn.close(`unexpected ${f.op} frame from vfe-vhostd`, true);
          }
        },
        onClose: (reason) => {
          clearTimeout(timer);
          this.log.warn({ reason }, "HA mirror: take-back ended early");
          for (const v of out.vfs) closeFds(v.fds);
          for (const p of out.pfs) if (p.fd >= 0) closeFds([p.fd]);
          out.vfs.length = 0;
          out.pfs.length = 0;
          resolve();
        },
      });
      conn.send({ op: "take", req: 1 });
    });
    return out;
  }

  /**
   * The offer is prepared: vfe-vhostd stops its rings and drops its locks. Resolves true once it
   * has ("released"), false if it went away (then it keeps running them, or nobody does).
   */
  async release(timeoutMs: number): Promise<boolean> {
    const conn = this.pending;
    this.pending = null;
    if (!conn?.isOpen) return false;
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => conn.close(`no release in ${timeoutMs} ms`, false), timeoutMs);
      conn.setEvents({
        onFrame: (f, fds) => {
          closeFds(fds);
          clearTimeout(timer);
          if (f.op === "released") resolve(true);
          else {
            conn.close(`unexpected ${f.op} frame from vfe-vhostd`, true);
            resolve(false);
          }
        },
        onClose: () => {
          clearTimeout(timer);
          resolve(false);
        },
      });
      conn.send({ op: "ready", req: 1 });
    });
    if (ok) this.adoptConnection(conn);
    return ok;
  }

  /** From now on every change of `host` is mirrored; (re)connects whenever vfe-vhostd is reachable. */
  start(host: EngineVfHost): void {
    this.host = host;
    host.setMirror(this);
    if (this.conn?.isOpen) host.mirrorAll();
    else this.connect();
  }

  /**
   * Graceful stop: push the final state, stop our rings and drop our locks, and close the
   * connection, which is vfe-vhostd's signal to run every VF. False if it is not there.
   * Closing ourselves, not by exiting: a process's fds close only after the kernel has torn
   * its memory down, which can take seconds on a busy host.
   */
  handover(): boolean {
    if (!this.conn?.isOpen || !this.host) return false;
    const host = this.host;
    host.mirrorAll();
    this.conn.send({ op: "handover" });
    // Sends never wait, so the final records may still be queued: they must reach vfe-vhostd
    // before the connection closes (its EOF starts the takeover). The keeper is stopping and
    // serves nothing else now, so waiting here (bounded) costs no one.
    if (!this.conn.drainBlocking(HANDOVER_DRAIN_MS)) return false;
    host.setMirror(undefined); // stopping the rings must not reach vfe-vhostd as a state change
    host.stopAndUnlockAll();
    this.stopped = true;
    this.conn.close("keeper handed over", false);
    return true;
  }

  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.host?.setMirror(undefined);
    this.conn?.close("keeper stopping", false);
  }

  vf(dev: string, rec: MirrorVf, fds: number[]): void {
    this.send({ op: "vf", dev, rec, count: fds.length }, fds);
  }

  pf(dev: string, switchId: number, tapFd: number): void {
    this.send({ op: "pf", dev, switchId, count: tapFd >= 0 ? 1 : 0 }, tapFd >= 0 ? [tapFd] : []);
  }

  whenSent(fn: () => void): void {
    if (this.conn?.isOpen) this.conn.whenDrained(fn);
    else fn(); // no mirror now: the next connection starts with the whole state
  }

  msg(dev: string, seq: number, bytes: Buffer, fds: readonly number[]): void {
    this.send({ op: "msg", dev, seq, bytes: bytes.toString("hex"), count: fds.length }, [...fds]);
  }

  done(dev: string, seq: number): void {
    this.send({ op: "done", dev, seq });
  }

  replied(dev: string): void {
    this.send({ op: "replied", dev });
  }

  drop(dev: string): void {
    this.send({ op: "drop", dev });
  }

  private send(f: MirrorFrame, fds: number[] = []): void {
    if (!this.conn?.isOpen) return; // the next connection starts with the whole state
    try {
      this.conn.send(f, fds);
    } catch (e) {
      this.log.warn({ err: (e as Error).message, op: f.op }, "HA mirror: send failed");
    }
  }

  private adoptConnection(conn: FramedFdConnection<MirrorFrame>): void {
    this.conn = conn;
    // After the take-back the same connection carries the mirror; vfe-vhostd sends nothing more.
    conn.setEvents({
      onFrame: (f, fds) => {
        closeFds(fds);
        conn.close(`unexpected ${f.op} frame from vfe-vhostd`, true);
      },
      onClose: (reason) => this.lost(conn, reason),
    });
  }

  private connect(): void {
    if (this.stopped || this.conn?.isOpen) return;
    let fd: number;
    try {
      fd = connectUnix(mirrorSocketPath(this.runDir));
    } catch {
      this.timer = setTimeout(() => this.connect(), RECONNECT_MS);
      this.timer.unref();
      return;
    }
    const conn: FramedFdConnection<MirrorFrame> = new FramedFdConnection(fd, MIRROR_CODEC, {
      onFrame: (f, fds) => {
        closeFds(fds);
        conn.close(`unexpected ${f.op} frame from vfe-vhostd`, true);
      },
      onClose: (reason) => this.lost(conn, reason),
    });
    this.conn = conn;
    this.log.info({ event: "mirror_connected" }, "HA mirror: connected to vfe-vhostd; pushing every session");
    this.host?.mirrorAll();
  }

  private lost(conn: FramedFdConnection<MirrorFrame>, reason: string): void {
    if (this.conn !== conn) return;
    this.conn = null;
    if (this.stopped) return;
    this.log.info({ event: "mirror_lost", reason }, "HA mirror: vfe-vhostd gone; reconnecting");
    this.timer = setTimeout(() => this.connect(), RECONNECT_MS);
    this.timer.unref();
  }
}
