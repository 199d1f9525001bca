// vfe-vhostd entry point (bin/vfe-vhostd.js imports this).
import { argTokens } from "./cli/argv.js";
import { Daemon, daemonVersion, type DaemonOptions } from "./daemon.js";
import { DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, ENV_RUN_DIR, ENV_STATE_DIR, isLogLevel, LOG_LEVELS, noteFatalException } from "@vhostd/runtime";

const USAGE = `usage: vfe-vhostd [-h] [--run-dir DIR] [--state-dir DIR] [--config FILE] [--server | --client]
                  [--iface PREFIX] [--ha | --standalone] [--metrics ADDR] [--log-level LEVEL] [--version]

vhost-user back-end daemon (vfe-vhostd compatible).

options:
  -h, --help         show this help message and exit
  --run-dir DIR      runtime directory: RPC socket vfe-vhostd.sock, pid file, default VF sockets
                     (env ${ENV_RUN_DIR}, default ${DEFAULT_RUN_DIR})
  --state-dir DIR    persistent state directory: the journal DIR/journal, from which every PF and VF
                     is restored at start (env ${ENV_STATE_DIR}, default ${DEFAULT_STATE_DIR})
  --config FILE      JSON inventory of PFs (default: the embedded inventory, see docs/cli.md)
  --server           new VFs default to server mode: vfe-vhostd listens on the VF socket
  --client           new VFs default to client mode: vfe-vhostd connects to the front-end (default)
  --iface PREFIX     default VF socket is PREFIX<DEVICE> (default <run-dir>/vf-)
  --ha               HA mode: the keeper vfe-vhostd-ha (same run dir) runs every VF's vhost-user
                     session and datapath, so vfe-vhostd can restart or die without a VM noticing
                     (env VHOSTD_HA=1)
  --standalone       run every VF in this process (default)
  --metrics ADDR     serve OpenMetrics text on GET /metrics: 127.0.0.1:PORT, [::1]:PORT,
                     localhost:PORT or unix:/path (off by default; env VHOSTD_METRICS)
  --log-level LEVEL  ${LOG_LEVELS.join("|")} (env VHOSTD_LOG_LEVEL, default info)
  --version          print the version and exit
`;

export function parseDaemonArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): DaemonOptions | "help" | "version" {
  const opts: DaemonOptions = {};
  if (env.VHOSTD_HA === "1" || env.VHOSTD_HA === "true") opts.ha = true;
  if (env.VHOSTD_METRICS) opts.metrics = env.VHOSTD_METRICS;
  const lvl = env.VHOSTD_LOG_LEVEL;
  if (lvl) {
    if (!isLogLevel(lvl)) throw new Error(`VHOSTD_LOG_LEVEL: unknown level "${lvl}"`);
    opts.logLevel = lvl;
  }
  for (const { name: a, value } of argTokens(argv, (m) => new Error(m))) {
    switch (a) {
      case "-h":
      case "--help":
        return "help";
      case "--version":
        return "version";
      case "--run-dir":
        opts.runDir = value();
        break;
      case "--state-dir":
        opts.stateDir = value();
        break;
      case "--config":
        opts.configFile = value();
        break;
      case "--server":
        opts.server = true;
        break;
      case "--client":
        opts.server = false;
        break;
      case "--iface":
        opts.iface = value();
        break;
      case "--ha":
        opts.ha = true;
        break;
      case "--standalone":
        opts.ha = false;
        break;
      case "--metrics":
        opts.metrics = value();
        break;
      case "--log-level": {
        const v = value();
        if (!isLogLevel(v)) throw new Error(`--log-level: unknown level "${v}" (${LOG_LEVELS.join("|")})`);
        opts.logLevel = v;
        break;
      }
      default:
        throw new Error(`unknown argument "${a}"`);
    }
  }
  return opts;
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseDaemonArgs>;
  try {
    parsed = parseDaemonArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`vfe-vhostd: ${(e as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  if (parsed === "help") {
    process.stdout.write(USAGE);
    return;
  }
  if (parsed === "version") {
    const v = daemonVersion();
    process.stdout.write(`${v.version} (built ${v.buildTime})\n`);
    return;
  }
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(parsed);
  } catch (e) {
    process.stderr.write(`vfe-vhostd: ${(e as Error).message}\n`);
    process.exit(1);
  }
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) {
      daemon.log.warn({ signal: sig }, "second signal: exiting now");
      process.exit(1);
    }
    daemon.log.info({ signal: sig }, "signal received, shutting down");
    daemon.stop().then(
      () => process.exit(0),
      (e) => {
        daemon.log.error({ err: (e as Error).message }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.on("uncaughtException", (e) => {
    daemon.log.fatal({ err: e.stack ?? String(e) }, "uncaught exception");
    noteFatalException(e); // a crash of the VF being handled, if any (crash_ledger.ts)
    process.exit(1);
  });
  process.on("unhandledRejection", (e) => {
    daemon.log.fatal({ err: (e as Error)?.stack ?? String(e) }, "unhandled rejection");
    noteFatalException(e);
    process.exit(1);
  });
}

await main();
