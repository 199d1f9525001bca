// The standby's guest-memory mappings made ahead of a takeover (native premap*): for each VF
// copy we hold, its memory regions, dirty log and inflight area are mapped while the keeper
// runs it, so the takeover's own mappings take them instead of waiting in mmap() for the file
// locks a dying keeper's teardown holds. A copy's update keeps the ranges it still names.
import fs from "node:fs";
import type { Logger } from "pino";
import { native } from "@vhostd/native";
import type { MirrorVf } from "@vhostd/proto";

interface Range {
  fd: number;
  offset: bigint;
  size: bigint;
}

function ranges(rec: MirrorVf, fds: readonly number[]): Range[] {
  const s = rec.session;
  const out: Range[] = s.regions.map((r) => ({ fd: fds[r.fd]!, offset: BigInt(r.mmapOffset), size: BigInt(r.size) }));
  if (s.log) out.push({ fd: fds[s.log.fd]!, offset: BigInt(s.log.offset), size: BigInt(s.log.size) });
  if (s.inflight) out.push({ fd: fds[s.inflight.fd]!, offset: BigInt(s.inflight.offset), size: BigInt(s.inflight.size) });
  return out.filter((r) => r.fd !== undefined && r.fd >= 0 && r.size > 0n);
}

export class Premapped {
  /** dev -> (file and range key -> premap id). */
  private readonly byDev = new Map<string, Map<string, number>>();

  constructor(private readonly log: Logger) {}

  /** The copy of `dev` is now (rec, fds): map what it names and we have not mapped yet. */
  set(dev: string, rec: MirrorVf, fds: readonly number[]): void {
    const old = this.byDev.get(dev) ?? new Map<string, number>();
    const now = new Map<string, number>();
    for (const r of ranges(rec, fds)) {
      let key: string;
      try {
        const st = fs.fstatSync(r.fd, { bigint: true });
        key = `${st.dev}:${st.ino}:${r.offset}:${r.size}`;
      } catch {
        continue;
      }
      if (now.has(key)) continue;
      const id = old.get(key);
      if (id !== undefined) {
        now.set(key, id);
        old.delete(key);
        continue;
      }
      try {
        now.set(key, native.premapKeep(r.fd, r.offset, r.size));
      } catch (e) {
        // Checked again, with a clear error, by whoever adopts the copy.
        this.log.debug({ vf: dev, err: (e as Error).message }, "guest memory not mapped ahead");
      }
    }
    for (const id of old.values()) native.premapRelease(id);
    if (now.size) this.byDev.set(dev, now);
    else this.byDev.delete(dev);
  }

  /** Unmaps what `dev`'s copy had mapped and nobody took (after a takeover, or when dropped). */
  drop(dev: string): void {
    for (const id of this.byDev.get(dev)?.values() ?? []) native.premapRelease(id);
    this.byDev.delete(dev);
  }

  dropAll(): void {
    for (const dev of [...this.byDev.keys()]) this.drop(dev);
  }
}
