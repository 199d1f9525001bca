// The migration drill's view of the network: iputils `ping -D` from the bridge's namespace to
// the guest, every reply time-stamped, so a hop's outage is measured where a peer on the
// network sees it (longest gap between replies, requests never answered), not where QEMU
// says it stopped the guest.
import { spawn, type ChildProcess } from "node:child_process";

export interface PingWindow {
  /** Echo requests sent in the window (by sequence number). */
  sent: number;
  lost: number;
  /** Longest time between two replies, from the last reply before the window to the first after it. */
  longestGapMs: number;
}

export class Pinger {
  private readonly proc: ChildProcess;
  /** Sequence number and host time (ms) of each reply, in arrival order. */
  readonly replies: Array<{ seq: number; atMs: number }> = [];
  private buf = "";
  private stderr = "";

  constructor(netns: string, target: string, readonly intervalMs: number) {
    const args = ["netns", "exec", netns, "ping", "-D", "-n", "-i", String(intervalMs / 1000), "-W", "1", target];
    this.proc = spawn("ip", args, { stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout!.setEncoding("utf8").on("data", (d: string) => this.onData(d));
    this.proc.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      // [1764876000.123456] 64 bytes from 10.0.9.2: icmp_seq=17 ttl=64 time=0.512 ms
      const m = /^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+) /.exec(line);
      if (m) this.replies.push({ seq: Number(m[2]), atMs: Number(m[1]) * 1000 });
    }
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get errors(): string {
    return this.stderr.trim();
  }

  lastReplyMs(): number {
    return this.replies.at(-1)?.atMs ?? NaN;
  }

  /**
   * What the network saw between two host times: requests sent (by the sequence numbers
   * replied to just before and at the end of the window), those of them never answered, and
   * the longest silence between replies.
   */
  window(fromMs: number, toMs: number): PingWindow {
    const before = this.replies.filter((r) => r.atMs < fromMs);
    const inside = this.replies.filter((r) => r.atMs >= fromMs && r.atMs <= toMs);
    const firstSeq = before.length ? Math.max(...before.map((r) => r.seq)) : (inside[0]?.seq ?? 0) - 1;
    const lastSeq = inside.length ? Math.max(...inside.map((r) => r.seq)) : firstSeq;
    const answered = new Set(inside.map((r) => r.seq));
    let lost = 0;
    for (let s = firstSeq + 1; s <= lastSeq; s++) if (!answered.has(s)) lost++;
    let longestGapMs = 0;
    let prev = before.at(-1)?.atMs ?? (Number.isFinite(fromMs) ? fromMs : (inside[0]?.atMs ?? toMs));
    for (const r of inside) {
      longestGapMs = Math.max(longestGapMs, r.atMs - prev);
      prev = r.atMs;
    }
    longestGapMs = Math.max(longestGapMs, toMs - prev);
    return { sent: Math.max(0, lastSeq - firstSeq), lost, longestGapMs: Math.round(longestGapMs) };
  }

  /** Totals since the start: requests up to the highest sequence replied to, and the unanswered ones. */
  totals(): PingWindow {
    if (!this.replies.length) return { sent: 0, lost: 0, longestGapMs: 0 };
    return this.window(-Infinity, this.lastReplyMs());
  }

  stop(): void {
    if (this.running) this.proc.kill("SIGINT");
  }

  kill(): void {
    if (this.running) this.proc.kill("SIGKILL");
  }
}
