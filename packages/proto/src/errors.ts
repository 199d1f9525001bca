// The errno/errstr table of the management RPC, compatible with NVIDIA's vfe-vhostd.
//
// vfe-vhostd (Mellanox/dpdk-vhost-vfe, drivers/common/virtio/virtio_util.{h,c}) puts
// `"errno": ret, "errstr": rte_vdpa_err_str_get(ret)` in every result, where `ret` is 0
// on success and a NEGATIVE number on failure: either -E<linux errno> (1..159, errstr is
// strerror()) or -(1000 + n) for its own table below. We keep the numbers and strings
// exactly, and add our own codes after the vfe range (see VHOSTD_ERR_BASE).

export const VFE_SUCCESS = 0;
export const VFE_ERR_BASE = 1000;

/** vfe's `enum virtio_errno` (positive values; results carry them negated). */
export const VfeErr = {
  NO_PF_NAME: 1000,
  NO_PF_DEVICE: 1001,
  NO_VF_NAME: 1002,
  NO_VF_DEVICE: 1003,
  VFIO_DEV_FD: 1004,
  EXCEED_LIMIT: 1005,
  RESET_DEVICE_TIMEOUT: 1006,
  DEVARGS_PARSE: 1007,
  ADD_PF_ALREADY_ADD: 1008,
  DEVICE_PROBE_FAIL: 1009,
  ADD_PF_DEVICEID_NOT_SUPPORT: 1010,
  ADD_PF_FEATURE_NOT_MEET: 1011,
  ADD_PF_ALLOC_ADMIN_QUEUE: 1012,
  REMOVE_PF_WITH_VF: 1013,
  ADD_VF_ALREADY_ADD: 1014,
  ADD_VF_NO_VFID: 1015,
  ADD_VF_CREATE_VFIO_CONTAINER: 1016,
  ADD_VF_VFIO_CONTAINER_GROUP_BIND: 1017,
  ADD_VF_GET_IOMMU_GROUP: 1018,
  ADD_VF_ALLOC: 1019,
  ADD_VF_REGISTER_DEVICE: 1020,
  ADD_VF_QUEUES_ALLOC: 1021,
  ADD_VF_NO_VECTOR: 1022,
  ADD_VF_INTERRUPT_ALLOC: 1023,
  ADD_VF_REGISTER_INTERRUPT: 1024,
  ADD_VF_ENABLE_INTERRUPT: 1025,
  ADD_VF_BAR_COPY: 1026,
  ADD_VF_SET_STATUS_QUIESCED: 1027,
  ADD_VF_SET_STATUS_FREEZED: 1028,
  ADD_VF_EXCEED_VPORT_LIMIT: 1029,
  ADD_VF_NO_ACCESS_SOCKET_PATH: 1030,
  ADD_VF_VHOST_DRIVER_REGISTER: 1031,
  ADD_VF_VDPA_GET_FEATURES: 1032,
  ADD_VF_VHOST_DRIVER_SET_FEATURES: 1033,
  ADD_VF_VHOST_DRIVER_CALLBACK_REGISTER: 1034,
  ADD_VF_VHOST_DRIVER_ATTACH_VDPA_DEVICE: 1035,
  ADD_VF_VHOST_DRIVER_START: 1036,
  ADD_VF_IOMMU_DOMAIN_ALLOC: 1037,
  ADD_VF_VHOST_SOCK_EXIST: 1038,
  ADD_VF_EXCEED_MAX_GROUP_NUM: 1039,
  ADD_VF_SAVE_STATE: 1040,
  ADD_VF_STORE_FD: 1041,
  REMOVE_VF_RESTORE_IN_PROGRESS: 1042,
} as const;

/** vfe's `virtio_err_str[]`, indexed by (code - 1000). Strings verbatim. */
export const VFE_ERRSTR: readonly string[] = [
  "Please provide PF name", // 1000
  "PF device not found",
  "Please provide VF name",
  "VF device not found",
  "VFIO device fd invalid",
  "Number exceed limit", // 1005
  "Device reset timeout",
  "Devargs parse fail",
  "PF device already add",
  "Device probe fail",
  "PF deviceid not support", // 1010
  "PF device feature does not meet requirements",
  "Can't allocate admin queue",
  "Please remove all VF devices before remove PF",
  "VF device already add",
  "No vfid found", // 1015
  "Can't create VFIO container",
  "Can't bind to VFIO container group",
  "Can't get IOMMU group",
  "Can't allocate device",
  "Can't register device", // 1020
  "Can't allocate queue",
  "No vector",
  "Can't allocate interrupt",
  "Can't register interrupt",
  "Can't enable interrupt", // 1025
  "BAR copy wrong",
  "set status quiesced fail",
  "set status freezed fail",
  "Exceed vport limit",
  "Can't access vhost socket path", // 1030
  "Fail in calling rte_vhost_driver_register",
  "Fail in calling rte_vdpa_get_features",
  "Fail in calling rte_vhost_driver_set_features",
  "Fail in calling rte_vhost_driver_callback_register",
  "Fail in calling rte_vhost_driver_attach_vdpa_device", // 1035
  "Fail in calling rte_vhost_driver_start",
  "Can't allocate iommu domain",
  "Vhost socket file already exists",
  "Exceed max VFIO group number",
  "Fail to save state", // 1040
  "Fail to store fds to HA",
  "VF device is restoring",
];

/** vhostd's own codes, past the end of vfe's table (vfe has no equivalent). */
export const VHOSTD_ERR_BASE = 1100;
export const VhostdErr = {
  /** The VfHost could not start the VF's vhost-user session (and gave no errno). */
  SESSION_START: 1100,
  /** The daemon is shutting down and refuses changes. */
  SHUTTING_DOWN: 1101,
} as const;

export const VHOSTD_ERRSTR: readonly string[] = [
  "Can't start vhost-user session", // 1100
  "Daemon is shutting down",
];

/** Linux errno numbers we use, with glibc's strerror() text (what vfe prints). */
export const LinuxErrno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EALREADY: 114,
} as const;

const STRERROR: Record<number, string> = {
  1: "Operation not permitted",
  2: "No such file or directory",
  5: "Input/output error",
  7: "Argument list too long",
  11: "Resource temporarily unavailable",
  12: "Cannot allocate memory",
  13: "Permission denied",
  16: "Device or resource busy",
  17: "File exists",
  19: "No such device",
  22: "Invalid argument",
  28: "No space left on device",
  36: "File name too long",
  38: "Function not implemented",
  95: "Operation not supported",
  98: "Address already in use",
  110: "Connection timed out",
  111: "Connection refused",
  114: "Operation already in progress",
};

/**
 * errstr for an errno, as vfe's rte_vdpa_err_str_get(): the sign is ignored; 1..159 are
 * Linux errnos (strerror text), 1000.. the vfe table, 1100.. vhostd's; else "Unknown error".
 */
export function errstr(errno: number): string {
  const e = Math.abs(Math.trunc(errno));
  if (e === VFE_SUCCESS) return "Success";
  if (e > 0 && e < 160) return STRERROR[e] ?? `Unknown error ${e}`;
  if (e >= VFE_ERR_BASE && e - VFE_ERR_BASE < VFE_ERRSTR.length) return VFE_ERRSTR[e - VFE_ERR_BASE]!;
  if (e >= VHOSTD_ERR_BASE && e - VHOSTD_ERR_BASE < VHOSTD_ERRSTR.length) return VHOSTD_ERRSTR[e - VHOSTD_ERR_BASE]!;
  return "Unknown error";
}

/** The `errno`/`errstr` pair every RPC result carries (errno negative on failure, as vfe). */
export interface ErrnoFields {
  errno: number;
  errstr: string;
  /** vhostd extension: a human explanation of a failure (absent on success). */
  detail?: string;
}

/** A failure with its vfe errno; `code` is the positive table number. */
export class VfeError extends Error {
  readonly errno: number;
  readonly errstr: string;
  constructor(
    code: number,
    readonly detail?: string,
  ) {
    const n = -Math.abs(code);
    super(detail ? `${errstr(n)}: ${detail}` : errstr(n));
    this.name = "VfeError";
    this.errno = n;
    this.errstr = errstr(n);
  }
  fields(): ErrnoFields {
    return this.detail ? { errno: this.errno, errstr: this.errstr, detail: this.detail } : { errno: this.errno, errstr: this.errstr };
  }
}

/**
 * The errno an error carries (`.errno`: Node's system errors, the addon's, VfeError, the
 * keeper's), in the one sign convention of this project: negative, as vfe's results carry it.
 * Either sign is read (Node's are negative, a host's may be positive). Without one, `fallback`
 * (made negative too), or undefined when no fallback is given.
 */
export function errnoOf(e: unknown): number | undefined;
export function errnoOf(e: unknown, fallback: number): number;
export function errnoOf(e: unknown, fallback?: number): number | undefined {
  const n = (e as { errno?: unknown } | null | undefined)?.errno;
  if (typeof n === "number" && Number.isInteger(n) && n !== 0) return -Math.abs(n);
  return fallback === undefined ? undefined : -Math.abs(fallback);
}

export function ok(): ErrnoFields {
  return { errno: 0, errstr: "Success" };
}

/** Every errno a vhostd RPC result can carry, for documentation. */
export function errorTable(): Array<{ errno: number; errstr: string; origin: "linux" | "vfe" | "vhostd" }> {
  const rows: Array<{ errno: number; errstr: string; origin: "linux" | "vfe" | "vhostd" }> = [{ errno: 0, errstr: "Success", origin: "vfe" }];
  for (const n of Object.values(LinuxErrno)) rows.push({ errno: -n, errstr: errstr(n), origin: "linux" });
  VFE_ERRSTR.forEach((s, i) => rows.push({ errno: -(VFE_ERR_BASE + i), errstr: s, origin: "vfe" }));
  VHOSTD_ERRSTR.forEach((s, i) => rows.push({ errno: -(VHOSTD_ERR_BASE + i), errstr: s, origin: "vhostd" }));
  return rows;
}
