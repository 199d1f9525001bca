// vfe-vhostd-ha, the keeper. (keeper.ts): it runs every VF's vhost-user session
// and the datapath engine for vfe-vhostd --ha, restores them from its replica journal before
// serving the sync socket, and outlives any vfe-vhostd crash. Without --ha, vfe-vhostd runs
// the datapath itself (standalone) and the keeper merely holds its place.
import fs from "node:fs";
import { parseArgs } from "node:util";
import { createLogger, isLogLevel, noteFatalException, notifyReady, notifyStopping, resolvePaths, startWatchdog } from "@vhostd/runtime";
import { Keeper } from "./keeper.js";

const { values } = parseArgs({
  options: {
    "run-dir": { type: "string" },
    "state-dir": { type: "string" },
    "log-level": { type: "string", default: "info" },
    version: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});

if (values.help) {
  console.log("usage: vfe-vhostd-ha [--run-dir DIR] [--state-dir DIR] [--log-level LEVEL] [--version]");
  process.exit(0);
}
const pkg = JSON.parse(fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
if (values.version) {
  console.log(`vfe-vhostd-ha ${pkg.version}`);
  process.exit(0);
}
const level = values["log-level"] ?? "info";
if (!isLogLevel(level)) {
  console.error(`unknown log level ${level}`);
  process.exit(2);
}

const paths = resolvePaths({ runDir: values["run-dir"], stateDir: values["state-dir"] });
const log = createLogger({ level, name: "vfe-vhostd-ha" });
fs.mkdirSync(paths.runDir, { recursive: true, mode: 0o700 });
fs.mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
const pidFile = paths.haPidFile;
let keeper: Keeper;
try {
  // Restores every VF from the replica journal before the sync socket is served.
  keeper = await Keeper.start({ runDir: paths.runDir, stateDir: paths.stateDir, log });
} catch (e) {
  log.fatal({ err: (e as Error).message }, "keeper failed to start");
  process.stderr.write(`vfe-vhostd-ha: ${(e as Error).message}\n`);
  process.exit(1);
}
fs.writeFileSync(pidFile, `${process.pid}\n`);
log.info({ version: pkg.version, runDir: paths.runDir, stateDir: paths.stateDir, ...keeper.list() }, "keeper up: it runs the VFs of vfe-vhostd --ha");
process.on("uncaughtException", (e) => {
  log.fatal({ err: e.stack ?? String(e) }, "uncaught exception");
  noteFatalException(e); // a crash of the VF being handled, if any (session/crash_ledger.ts in @vhostd/runtime)
  process.exit(1);
});

// systemd (Type=notify): the keeper is up once its pid file is written; pings while the loop runs.
const watchdog = startWatchdog({ log });
notifyReady(`keeper up, run dir ${paths.runDir}`, log);

const keepAlive = setInterval(() => {}, 1 << 30);
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => {
    clearInterval(keepAlive);
    notifyStopping("keeper stopping", log);
    watchdog.stop();
    try {
      if (fs.readFileSync(pidFile, "utf8").trim() === String(process.pid)) fs.unlinkSync(pidFile);
    } catch {
      // already gone
    }
    // With vfe-vhostd there, it takes every VF over in place (an upgrade or restart of the keeper
    // never disconnects a VM); exiting releases our locks and fds, which is its signal to go.
    if (keeper.handover()) {
      log.info({ signal: sig, event: "handover" }, "keeper stopped: vfe-vhostd runs the VFs until it is back");
      process.exit(0);
    }
    void keeper.stop().finally(() => {
      log.info({ signal: sig }, "keeper stopped");
      process.exit(0);
    });
  });
}
