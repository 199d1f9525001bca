// The session mirror's frames on the shared fd-carrying transport, and where the per-VF locks
// live; both daemons use these.
import path from "node:path";
import type { FrameCodec } from "@vhostd/native";
import {
  MIRROR_MAX_FDS_PER_FRAME,
  MIRROR_MAX_FRAME_BYTES,
  MIRROR_SOCKET_NAME,
  decodeMirrorFrame,
  encodeMirrorFrame,
  mirrorFrameFdCount,
  type MirrorFrame,
} from "@vhostd/proto";

export const MIRROR_CODEC: FrameCodec<MirrorFrame> = {
  name: "HA mirror",
  encode: encodeMirrorFrame,
  decode: decodeMirrorFrame,
  fdCount: mirrorFrameFdCount,
  describe: (f) => f.op,
  maxBytes: MIRROR_MAX_FRAME_BYTES,
  maxFds: MIRROR_MAX_FDS_PER_FRAME,
};

/** <run-dir>/locks: one OFD-locked file per VF whose queues run (see session/vf_lock.ts). */
export function mirrorLockDir(runDir: string): string {
  return path.join(runDir, "locks");
}

/** <run-dir>/engine-shared: counters and TX progress records both daemons' engines map. */
export function mirrorSharedPath(runDir: string): string {
  return path.join(runDir, "engine-shared");
}

/** <run-dir>/keeper.beacon: the keeper's exit beacon (native armExitBeacon / ExitProbe). */
export function keeperBeaconPath(runDir: string): string {
  return path.join(runDir, "keeper.beacon");
}

export function mirrorSocketPath(runDir: string): string {
  return path.join(runDir, MIRROR_SOCKET_NAME);
}
