// QEMU guests for the e2e tests and the migration drill: a Debian kernel + busybox initramfs
// (guest/build.sh) whose /init (guest/init.sh) runs the tests named on the kernel command line
// and prints `VHOSTD-RESULT {json}` lines on the serial console, then powers off.
// The QEMU command line is the recipe measured in PEERS.md: TCG only (KVM cannot boot guests
// on the hosts we test on), shared memfd memory (vhost-user needs it), vectors=0 on
// virtio-net-pci (QEMU 7.2 + TCG + vhost-user-net + MSI-X segfaults), and guest memory locked
// (-overcommit mem-lock=on): on our test hosts (kernel 6.18, DAMON pageout) a live migration
// of a guest with shared memory loses guest writes unless its pages are locked, even with no
// vhost-user device at all (docs/recovery.md, "Drilling live migration"). And single-threaded
// TCG (`-accel tcg,thread=single`, free with one vCPU): a migration here still loses some of
// the guest CPU's writes when the host's CPUs are contended, even with QEMU alone; with the
// vCPU under QEMU's big lock the drill's guests crashed less (2 in 37 runs, about 1 in 8
// before), though QEMU alone under heavy contention still lost pages once.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait.js";

/** <vhostd package>/guest: build.sh and init.sh (shipped with the package, also when installed). */
const guestSources = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../guest");

export interface GuestNet {
  socket: string;
  /** true: QEMU listens (server=on,wait=off) and the back-end connects; false: QEMU connects. */
  server: boolean;
  mac?: string;
  queues?: number;
  /** Client sockets only: retry every second (QEMU `reconnect=1`). Defaults to GuestOptions.reconnect. */
  reconnect?: boolean;
}

export interface GuestBlk {
  socket: string;
  server?: boolean;
  numQueues?: number;
  reconnect?: boolean;
}

export interface GuestOptions {
  net?: GuestNet[];
  blk?: GuestBlk[];
  /** Test(s) for /init, comma-separated: ping, netinfo, blkinfo, blkverify, shell-cmd, none. */
  test: string;
  /** Extra kernel command line words for the tests, e.g. { ip: "10.0.0.2/24", peer: "10.0.0.1" }. */
  args?: Record<string, string | number>;
  memMb?: number;
  /** Serial console and QEMU's stderr are appended here. */
  logFile: string;
  reconnect?: boolean;
  /** Kills QEMU and fails wait() after this long (default 120 s). */
  timeoutMs?: number;
  qmpSocket?: string;
  /** Appended verbatim to QEMU's arguments (e.g. -trace ...). */
  qemuArgs?: string[];
  /** The image's directory (default guestDir()). */
  imageDir?: string;
}

export type GuestResultLine = Record<string, any> & { test: string; ok: boolean };

export interface GuestRun {
  results: GuestResultLine[];
  /** Serial console output, \r removed. */
  output: string;
  stderr: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Host-side ms from spawn to /init's VHOSTD-BOOTED line (NaN if never seen) and to exit. */
  bootMs: number;
  totalMs: number;
}

/** Where the image is built and looked for: VHOSTD_GUEST_DIR, else /var/cache/vhostd/guest. */
export function guestDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.VHOSTD_GUEST_DIR || "/var/cache/vhostd/guest";
}

const built = new Map<string, Promise<void>>();

/** Runs guest/build.sh once per process and directory; it is idempotent and cheap when up to
 *  date, and rebuilding is what picks up a changed init.sh. */
export function ensureGuestImage(dir = guestDir()): Promise<void> {
  let p = built.get(dir);
  if (!p) {
    p = new Promise((resolve, reject) => {
      execFile("bash", [path.join(guestSources, "build.sh"), dir], { timeout: 600_000 }, (err, stdout, stderr) => {
        if (err || !fs.existsSync(path.join(dir, "vmlinuz")) || !fs.existsSync(path.join(dir, "initrd.cpio.gz"))) {
          built.delete(dir); // let a later caller retry and fail with its own message
          reject(new Error(`guest/build.sh ${dir} failed: ${err?.message ?? "no outputs"}\n${stdout}${stderr}`));
        } else resolve();
      });
    });
    built.set(dir, p);
  }
  return p;
}

/** Kernel argument words for the shell-cmd test. */
export function shellCmdArgs(cmd: string): Record<string, string> {
  return { cmd: Buffer.from(cmd).toString("base64") };
}

/**
 * The guest kernel's first line about a crash, or null. Memory a migration lost shows up
 * this way (docs/recovery.md), so the drill and the migration tests both look for it.
 */
export function guestCrash(output: string): string | null {
  const m = /^.*(Kernel panic|invalid opcode|general protection fault|BUG: |Oops|list_add corruption|list_del corruption|stack-protector).*$/m.exec(output);
  return m ? m[0].trim() : null;
}

/** The text a shell-cmd test printed between its markers. */
export function commandOutput(output: string): string | null {
  const m = /VHOSTD-OUTPUT-BEGIN\n([\s\S]*?)VHOSTD-OUTPUT-END/.exec(output);
  return m ? m[1] : null;
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

function chardev(id: string, d: { socket: string; server?: boolean; reconnect?: boolean }, reconnect: boolean): string {
  if (d.server) return `socket,id=${id},path=${d.socket},server=on,wait=off`;
  return `socket,id=${id},path=${d.socket}${reconnect ? ",reconnect=1" : ""}`;
}

export function qemuArgs(opts: GuestOptions): string[] {
  const mem = opts.memMb ?? 512;
  const args = [
    "-accel", "tcg,thread=single", "-cpu", "max", "-m", String(mem), "-smp", "1", "-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
    "-object", `memory-backend-memfd,id=mem,size=${mem}M,share=on`, "-numa", "node,memdev=mem",
    "-overcommit", "mem-lock=on",
  ];
  (opts.net ?? []).forEach((n, i) => {
    const q = n.queues ?? 1;
    const mac = n.mac ?? `52:54:00:12:34:${(0x56 + i).toString(16)}`;
    args.push("-chardev", chardev(`cn${i}`, n, n.reconnect ?? opts.reconnect ?? false));
    args.push("-netdev", `vhost-user,id=n${i},chardev=cn${i},queues=${q}`);
    args.push("-device", `virtio-net-pci,id=net${i},netdev=n${i},mac=${mac},romfile=,vectors=0${q > 1 ? ",mq=on" : ""}`);
  });
  (opts.blk ?? []).forEach((b, i) => {
    args.push("-chardev", chardev(`cb${i}`, b, b.reconnect ?? opts.reconnect ?? false));
    args.push("-device", `vhost-user-blk-pci,id=blk${i},chardev=cb${i},num-queues=${b.numQueues ?? 1}`);
  });
  if (opts.qmpSocket) args.push("-qmp", `unix:${opts.qmpSocket},server=on,wait=off`);
  const words = Object.entries({ test: opts.test, ...opts.args }).map(([k, v]) => {
    if (/\s/.test(`${k}${v}`)) throw new Error(`kernel argument ${k}=${v} must not contain whitespace`);
    return `${k}=${v}`;
  });
  const dir = opts.imageDir ?? guestDir();
  args.push("-kernel", path.join(dir, "vmlinuz"), "-initrd", path.join(dir, "initrd.cpio.gz"));
  args.push("-append", ["console=ttyS0", "panic=-1", "quiet", ...words].join(" "));
  return [...args, ...(opts.qemuArgs ?? [])];
}

export class Guest {
  private serial = "";
  private err = "";
  private readonly t0 = Date.now();
  private bootedAt = NaN;
  private readonly done: Promise<GuestRun>;

  private constructor(
    readonly proc: ChildProcess,
    readonly opts: GuestOptions,
  ) {
    proc.stdout!.on("data", (d: Buffer) => this.onSerial(d));
    proc.stderr!.on("data", (d: Buffer) => {
      this.err += d.toString();
      this.appendLog(d);
    });
    const timeoutMs = opts.timeoutMs ?? 120_000;
    this.done = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill("SIGKILL");
        reject(new Error(`QEMU guest (test=${opts.test}) timed out after ${timeoutMs} ms; serial tail:\n${this.serial.slice(-3000)}\nstderr:\n${this.err.slice(-2000)}`));
      }, timeoutMs);
      // "close", not "exit": the last serial bytes may still be in the pipe at exit.
      proc.once("close", (exitCode, signal) => {
        clearTimeout(timer);
        live.delete(proc);
        resolve({ results: this.results, output: this.output, stderr: this.err, exitCode, signal, bootMs: this.bootedAt - this.t0, totalMs: Date.now() - this.t0 });
      });
    });
    this.done.catch(() => {}); // callers may only kill(); the rejection is theirs if they wait()
  }

  /** Builds the image if needed and starts QEMU; use wait() for the outcome. */
  static async start(opts: GuestOptions): Promise<Guest> {
    await ensureGuestImage(opts.imageDir ?? guestDir());
    const args = qemuArgs(opts);
    fs.appendFileSync(opts.logFile, `$ qemu-system-x86_64 ${args.join(" ")}\n`);
    const proc = spawn("qemu-system-x86_64", args, { stdio: ["pipe", "pipe", "pipe"] });
    live.add(proc);
    return new Guest(proc, opts);
  }

  /** Boots, runs the tests and resolves when QEMU exits. */
  static async boot(opts: GuestOptions): Promise<GuestRun> {
    return (await Guest.start(opts)).wait();
  }

  private onSerial(d: Buffer): void {
    this.serial += d.toString().replace(/\r/g, "");
    if (Number.isNaN(this.bootedAt) && this.serial.includes("VHOSTD-BOOTED")) this.bootedAt = Date.now();
    this.appendLog(d);
  }

  /** Output can still arrive after kill(), when a caller may have removed the log's directory. */
  private appendLog(d: Buffer): void {
    try {
      fs.appendFileSync(this.opts.logFile, d);
    } catch {
      // the log is a copy of what `output` keeps
    }
  }

  get output(): string {
    return this.serial;
  }

  /** Result lines so far. The pattern is searched anywhere in a line: SeaBIOS's escape
   *  sequences can precede the first line /init prints. */
  get results(): GuestResultLine[] {
    const out: GuestResultLine[] = [];
    for (const m of this.serial.matchAll(/VHOSTD-RESULT (\{.*\})$/gm)) {
      try {
        out.push(JSON.parse(m[1]));
      } catch {
        out.push({ test: "?", ok: false, unparsed: m[1] });
      }
    }
    return out;
  }

  wait(): Promise<GuestRun> {
    return this.done;
  }

  /** Waits until the serial output matches (e.g. /VHOSTD-BOOTED/); fails if QEMU exits first. */
  async waitForOutput(re: RegExp, timeoutMs = 60_000): Promise<void> {
    await waitFor(() => re.test(this.serial) || this.proc.exitCode !== null || this.proc.signalCode !== null, timeoutMs, `guest output ${re}`).catch((e) => {
      throw new Error(`${e.message}; serial tail:\n${this.serial.slice(-3000)}`);
    });
    if (!re.test(this.serial)) throw new Error(`QEMU exited before output ${re}; serial tail:\n${this.serial.slice(-3000)}\nstderr:\n${this.err.slice(-2000)}`);
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
  }
}
