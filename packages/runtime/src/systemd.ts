// systemd integration for both daemons (Type=notify units, see packaging/systemd/):
// readiness, status, stopping and the watchdog, over the native sd_notify (cc/sd_notify.cc).
//
// Every function is a no-op when the process was not started by systemd ($NOTIFY_SOCKET
// unset), so the daemons behave the same under scripts/start-pair.sh, tests and systemd.
// A failed notification is logged once per kind and never stops a daemon: systemd may be
// restarting, and the next watchdog tick retries.
import type { Logger } from "pino";
import { native } from "@vhostd/native";

type Env = NodeJS.ProcessEnv;

const warned = new Set<string>();

/** Sends one notification; false when there is no $NOTIFY_SOCKET or the send failed. */
export function sdNotify(state: string, log?: Logger): boolean {
  try {
    return native.sdNotify(state);
  } catch (e) {
    const kind = state.split("=", 1)[0] ?? state;
    if (!warned.has(kind)) {
      warned.add(kind);
      log?.warn({ event: "sd_notify_failed", state: kind, err: (e as Error).message }, `sd_notify ${kind} failed: ${(e as Error).message}`);
    }
    return false;
  }
}

/** One line for `systemctl status`: newlines would start a new assignment, so they go. */
function statusLine(status: string): string {
  return status.replace(/[\r\n]+/g, " ").slice(0, 1000);
}

/** READY=1 (with a STATUS= line): the service is up. Send it once, when it truly serves. */
export function notifyReady(status: string, log?: Logger): boolean {
  return sdNotify(`READY=1\nSTATUS=${statusLine(status)}`, log);
}

/** STATUS=...: free text shown by `systemctl status`. */
export function notifyStatus(status: string, log?: Logger): boolean {
  return sdNotify(`STATUS=${statusLine(status)}`, log);
}

/** STOPPING=1: the service begins its shutdown. */
export function notifyStopping(status = "stopping", log?: Logger): boolean {
  return sdNotify(`STOPPING=1\nSTATUS=${statusLine(status)}`, log);
}

/**
 * The watchdog period systemd asks for, in µs, or undefined when it asks nothing of this
 * process: $WATCHDOG_USEC unset/invalid, or $WATCHDOG_PID set to another process (a child
 * that inherited the environment must not ping for its parent). Same rules as
 * sd_watchdog_enabled(3).
 */
export function watchdogUsec(env: Env = process.env, pid = process.pid): number | undefined {
  const usec = env.WATCHDOG_USEC;
  if (!usec || !/^\d+$/.test(usec)) return undefined;
  const n = Number(usec);
  if (!Number.isSafeInteger(n) || n <= 0) return undefined;
  const wpid = env.WATCHDOG_PID;
  if (wpid !== undefined && wpid !== "" && wpid !== String(pid)) return undefined;
  return n;
}

export interface Watchdog {
  /** Milliseconds between pings (half of WatchdogSec), or 0 when no watchdog is asked for. */
  readonly intervalMs: number;
  /** Pings sent so far. */
  readonly pings: number;
  stop(): void;
}

/**
 * Pings WATCHDOG=1 every half period from a timer on the event loop. A timer that fires is the
 * evidence that the loop is alive: a loop stuck in a busy handler, a native call or a dead lock
 * never runs it, systemd stops hearing from us and kills and restarts the service
 * (WatchdogSec=). The timer does not keep the process alive (unref), and a timer that fires
 * late still pings: the loop is healthy again, and the lateness is logged.
 */
export function startWatchdog(opts: { log?: Logger; env?: Env } = {}): Watchdog {
  const usec = watchdogUsec(opts.env ?? process.env);
  if (usec === undefined) return { intervalMs: 0, pings: 0, stop: () => undefined };
  const intervalMs = Math.max(1, Math.floor(usec / 2000));
  let pings = 0;
  let last = performance.now();
  const ping = () => {
    const now = performance.now();
    const late = now - last - intervalMs;
    last = now;
    if (late > intervalMs / 2)
      opts.log?.warn({ event: "event_loop_stalled", lateMs: Math.round(late), watchdogMs: usec / 1000 }, `the event loop was stalled for ${Math.round(late)} ms`);
    if (sdNotify("WATCHDOG=1", opts.log)) pings++;
  };
  ping(); // at once: the period starts from the exec, not from the first tick
  const timer = setInterval(ping, intervalMs);
  timer.unref();
  opts.log?.debug({ event: "watchdog_started", intervalMs, watchdogMs: usec / 1000 }, "systemd watchdog pings started");
  return {
    intervalMs,
    get pings() {
      return pings;
    },
    stop: () => clearInterval(timer),
  };
}
