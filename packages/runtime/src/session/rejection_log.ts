// Rate limit for the log lines of refused vhost-user requests. A front-end with REPLY_ACK can
// send refused requests as fast as it likes and each costs it nothing (a nack, the session goes
// on), so without a limit one guest could fill the host's journal and drown every other VF's
// lines. Per session: the first refusal of each kind (request + reason, numbers stripped) is
// always logged, then at most `perWindow` lines per window; what is left out is counted and
// reported as one summary line at the end of the window.
import type { Logger } from "pino";

export interface RejectionLogOptions {
  /** Lines per window beyond the first of each kind (default 10). */
  perWindow?: number;
  /** Window length (default 1000 ms). */
  windowMs?: number;
}

/** Kinds remembered per session; past this every kind counts as seen (a bounded set). */
const MAX_KINDS = 256;

export class RejectionLog {
  private readonly kinds = new Set<string>();
  private windowStart = -Infinity;
  private logged = 0;
  private suppressed = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly perWindow: number;
  private readonly windowMs: number;

  constructor(
    private readonly log: Logger,
    private readonly vf: string,
    opts: RejectionLogOptions = {},
  ) {
    this.perWindow = opts.perWindow ?? 10;
    this.windowMs = opts.windowMs ?? 1000;
  }

  /** Logs one refusal (warn) unless the rate limit says to count it instead. */
  rejected(request: string, reason: string): void {
    const now = performance.now();
    if (now - this.windowStart >= this.windowMs) {
      this.flush();
      this.windowStart = now;
      this.logged = 0;
    }
    const kind = `${request}: ${reason.replace(/0x[0-9a-f]+|\d+/gi, "#")}`;
    const first = !this.kinds.has(kind) && this.kinds.size < MAX_KINDS;
    if (first) this.kinds.add(kind);
    if (first || this.logged < this.perWindow) {
      this.logged++;
      this.log.warn({ request, reason }, "vhost-user request rejected");
      return;
    }
    this.suppressed++;
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), Math.max(1, this.windowStart + this.windowMs - now));
      this.timer.unref();
    }
  }

  /** Writes the summary of what the window left out, if anything. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.suppressed === 0) return;
    const n = this.suppressed;
    this.suppressed = 0;
    this.log.warn({ suppressed: n, windowMs: this.windowMs }, `suppressed ${n} more rejections from VF ${this.vf}`);
  }
}
