// blk VF backings as `vf -a` sees them: what the path is, and creating a missing file. The
// registry calls this before the host opens the disk; restore never creates anything (a
// backing that vanished — an unmounted filesystem at boot — must fail the VF, not be replaced
// by an empty file on the root filesystem).
import fs from "node:fs";
import path from "node:path";
import { DISK_NULL, DISK_SIZE_DEFAULT, LinuxErrno, VfeError, errnoOf, type DiskSpec } from "@vhostd/proto";

export interface DiskRequest {
  path: string;
  /** --disk-size, if given. */
  size?: number;
  readonly: boolean;
  direct: boolean;
}

/** Result of prepareDisk: the spec to journal, and whether a file was created. */
export interface PreparedDisk {
  spec: DiskSpec;
  created: boolean;
}

const einval = (detail: string) => new VfeError(LinuxErrno.EINVAL, detail);

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  return "not a regular file or block device";
}

/** A block device's size from sysfs (bytes), or 0 when it cannot be read. */
function blockDeviceBytes(st: fs.Stats): number {
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  try {
    const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, "utf8").trim());
    return Number.isSafeInteger(sectors * 512) ? sectors * 512 : 0;
  } catch {
    return 0;
  }
}

/**
 * Checks the backing and, when `create` and the file is missing, creates it sparse (0600) with
 * the requested size. Throws a VfeError (EINVAL, ENOENT, EACCES...) saying why not.
 */
export function prepareDisk(req: DiskRequest, create: boolean): PreparedDisk {
  if (req.path === DISK_NULL) {
    return { spec: { path: DISK_NULL, size: req.size ?? DISK_SIZE_DEFAULT, readonly: req.readonly, direct: false }, created: false };
  }
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(req.path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") throw new VfeError(errnoOf(e, LinuxErrno.EIO), `disk ${req.path}: ${(e as Error).message}`);
  }
  if (!st) {
    if (!create) throw new VfeError(LinuxErrno.ENOENT, `disk ${req.path} does not exist`);
    if (req.readonly) throw einval(`disk ${req.path} does not exist, and a new read-only disk would hold nothing`);
    const size = req.size ?? DISK_SIZE_DEFAULT;
    if (!fs.existsSync(path.dirname(req.path))) throw new VfeError(LinuxErrno.ENOENT, `disk ${req.path}: directory ${path.dirname(req.path)} does not exist`);
    let fd = -1;
    try {
      fd = fs.openSync(req.path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
      fs.ftruncateSync(fd, size);
    } catch (e) {
      if (fd >= 0) {
        fs.closeSync(fd);
        fs.rmSync(req.path, { force: true });
      }
      throw new VfeError(errnoOf(e, LinuxErrno.EIO), `disk ${req.path} could not be created: ${(e as Error).message}`);
    }
    fs.closeSync(fd);
    return { spec: { path: req.path, size, readonly: false, direct: req.direct }, created: true };
  }
  if (st.isFile()) {
    if (st.size < 512) throw einval(`disk ${req.path} is ${st.size} bytes, smaller than one 512-byte sector`);
    if (req.size !== undefined && req.size !== st.size) throw einval(`disk ${req.path} exists with ${st.size} bytes; --disk-size ${req.size} would change it (resize it yourself, or leave --disk-size out)`);
    return { spec: { path: req.path, size: st.size, readonly: req.readonly, direct: req.direct }, created: false };
  }
  if (st.isBlockDevice()) {
    const bytes = blockDeviceBytes(st);
    if (req.size !== undefined && bytes !== 0 && req.size !== bytes) throw einval(`block device ${req.path} has ${bytes} bytes; --disk-size ${req.size} cannot change it`);
    return { spec: { path: req.path, size: bytes, readonly: req.readonly, direct: req.direct }, created: false };
  }
  throw einval(`disk ${req.path} is ${kindOf(st)}; a disk must be a regular file or a block device`);
}

