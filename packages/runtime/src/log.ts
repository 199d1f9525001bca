// pino logging: JSON lines, or pretty (pino-pretty transport) when stdout is a terminal.
import { pino, type Logger, type LevelWithSilent } from "pino";

export const LOG_LEVELS: readonly LevelWithSilent[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export function isLogLevel(s: string): s is LevelWithSilent {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** Default: pretty iff stdout is a TTY. */
  pretty?: boolean;
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? "info";
  const pretty = opts.pretty ?? Boolean(process.stdout.isTTY);
  const base = { name: opts.name ?? "vfe-vhostd" };
  if (pretty) {
    return pino({
      level,
      base,
      transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" } },
    });
  }
  return pino({ level, base: { ...base, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
