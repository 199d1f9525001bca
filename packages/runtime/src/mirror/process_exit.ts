// Is a process past the point of no return? A SIGKILLed process's fds (our EOF, its OFD
// locks) may stay open for seconds while the kernel tears its memory down; /proc shows the
// decision long before. The probe is native (cc/exit_probe.cc says what it reads), because
// vfe-vhostd asks it about its keeper 50 times a second.
import { native } from "@vhostd/native";

/** "exiting": every thread is on its way out; "gone": no such process; "alive": otherwise. */
export type ProcessFate = "alive" | "exiting" | "gone";

export function processFate(pid: number): ProcessFate {
  return native.processFate(pid);
}
