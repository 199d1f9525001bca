// `vfe-vhost-cli drill` (and `pnpm drill`): parse, run the fresh-pair, --target or --migrate drill, print,
// exit with the verdict. Loaded by the CLI on demand only (it pulls in the front-end driver and
// the keeper client, which the everyday verbs do not need).
import { PROG, UsageError, type GlobalOptions } from "../cli/args.js";
import { drillUsage, parseDrillArgs, type DrillOptions } from "./options.js";
import { runFresh } from "./fresh.js";
import { renderFreshTable, type FreshReport } from "./report.js";
import { renderTargetTable, runTarget, type TargetReport } from "./target.js";
import { renderMigrateTable, runMigrate, type MigrateReport } from "./migrate.js";

export const EXIT_KEPT = 0;
export const EXIT_BROKEN = 1;
export const EXIT_USAGE = 2;
export const EXIT_CANNOT_RUN = 3;
export const EXIT_INTERRUPTED = 130;

/**
 * Runs a drill. SIGINT/SIGTERM stop it: every child is terminated and the temporary directory
 * removed before the process exits with 130; a process exit by any other path kills whatever
 * is left synchronously.
 */
export async function runDrillCommand(argv: string[], global: GlobalOptions, out: (s: string) => void, err: (s: string) => void, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let o: DrillOptions;
  try {
    const p = parseDrillArgs(argv, env, global.runDir);
    if ("kind" in p) {
      out(p.text);
      return EXIT_KEPT;
    }
    o = p;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`${drillUsage()}\n${PROG} drill: error: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }

  let interrupted = false;
  let cleanup: (() => Promise<void>) | undefined;
  let cleanupNow: (() => void) | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    err(`drill: ${sig}: stopping, cleaning up\n`);
    void (cleanup ?? (async () => undefined))()
      .catch(() => cleanupNow?.())
      .finally(() => process.exit(EXIT_INTERRUPTED));
  };
  const onExit = () => cleanupNow?.();
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("exit", onExit);
  const hooks = {
    err,
    onCleanup: (fn: () => Promise<void>, now: () => void) => {
      cleanup = fn;
      cleanupNow = now;
    },
    interrupted: () => interrupted,
  };
  let report: FreshReport | TargetReport | MigrateReport;
  try {
    report = o.migrate ? await runMigrate(o, hooks) : o.target ? await runTarget(o, hooks) : await runFresh(o, hooks);
  } catch (e) {
    if (interrupted) await new Promise(() => undefined); // the signal handler exits
    err(`${PROG} drill: ${(e as Error).message}\n`);
    return EXIT_CANNOT_RUN;
  } finally {
    if (!interrupted) {
      await cleanup?.().catch((e) => err(`drill: cleanup: ${(e as Error).message}\n`));
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      process.off("exit", onExit);
    }
  }
  if (report.mode === "fresh" && report.dir) err(`drill: kept ${report.dir} (daemon logs: vfe-vhostd.log, vfe-vhostd-ha.log)\n`);
  if (report.mode === "migrate" && report.dirs) err(`drill: kept ${report.dirs.join(", ")} (guest logs, disk; each pair's daemon logs)\n`);
  // With --json the verdict is in the report; say it on stderr too, where an operator (and a
  // test that failed on the exit status) looks first.
  if (o.json && !report.ok && "broken" in report) err(`drill: BROKEN: ${(report.broken as string[]).join("; ")}\n`);
  if (o.json) out(JSON.stringify(report, null, 2) + "\n");
  else out(report.mode === "fresh" ? renderFreshTable(report) : report.mode === "migrate" ? renderMigrateTable(report) : renderTargetTable(report));
  return report.ok ? EXIT_KEPT : EXIT_BROKEN;
}
