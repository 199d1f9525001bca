// Is a process past the point of no return? A SIGKILLed process stops running user code at
// once, but the kernel may take seconds to tear its memory down (exit_mmap waits for the
// i_mmap lock of every shared file it maps, and host-side memory monitors such as DAMON walk
// those files' reverse maps), and it closes its fds (our EOF, its OFD locks) only after that.
// /proc shows the decision long before: every thread has PF_EXITING set (or is a zombie) from
// the moment it begins to exit, and an exiting thread never returns to user space.
import fs from "node:fs";

/** task->flags bit set as a thread begins do_exit (include/linux/sched.h). */
const PF_EXITING = 0x4;

/** "exiting": every thread is on its way out; "gone": no such process; "alive": otherwise. */
export type ProcessFate = "alive" | "exiting" | "gone";

/** State letter and flags of one /proc stat file, or null when it cannot be read. */
function statOf(file: string): { state: string; flags: number } | null {
  let s: string;
  try {
    s = fs.readFileSync(file, "utf8");
  } catch {
    return null;
  }
  // "pid (comm) state ppid pgrp session tty_nr tpgid flags ...": comm may hold anything, even ")".
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return { state: f[0] ?? "?", flags: Number(f[6]) >>> 0 };
}

const exiting = (t: { state: string; flags: number }) => t.state === "Z" || t.state === "X" || (t.flags & PF_EXITING) !== 0;

export function processFate(pid: number): ProcessFate {
  const leader = statOf(`/proc/${pid}/stat`);
  if (!leader) return "gone";
  if (!exiting(leader)) return "alive";
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return "gone";
  }
  for (const tid of tids) {
    const t = statOf(`/proc/${pid}/task/${tid}/stat`);
    if (t && !exiting(t)) return "alive"; // a thread still finishing a system call: not yet
  }
  return "exiting";
}
