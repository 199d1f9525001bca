// Every symbol of the test addon (vhostd_native_test.node, cc/test_support/), declared once.
// Only tests import this module (@vhostd/native/testing); the production index never loads it.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

export interface TestSupportAddon {
  /* a fake front-end's fds (cc/test_support/guest_fds.cc) */
  /** The first `size` bytes of fd mapped shared (JS cannot mmap: tests lay rings out through this view). */
  mapShared(fd: number, size: number): ArrayBuffer;
  memfd(name: string, size: number): number;
  /** A non-blocking eventfd. */
  eventFd(): number;
  /** Read and reset; 0 when it was not signalled. */
  eventFdRead(fd: number): number;
  eventFdWrite(fd: number): void;
  closeFd(fd: number): void;

  /* systemd's side of NOTIFY_SOCKET (cc/test_support/notify_listener.cc) */
  /** A non-blocking DGRAM socket bound to "/path" or "@abstract" that records senders' pids. */
  notifyListen(name: string): number;
  /** One queued notification and the sender's pid (from the kernel), or null. */
  notifyRecv(fd: number): { data: string; pid: number; fds: number[] } | null;
}

// VHOSTD_NATIVE_TEST_ADDON: another build of the same addon, e.g. the ASan+UBSan one
// (scripts/build-asan.mjs, run by scripts/test-native-asan.sh at the root).
export const testSupport: TestSupportAddon = require(process.env.VHOSTD_NATIVE_TEST_ADDON || "../../build/Release/vhostd_native_test.node");
