// vfe-vhostd-ha, the keeper. This first version only holds its place in the pair: it runs,
// answers to its pid file and logs. State sync, fd keeping and hosting the engine come with
// issue 3; until then vfe-vhostd runs the datapath itself (standalone mode).
import fs from "node:fs";
import { parseArgs } from "node:util";
import { createLogger, isLogLevel, notifyReady, notifyStopping, resolvePaths, startWatchdog } from "@vhostd/vhostd";

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
fs.writeFileSync(pidFile, `${process.pid}\n`);
log.info(
  { version: pkg.version, runDir: paths.runDir, stateDir: paths.stateDir },
  "keeper up; it keeps no state or fds yet, so vfe-vhostd runs the datapath standalone",
);

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
    log.info({ signal: sig }, "keeper stopped");
    process.exit(0);
  });
}
