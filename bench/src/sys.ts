// Machine facts and CPU accounting from /proc, for the benchmark report.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";

const HZ = 100; // USER_HZ: the unit of utime/stime in /proc/PID/stat on Linux

/** utime + stime of a whole process (every thread), in seconds. */
export function cpuSeconds(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  // after "pid (comm) ": state is field 3, so utime (14) and stime (15) are at 11 and 12
  return (Number(f[11]) + Number(f[12])) / HZ;
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

export interface HostTimes {
  /** user+nice+system+irq+softirq over all CPUs, seconds. */
  busy: number;
  /** Time the hypervisor ran someone else on our vCPUs, seconds. */
  steal: number;
}

export function hostTimes(): HostTimes {
  const line = fs.readFileSync("/proc/stat", "utf8").split("\n")[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = v;
  return { busy: (user + nice + system + irq + softirq) / HZ, steal: (steal ?? 0) / HZ };
}

export function loadavg(): string {
  return fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}

/** Pins every thread of a process (new threads inherit the mask from their creator). */
export function pin(pid: number, cpus: string): void {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

function sh(cmd: string, args: string[], cwd?: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "?";
  }
}

export interface Machine {
  nproc: string;
  model: string;
  kernel: string;
  node: string;
  testpmd: string;
  commit: string;
  date: string;
}

export function machine(repo: string): Machine {
  const model = /model name\s*:\s*(.*)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?";
  const head = sh("git", ["rev-parse", "--short", "HEAD"], repo);
  const dirty = sh("git", ["status", "--porcelain", "--untracked-files=no"], repo);
  const pmdVer = sh("dpkg-query", ["-W", "-f=${Version}", "dpdk-dev"]);
  return {
    nproc: sh("nproc", []),
    model,
    kernel: os.release(),
    node: process.version,
    testpmd: pmdVer,
    commit: head + (dirty && dirty !== "?" ? " (+ uncommitted changes in the working tree)" : ""),
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
  };
}
