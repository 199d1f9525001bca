// `vfe-vhost-cli drill` / `pnpm drill` options. Two modes: a fresh pair in a temporary run dir
// (the default), or --target VF against a running system. Parsed strictly: a typo must not
// turn into a drill of the wrong thing.
import { argTokens } from "../cli/argv.js";
import { normalizePciAddr } from "@vhostd/proto";
import { DEFAULT_RUN_DIR, ENV_RUN_DIR } from "@vhostd/runtime";
import { PROG, UsageError } from "../cli/args.js";

export const DRILL_VERB = "drill";
export const KILL_KINDS = ["vhostd", "keeper", "both", "mix", "none"] as const;
export type KillKind = (typeof KILL_KINDS)[number];
/** What one event kills (mix picks one of these per event). */
export type EventKind = Exclude<KillKind, "mix" | "none">;

export interface DrillOptions {
  kill: KillKind;
  events: number;
  seed: number;
  vfs: number;
  ratePps: number;
  frameSize: number;
  /** Random wait before each kill, in ms: uniform in [min, max]. */
  intervalMs: [number, number];
  json: boolean;
  /** Fresh pair: vfe-vhostd alone (no keeper). */
  standalone: boolean;
  /** Fresh pair: keep the temporary directory (logs) instead of removing it. */
  keep: boolean;
  /** Promise bound for the datapath pause of a keeper kill ("bounded in milliseconds"). */
  maxGapMs: number;
  /** --target mode: the VF to watch on a running system. */
  target?: string;
  runDir: string;
  /** --target mode: restart what was killed from its /proc/PID/cmdline (else wait for the supervisor). */
  restart: boolean;
  /** --target mode: how long to wait for the supervisor to bring a daemon back. */
  waitS: number;
  /** --migrate mode: a QEMU guest moved between two fresh pairs ("hosts") this many times. */
  migrate: boolean;
  hops: number;
  /** --migrate mode: where the guest image is built and kept. */
  guestDir?: string;
}

export function drillUsage(): string {
  return (
    `usage: ${PROG} drill [-h] [--kill {vhostd,keeper,both,mix}] [--events N] [--seed S] [--vfs K]\n` +
    `                     [--rate PPS] [--frame BYTES] [--interval-ms A-B] [--max-gap-ms MS]\n` +
    `                     [--standalone] [--keep] [--json]\n` +
    `       ${PROG} drill --target VF [--run-dir DIR] [--kill {vhostd,keeper,both,mix}] [--events N]\n` +
    `                     [--seed S] [--interval-ms A-B] [--restart] [--wait S] [--json]\n` +
    `       ${PROG} drill --migrate [--hops N] [--kill {vhostd,keeper,mix,none}] [--seed S]\n` +
    `                     [--max-gap-ms MS] [--guest-dir DIR] [--keep] [--json]`
  );
}

export function drillHelp(): string {
  return (
    [
      drillUsage(),
      "",
      "Crash-recovery drill: kills vfe-vhostd, the keeper (vfe-vhostd-ha) or both with SIGKILL at seeded",
      "random moments and measures, per event, what the front-ends saw: frames sent / received / lost /",
      "duplicated / corrupted, the longest datapath gap, the time until the control plane answers RPC",
      "again, front-end reconnects, and whether `vf -l` is unchanged. Each event is judged against the",
      "recovery promises (docs/recovery.md); the exit status says whether every promise was kept.",
      "",
      "Without --target it starts a FRESH pair (keeper, then vfe-vhostd --ha) in a temporary run and",
      "state dir, one net PF per pair of VFs, and drives numbered streams both ways through every pair",
      "with the project's front-end driver; it restarts what it killed at once (keeper first).",
      "With --target VF it drills a RUNNING system: kills the daemons by pid and measures RPC",
      "recovery and the VF's runtime counters (`vf -i`); it sends no traffic of its own.",
      "",
      "With --migrate it live-migrates a QEMU guest between two fresh pairs standing for two hosts",
      "(their net PFs' TAP uplinks bridged in a network namespace of the drill's own; both blk VFs",
      "on one disk file, as shared storage). The guest writes and verifies its disk the whole time",
      "while the host pings it every 20 ms; each hop reports QEMU's downtime, the longest ping gap",
      "and the pings lost. Hop 1 kills nothing; then the kills alternate between the source during",
      "pre-copy and the destination right after switch-over (--kill none: no kills). At the end",
      "every disk block is verified. Needs root, qemu-system-x86_64, ip and ping; the guest image",
      "(a Debian kernel and a busybox initramfs) is built on first use.",
      "",
      "optional arguments:",
      "  -h, --help             show this help message and exit",
      "  --kill WHAT            vhostd | keeper | both | mix (one of the three per event; default vhostd);",
      "                         --migrate: vhostd | keeper | mix | none",
      "  --events N             kill events (default 6)",
      "  --seed S               PRNG seed: the same seed replays the same kill moments (default 1)",
      "  --vfs K                VFs, an even number >= 2; one PF per pair (default 4)",
      "  --rate PPS             frames per second per direction and pair (default 5000)",
      "  --frame BYTES          Ethernet frame size, 60..9000 (default 512)",
      "  --interval-ms A-B      traffic time before each kill, uniform in [A, B] ms (default 200-1000)",
      "  --max-gap-ms MS        the bound of a keeper kill's datapath pause (default 250)",
      "  --standalone           drill vfe-vhostd without a keeper (only --kill vhostd)",
      "  --keep                 keep the temporary directory with the daemons' logs",
      "  --json                 print the report as JSON on stdout (progress still goes to stderr)",
      "  --target VF            drill the running system that serves this VF",
      `  --run-dir DIR          --target: the run dir (env ${ENV_RUN_DIR}, default ${DEFAULT_RUN_DIR})`,
      "  --restart              --target: restart a killed daemon from its /proc/PID/cmdline instead of",
      "                         waiting for its supervisor (systemd Restart=always)",
      "  --wait S               --target: seconds to wait for a daemon to come back (default 30)",
      "  --migrate              drill live migration between two fresh pairs (see above)",
      "  --hops N               --migrate: migrations, alternating A -> B and back (default 4)",
      "  --guest-dir DIR        --migrate: the guest image's directory (env VHOSTD_GUEST_DIR,",
      "                         default /var/cache/vhostd/guest)",
      "",
      "exit status: 0 every promise kept; 1 a promise was broken (the table says which); 2 usage error;",
      "             3 the drill could not run (set-up failed, target not found); 130 interrupted.",
    ].join("\n") + "\n"
  );
}

function intArg(v: string, name: string, lo: number, hi: number): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`${name}: expected an integer, got "${v}"`, DRILL_VERB);
  const n = Number(v);
  if (n < lo || n > hi) throw new UsageError(`${name}: ${n} is out of range ${lo}..${hi}`, DRILL_VERB);
  return n;
}

/** Parses what follows `drill`; runDir is the CLI's global --run-dir if one was given. */
export function parseDrillArgs(argv: string[], env: NodeJS.ProcessEnv, runDir?: string): DrillOptions | { kind: "help"; text: string } {
  const o: DrillOptions = {
    kill: "vhostd",
    events: 6,
    seed: 1,
    vfs: 4,
    ratePps: 5000,
    frameSize: 512,
    intervalMs: [200, 1000],
    json: false,
    standalone: false,
    keep: false,
    maxGapMs: 250,
    runDir: runDir ?? (env[ENV_RUN_DIR] || DEFAULT_RUN_DIR),
    restart: false,
    waitS: 30,
    migrate: false,
    hops: 4,
  };
  const seen = new Set<string>();
  for (const { name: tok, raw, value, flag } of argTokens(argv, (m) => new UsageError(m, DRILL_VERB))) {
    if (seen.has(tok) && tok !== "-h") throw new UsageError(`argument ${tok}: given twice`, DRILL_VERB);
    seen.add(tok);
    switch (tok) {
      case "-h":
      case "--help":
        return { kind: "help", text: drillHelp() };
      case "--kill": {
        const v = value();
        if (!(KILL_KINDS as readonly string[]).includes(v)) throw new UsageError(`--kill: invalid choice "${v}" (choose from ${KILL_KINDS.join(", ")})`, DRILL_VERB);
        o.kill = v as KillKind;
        break;
      }
      case "--events":
        o.events = intArg(value(), tok, 1, 10_000);
        break;
      case "--seed":
        o.seed = intArg(value(), tok, 0, 0xffffffff);
        break;
      case "--vfs":
        o.vfs = intArg(value(), tok, 2, 64);
        if (o.vfs % 2) throw new UsageError(`--vfs: must be even (VFs exchange streams in pairs), got ${o.vfs}`, DRILL_VERB);
        break;
      case "--rate":
        o.ratePps = intArg(value(), tok, 1, 10_000_000);
        break;
      case "--frame":
        o.frameSize = intArg(value(), tok, 60, 9000);
        break;
      case "--interval-ms": {
        const v = value();
        const m = /^(\d+)(?:-(\d+))?$/.exec(v);
        if (!m) throw new UsageError(`--interval-ms: expected A-B in ms (e.g. 200-1000), got "${v}"`, DRILL_VERB);
        const a = Number(m[1]);
        const b = m[2] === undefined ? a : Number(m[2]);
        if (a > b || b > 600_000) throw new UsageError(`--interval-ms: need A <= B <= 600000, got "${v}"`, DRILL_VERB);
        o.intervalMs = [a, b];
        break;
      }
      case "--max-gap-ms":
        o.maxGapMs = intArg(value(), tok, 1, 600_000);
        break;
      case "--standalone":
        flag();
        o.standalone = true;
        break;
      case "--keep":
        flag();
        o.keep = true;
        break;
      case "--json":
        flag();
        o.json = true;
        break;
      case "--target": {
        const v = value();
        const dev = normalizePciAddr(v);
        if (!dev) throw new UsageError(`--target: "${v}" is not a PCI address (domain:bus:slot.func)`, DRILL_VERB);
        o.target = dev;
        break;
      }
      case "--run-dir":
        o.runDir = value();
        break;
      case "--restart":
        flag();
        o.restart = true;
        break;
      case "--wait":
        o.waitS = intArg(value(), tok, 1, 3600);
        break;
      case "--migrate":
        flag();
        o.migrate = true;
        break;
      case "--hops":
        o.hops = intArg(value(), tok, 1, 100);
        break;
      case "--guest-dir":
        o.guestDir = value();
        break;
      default:
        throw new UsageError(`unrecognized argument: ${raw}`, DRILL_VERB);
    }
  }
  const fresh = ["--vfs", "--rate", "--frame", "--standalone", "--keep", "--max-gap-ms"].filter((f) => seen.has(f));
  const target = ["--run-dir", "--restart", "--wait"].filter((f) => seen.has(f));
  if (o.target && fresh.length) throw new UsageError(`${fresh.join(", ")}: not with --target (the running system's traffic is what it is)`, DRILL_VERB);
  if (!o.target && target.length) throw new UsageError(`${target.join(", ")}: only with --target`, DRILL_VERB);
  if (o.standalone && o.kill !== "vhostd") throw new UsageError(`--standalone: there is no keeper to kill (--kill ${o.kill})`, DRILL_VERB);
  const migrateOnly = ["--hops", "--guest-dir"].filter((f) => seen.has(f));
  if (!o.migrate && migrateOnly.length) throw new UsageError(`${migrateOnly.join(", ")}: only with --migrate`, DRILL_VERB);
  if (o.migrate) {
    const notMigrate = ["--target", "--events", "--vfs", "--rate", "--frame", "--interval-ms", "--standalone"].filter((f) => seen.has(f));
    if (notMigrate.length) throw new UsageError(`${notMigrate.join(", ")}: not with --migrate (one guest, its own pings and disk loop)`, DRILL_VERB);
    // Both daemons dead drops the sessions: QEMU cancels an outgoing migration when its back-end goes.
    if (o.kill === "both") throw new UsageError(`--kill both: not with --migrate (QEMU fails a migration whose back-end disconnects)`, DRILL_VERB);
  } else if (o.kill === "none") throw new UsageError(`--kill none: only with --migrate`, DRILL_VERB);
  return o;
}

/** mulberry32: a tiny seeded PRNG, so a drill can be replayed kill for kill. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
