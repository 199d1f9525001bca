// The session mirror's frames on the shared fd-carrying transport; both daemons use it (the
// run-dir paths it travels through are in paths.ts).
import type { FrameCodec } from "@vhostd/native";
import {
  MIRROR_MAX_FDS_PER_FRAME,
  MIRROR_MAX_FRAME_BYTES,
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
