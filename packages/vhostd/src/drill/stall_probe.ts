// The migration drill's look at a receive stall: while a peer's pings go unanswered after a
// move, sample what the destination shows, to tell "the guest is not taking interrupts or
// buffers" from "we are not delivering". Only queries that change nothing: QEMU's device
// status (x-query-virtio-status reads fields), the vCPU's local APIC (which vectors are
// requested and in service) and our own queue counters. Never x-query-virtio-queue-status on a
// running vhost-user device: QEMU 7.2 answers it with GET_VRING_BASE, which stops the ring.
// The ring words themselves are read from QEMU's memory (/proc/PID/mem), which QEMU never sees.
import { closeSync, openSync, readSync } from "node:fs";
import type { Qmp } from "../guest/index.js";
import { sleep } from "../guest/index.js";
import type { Pinger } from "./pinger.js";
import { rpc } from "./rpc.js";

export interface StallSample {
  /** ms since the switch-over completed. */
  atMs: number;
  /** ms since the last ping reply. */
  silentMs: number;
  /** QEMU's virtio-net status: ISR, device status byte, vhost started. */
  virtio?: unknown;
  /** The vCPU's local APIC: IRR (requested) and ISR (in service) vectors, the timer. */
  lapic?: string[];
  /** Where the vCPU is: RIP and RFLAGS (IF: interrupts enabled), from QEMU's register dump. */
  cpu?: string;
  /** Our net VF's queue counters (avail/used indexes, packets, drops, calls). */
  queues?: unknown;
  /** Each ring's indexes and event words as in guest memory (read from QEMU's /proc/PID/mem). */
  rings?: RingWords[];
}

export interface RingWords {
  index: number;
  availFlags: number;
  availIdx: number;
  /** The driver's used_event: it wants an interrupt once the used index passes it. */
  usedEvent: number;
  usedFlags: number;
  usedIdx: number;
  availEvent: number;
}

interface QueueAddrs {
  index: number;
  size: number;
  avail?: string;
  used?: string;
}

/** The ring words of each queue, read at the front-end's addresses in its own memory. */
function readRings(pid: number, queues: QueueAddrs[]): RingWords[] {
  const fd = openSync(`/proc/${pid}/mem`, "r");
  try {
    const u16 = (addr: number) => {
      const b = Buffer.alloc(2);
      readSync(fd, b, 0, 2, addr);
      return b.readUInt16LE(0);
    };
    return queues
      .filter((q) => q.avail && q.used)
      .map((q) => {
        const a = Number(BigInt(q.avail!)), u = Number(BigInt(q.used!));
        return { index: q.index, availFlags: u16(a), availIdx: u16(a + 2), usedEvent: u16(a + 4 + 2 * q.size), usedFlags: u16(u), usedIdx: u16(u + 2), availEvent: u16(u + 4 + 8 * q.size) };
      });
  } finally {
    closeSync(fd);
  }
}

const SILENT_MS = 1200;
const EVERY_MS = 700;
const MAX_SAMPLES = 12;

/** Samples every EVERY_MS while the pings are silent, until done() or MAX_SAMPLES. */
export async function probeStall(q: Qmp, qemuPid: number | undefined, runDir: string, netVf: string, pinger: Pinger, fromMs: number, done: () => boolean): Promise<StallSample[]> {
  const samples: StallSample[] = [];
  const path = ((await q.execute("x-query-virtio").catch(() => [])) as Array<{ path: string; name: string }>).find((v) => v.name === "virtio-net")?.path;
  while (!done() && samples.length < MAX_SAMPLES) {
    await sleep(EVERY_MS / 2);
    const last = Math.max(pinger.lastReplyMs() || 0, fromMs);
    const silentMs = Date.now() - last;
    if (silentMs < SILENT_MS) continue;
    const s: StallSample = { atMs: Date.now() - fromMs, silentMs };
    if (path) {
      const v = await q.execute("x-query-virtio-status", { path }).catch(() => undefined);
      if (v) s.virtio = { isr: v.isr, status: v.status, started: v.started, vhostStarted: v["vhost-started"] ?? v.vhost_started, broken: v.broken };
    }
    const lapic = (await q.execute("human-monitor-command", { "command-line": "info lapic" }).catch(() => "")) as string;
    s.lapic = lapic.split("\n").map((l) => l.trim()).filter((l) => /^(ISR|IRR|Timer)/.test(l));
    const regs = (await q.execute("human-monitor-command", { "command-line": "info registers" }).catch(() => "")) as string;
    s.cpu = [/RIP=\S+/, /RFL=\S+/, /CPL=\d/, /HLT=\d/].map((re) => re.exec(regs)?.[0] ?? "").join(" ");
    s.queues = (await rpc(runDir, ["vf", "-i", netVf]).catch(() => undefined))?.device?.queues;
    if (qemuPid && Array.isArray(s.queues)) {
      try {
        s.rings = readRings(qemuPid, s.queues as QueueAddrs[]);
      } catch {
        // QEMU gone or memory not readable: the other fields still tell
      }
    }
    samples.push(s);
    await sleep(EVERY_MS / 2);
  }
  return samples;
}
