// The ONE schema of the management RPC (vfe-vhostd <-> vfe-vhost-cli): methods, actions,
// params and result fields.
//
// It drives: the server's parameter validation (validateParams), the CLI's parser and
// --help (packages/vhostd/src/cli), and docs/cli.md (cli/gen_docs.ts).
//
// Compatibility with NVIDIA's vfe-vhostd (Mellanox/dpdk-vhost-vfe: app/vfe-vdpa/vdpa_rpc.c
// and the python client app/vfe-vdpa/vhostmgmt, shipped as vfe-vhost-cli):
//  - JSON-RPC 2.0 methods "version", "mgmtpf", "vf";
//  - the action is a boolean flag in params ({"add": true, ...}), exactly one per call;
//  - param names dev (mgmtpf), vfdev / mgmtpf / socket_file / uuid (vf);
//  - results carry errno (0, or a negative number) and errstr; lists are {"devices": [...]},
//    vf info is {"device": {...}}; version keys "vfe-vhostd version" etc.
// Where vhostd differs (numbers as JSON numbers, extra fields, unix socket transport,
// newline framing, empty PF list is not an error) docs/cli.md says so.
import { DISK_PATH_MAX_BYTES, DISK_SIZE_DEFAULT_TEXT, DISK_SIZE_MAX, DISK_SIZE_MIN, MTU_MAX, MTU_MIN, QUEUE_PAIRS_MAX, SOCKET_PATH_MAX_BYTES } from "./values.js";

export type ParamType =
  | { kind: "bool" }
  | { kind: "pci" }
  | { kind: "path" }
  | { kind: "uuid" }
  | { kind: "mac" }
  | { kind: "int"; min: number; max: number }
  /** Bytes, a multiple of 512; the CLI also takes K/M/G/T suffixes. */
  | { kind: "size"; min: number; max: number }
  /** A disk backing: absolute path or "null" (diskPathProblem). */
  | { kind: "disk" }
  | { kind: "enum"; values: readonly string[] };

export interface CliOption {
  short?: string;
  long?: string;
  metavar?: string;
  /** enum params: one flag per value, e.g. {"--server": "server", "--client": "client"}. */
  valueFlags?: Readonly<Record<string, string>>;
  /** bool params: the option takes a value, "on" or "off" (as `ip link set ... vf N spoofchk on`). */
  onOff?: boolean;
}

export interface ParamSpec {
  type: ParamType;
  help: string;
  /** How the CLI sets it; absent for the positional DEVICE params and flags set by actions. */
  cli?: CliOption;
  /** Documentation of the default when absent. */
  default?: string;
  /** True where the name/meaning comes from vfe-vhostd; false for vhostd extensions. */
  vfe: boolean;
}

export type ResultType = "string" | "number" | "boolean" | "object" | "array";

export interface ResultField {
  name: string;
  type: ResultType;
  help: string;
  optional?: boolean;
  /** Fields of an object, or of each element of an array of objects. */
  fields?: readonly ResultField[];
  vfe: boolean;
}

export interface ActionSpec {
  /** The params key set to true (vfe: "add", "remove", "list", "info"). */
  name: string;
  cli: { short: string; long: string };
  help: string;
  /** Which param the CLI's positional DEVICE fills. */
  positional?: { param: string; required: boolean };
  required: readonly string[];
  optional: readonly string[];
  result: readonly ResultField[];
}

export interface MethodSpec {
  name: string;
  help: string;
  description: string;
  params: Readonly<Record<string, ParamSpec>>;
  /** Empty: the method has no action flag (version). */
  actions: readonly ActionSpec[];
  /** Result when there are no actions. */
  result?: readonly ResultField[];
  positionalMetavar?: string;
  positionalHelp?: string;
  /** CLI: the action used when no action flag is given (`state` alone shows everything). */
  defaultAction?: string;
  /** CLI: an action may also be spelled as a word after the verb (`ha status`). */
  actionWords?: boolean;
}

const ERRNO_FIELDS: readonly ResultField[] = [
  { name: "errno", type: "number", help: "0 on success, a negative error number otherwise (see the error table)", vfe: true },
  { name: "errstr", type: "string", help: '"Success" or the error text', vfe: true },
  { name: "detail", type: "string", help: "why it failed, when vhostd knows more than errstr says", optional: true, vfe: false },
];

const PF_DEVICE_FIELDS: readonly ResultField[] = [
  { name: "pf", type: "string", help: "PF address", vfe: true },
  { name: "type", type: "string", help: '"net" or "blk"', vfe: false },
  { name: "switch_id", type: "number", help: "engine L2 switch id of the PF", vfe: false },
  { name: "vfs", type: "number", help: "VFs added to the PF", vfe: false },
  { name: "num_vfs", type: "number", help: "VFs the PF has (inventory)", vfe: false },
  { name: "first_vf", type: "string", help: "address of VF 0", vfe: false },
  { name: "vf_stride", type: "number", help: "SR-IOV VF stride (with -d)", optional: true, vfe: false },
  { name: "first_vf_offset", type: "number", help: "SR-IOV first VF offset (with -d)", optional: true, vfe: false },
  { name: "mtu", type: "number", help: "default MTU of new VFs (with -d)", optional: true, vfe: false },
  { name: "queue_pairs", type: "number", help: "default queue pairs of new VFs (with -d)", optional: true, vfe: false },
  { name: "max_queue_pairs", type: "number", help: "queue pair limit of the PF's VFs (with -d)", optional: true, vfe: false },
];

const QUEUE_FIELDS: readonly ResultField[] = [
  { name: "index", type: "number", help: "virtqueue index", vfe: false },
  { name: "size", type: "number", help: "ring size", vfe: false },
  { name: "enabled", type: "boolean", help: "VHOST_USER_SET_VRING_ENABLE state", vfe: false },
  { name: "started", type: "boolean", help: "the datapath serves it", vfe: false },
  { name: "last_avail_idx", type: "number", help: "running: the next available index the queue takes (all before it are processed); stopped: the index it resumes at", vfe: false },
  { name: "packets", type: "number", help: "frames taken from (TX) or given to (RX) the front-end", vfe: false },
  { name: "bytes", type: "number", help: "bytes of those frames", vfe: false },
  { name: "drops", type: "number", help: "frames lost at this queue (no RX buffer, queue stopped, offload not negotiated)", vfe: false },
  { name: "kicks", type: "number", help: "notifications received from the front-end", vfe: false },
  { name: "calls", type: "number", help: "interrupts signalled to the front-end", vfe: false },
  { name: "errors", type: "number", help: "malformed descriptor chains rejected", vfe: false },
  { name: "spoofed", type: "number", help: "net TX: frames dropped by port security (source MAC not the VF's, or its FDB share full)", optional: true, vfe: false },
  { name: "unlearned", type: "number", help: "net TX: frames forwarded without learning their source (a trusted VF's FDB share full)", optional: true, vfe: false },
];

const VF_DEVICE_FIELDS: readonly ResultField[] = [
  { name: "vf", type: "string", help: "VF address", vfe: true },
  { name: "pf", type: "string", help: "its PF", vfe: false },
  { name: "type", type: "string", help: '"net" or "blk"', vfe: false },
  { name: "probed", type: "boolean", help: "always true for an added VF", vfe: true },
  { name: "msix_num", type: "number", help: "MSI-X vectors the VF needs (net: 2*pairs+2, blk: queues+1)", vfe: true },
  { name: "queue_num", type: "number", help: "virtqueues (net: 2*pairs, blk: queues)", vfe: true },
  { name: "queue_size", type: "number", help: "ring size (front-end's, once known; else 256)", vfe: true },
  {
    name: "device_feature",
    type: "object",
    help: 'negotiated virtio features: {"value": "0x..", "<bit>": "<NAME>", ...}',
    vfe: true,
  },
  { name: "mtu", type: "number", help: "MTU", vfe: true },
  { name: "mac", type: "string", help: "MAC address (uppercase, as vfe)", vfe: true },
  { name: "vm_uuid", type: "string", help: 'VM UUID ("" if none)', vfe: true },
  { name: "socket_file", type: "string", help: "vhost-user socket", vfe: true },
  { name: "configured", type: "boolean", help: "the front-end has started the device (DRIVER_OK)", vfe: true },
  { name: "mode", type: "string", help: '"client" (vhostd connects) or "server" (vhostd listens)', vfe: false },
  { name: "queue_pairs", type: "number", help: "queue pairs (net) / queues (blk)", vfe: false },
  { name: "dev_id", type: "number", help: "engine device id", vfe: false },
  { name: "switch_id", type: "number", help: "engine switch id (the PF's)", vfe: false },
  { name: "state", type: "string", help: "session state: waiting|connecting|negotiating|running|stopped|failed|held|broken (held, broken: implicated in daemon crashes, see last_error)", vfe: false },
  { name: "connected", type: "boolean", help: "a front-end is connected", vfe: false },
  { name: "reconnects", type: "number", help: "front-end reconnections since added", vfe: false },
  { name: "disk", type: "string", help: 'blk: the backing (path, or "null")', optional: true, vfe: false },
  { name: "disk_size", type: "number", help: "blk: size of the backing in bytes when it was added (a block device's from sysfs; 0 if unknown)", optional: true, vfe: false },
  { name: "readonly", type: "boolean", help: "blk: read-only disk", optional: true, vfe: false },
  { name: "direct", type: "boolean", help: "blk: O_DIRECT I/O", optional: true, vfe: false },
  { name: "spoofchk", type: "boolean", help: "net: frames whose source MAC is not the VF's are dropped (port security)", optional: true, vfe: false },
  { name: "trust", type: "boolean", help: "net: the VF may send any source MAC (spoofchk lifted) and owns a larger FDB share", optional: true, vfe: false },
  { name: "mac_admin", type: "boolean", help: "net: the MAC was set by the operator (vf -a --mac): the port is locked to it", optional: true, vfe: false },
  {
    name: "mac_locked",
    type: "string",
    help: 'net: the MAC the switch port is locked to (the admin MAC, or the first source the VF sent); "" while not locked or unknown',
    optional: true,
    vfe: false,
  },
  { name: "last_error", type: "string", help: "last session error", optional: true, vfe: false },
];

const FDB_FIELDS: readonly ResultField[] = [
  { name: "mac", type: "string", help: "learned or pinned MAC address", vfe: false },
  { name: "port", type: "string", help: 'the VF behind it, or "uplink" (the TAP)', vfe: false },
  { name: "dev_id", type: "number", help: "engine device id of the VF (-1: uplink)", vfe: false },
  { name: "age_ms", type: "number", help: "time since a frame from it was last seen (a locked MAC never ages out)", vfe: false },
  { name: "locked", type: "boolean", help: "the port's own MAC (admin or locked): never moves to another port, never ages", vfe: false },
  { name: "admin", type: "boolean", help: "the operator set it (vf -a --mac)", vfe: false },
];

const VF_INFO_FIELDS: readonly ResultField[] = [
  ...VF_DEVICE_FIELDS,
  { name: "features", type: "string", help: "negotiated virtio features (hex)", vfe: false },
  { name: "protocol_features", type: "string", help: "negotiated vhost-user protocol features (hex)", vfe: false },
  { name: "queues", type: "array", help: "per-virtqueue state", fields: QUEUE_FIELDS, vfe: false },
];

const DEVICE_HELP =
  'Device specified as PCI "domain:bus:slot.func" syntax or "bus:slot.func" syntax (domain 0000).';

const VF_STATE_FIELDS: readonly ResultField[] = [
  { name: "vf", type: "string", help: "VF address", vfe: false },
  { name: "pf", type: "string", help: "its PF", vfe: false },
  { name: "type", type: "string", help: '"net" or "blk"', vfe: false },
  { name: "socket_file", type: "string", help: "vhost-user socket", vfe: false },
  { name: "mode", type: "string", help: '"client" or "server"', vfe: false },
  { name: "owner", type: "string", help: 'process running the session and queues: "vfe-vhostd-ha", "vfe-vhostd", or "" when unknown', vfe: false },
  { name: "state", type: "string", help: "waiting, connecting, negotiating, running, stopped, failed, held, broken or unknown", vfe: false },
  { name: "connected", type: "boolean", help: "a front-end is connected", vfe: false },
  { name: "reconnects", type: "number", help: "front-end connections after the first", vfe: false },
  { name: "features", type: "string", help: "negotiated virtio features (hex)", vfe: false },
  { name: "protocol_features", type: "string", help: "negotiated vhost-user protocol features (hex)", vfe: false },
  {
    name: "memory_regions",
    type: "array",
    help: "guest memory the session maps",
    vfe: false,
    fields: [
      { name: "guest_addr", type: "string", help: "guest physical address (hex)", vfe: false },
      { name: "size", type: "string", help: "bytes (hex)", vfe: false },
      { name: "user_addr", type: "string", help: "front-end virtual address (hex)", vfe: false },
      { name: "mmap_offset", type: "string", help: "offset in the fd (hex)", vfe: false },
    ],
  },
  {
    name: "vrings",
    type: "array",
    help: "every virtqueue the front-end configured",
    vfe: false,
    fields: [
      { name: "index", type: "number", help: "virtqueue index", vfe: false },
      { name: "size", type: "number", help: "ring size", vfe: false },
      { name: "enabled", type: "boolean", help: "SET_VRING_ENABLE state", vfe: false },
      { name: "started", type: "boolean", help: "the datapath runs it", vfe: false },
      { name: "desc", type: "string", help: "descriptor table address (hex)", optional: true, vfe: false },
      { name: "avail", type: "string", help: "available ring address (hex)", optional: true, vfe: false },
      { name: "used", type: "string", help: "used ring address (hex)", optional: true, vfe: false },
      { name: "last_avail_idx", type: "number", help: "running: the next available index the queue takes; stopped: the index it resumes at", vfe: false },
      { name: "owner", type: "string", help: "process running this queue", vfe: false },
      { name: "packets", type: "number", help: "frames taken or given", vfe: false },
      { name: "drops", type: "number", help: "frames lost at this queue", vfe: false },
    ],
  },
  { name: "last_error", type: "string", help: "why the session last failed", optional: true, vfe: false },
];

const STATS_QUEUE_FIELDS: readonly ResultField[] = [
  { name: "index", type: "number", help: "virtqueue index", vfe: false },
  { name: "dir", type: "string", help: '"rx" (to the front-end) or "tx" (from it)', vfe: false },
  { name: "packets", type: "number", help: "frames", vfe: false },
  { name: "bytes", type: "number", help: "bytes", vfe: false },
  { name: "drops", type: "number", help: "frames lost at this queue", vfe: false },
  { name: "kicks", type: "number", help: "notifications from the front-end", vfe: false },
  { name: "calls", type: "number", help: "interrupts to the front-end", vfe: false },
  { name: "errors", type: "number", help: "malformed chains", vfe: false },
  { name: "pps", type: "number", help: "packets per second (with --interval)", optional: true, vfe: false },
  { name: "bps", type: "number", help: "bits per second (with --interval)", optional: true, vfe: false },
];

const VF_STATS_FIELDS: readonly ResultField[] = [
  { name: "vf", type: "string", help: "VF address", vfe: false },
  { name: "state", type: "string", help: "session state", vfe: false },
  { name: "rx_packets", type: "number", help: "frames given to the front-end", vfe: false },
  { name: "tx_packets", type: "number", help: "frames taken from the front-end", vfe: false },
  { name: "rx_bytes", type: "number", help: "their bytes", vfe: false },
  { name: "tx_bytes", type: "number", help: "their bytes", vfe: false },
  { name: "drops", type: "number", help: "frames lost at the VF's queues", vfe: false },
  { name: "errors", type: "number", help: "malformed chains", vfe: false },
  { name: "rx_pps", type: "number", help: "with --interval", optional: true, vfe: false },
  { name: "tx_pps", type: "number", help: "with --interval", optional: true, vfe: false },
  { name: "queues", type: "array", help: "per queue", fields: STATS_QUEUE_FIELDS, vfe: false },
];

const HA_STATUS_FIELDS: readonly ResultField[] = [
  { name: "mode", type: "string", help: '"ha" (with a keeper) or "standalone"', vfe: false },
  {
    name: "keeper",
    type: "object",
    help: "vfe-vhostd-ha as vfe-vhostd sees it (ha mode)",
    optional: true,
    vfe: false,
    fields: [
      { name: "connected", type: "boolean", help: "the sync channel is up (hello answered, heartbeats flowing)", vfe: false },
      { name: "version", type: "string", help: "its version", optional: true, vfe: false },
      { name: "pid", type: "number", help: "its process id", optional: true, vfe: false },
      { name: "epoch", type: "number", help: "vfe-vhostd's epoch (bumped at every start)", vfe: false },
      { name: "last_seq", type: "number", help: "last state delta sequence number sent", vfe: false },
      { name: "heartbeat_age_ms", type: "number", help: "time since the keeper was last heard from", optional: true, vfe: false },
      { name: "vfs", type: "number", help: "VFs the keeper runs", optional: true, vfe: false },
      { name: "reconnects", type: "number", help: "times the keeper came back (welcomed this vfe-vhostd again) after being down, since vfe-vhostd started", optional: true, vfe: false },
    ],
  },
  {
    name: "mirror",
    type: "object",
    help: "the session mirror vfe-vhostd holds as the keeper's hot standby (ha mode)",
    optional: true,
    vfe: false,
    fields: [
      { name: "connected", type: "boolean", help: "the keeper is connected to the mirror socket", vfe: false },
      { name: "keeper_pid", type: "number", help: "pid of the connected keeper", optional: true, vfe: false },
      { name: "copies", type: "number", help: "VF sessions held as copies", vfe: false },
      { name: "fds_held", type: "number", help: "fds in those copies", vfe: false },
      { name: "fds_per_vf", type: "object", help: "VF -> fds held", vfe: false },
      { name: "running", type: "array", help: "VFs vfe-vhostd runs itself since a takeover", vfe: false },
      { name: "takeovers", type: "number", help: "takeovers since vfe-vhostd started", vfe: false },
      { name: "exit_watch", type: "string", help: "how a killed keeper is noticed: beacon (its exit beacon's robust futex) or poll (/proc every 20 ms)", optional: true, vfe: false },
      { name: "last_takeover", type: "object", help: "when, why, VFs adopted, failed, ms", optional: true, vfe: false },
    ],
  },
];

export const RPC_METHODS: readonly MethodSpec[] = [
  {
    name: "version",
    help: "show vhostd version info",
    description: "Versions of vfe-vhostd and of its keeper vfe-vhostd-ha, and of the RPC protocol.",
    params: {},
    actions: [],
    result: [
      { name: "vfe-vhostd version", type: "string", help: 'e.g. "vhostd 0.1.0"', vfe: true },
      { name: "vfe-vhostd build time", type: "string", help: "when the daemon was built", vfe: true },
      { name: "vfe-vhostd-ha version", type: "string", help: '"Not Known Due to HA Disconnected" without a keeper', vfe: true },
      { name: "vfe-vhostd-ha build time", type: "string", help: "likewise", vfe: true },
      {
        name: "protocol",
        type: "object",
        help: "RPC protocol",
        vfe: false,
        fields: [
          { name: "name", type: "string", help: '"vhostd-rpc"', vfe: false },
          { name: "version", type: "number", help: "protocol version", vfe: false },
          { name: "jsonrpc", type: "string", help: '"2.0"', vfe: false },
        ],
      },
      { name: "pid", type: "number", help: "daemon process id", vfe: false },
      ...ERRNO_FIELDS,
    ],
  },
  {
    name: "mgmtpf",
    help: "Management PF device",
    description:
      "Add, remove, list or show PFs. A PF must be added before any of its VFs, and can be removed only when it has no VFs. " +
      "`-i` shows a net PF's L2 switch forwarding table: every MAC, the VF (or uplink) behind it, its age, and whether it is a VF's locked MAC (port security).",
    positionalMetavar: "DEVICE",
    positionalHelp: DEVICE_HELP,
    params: {
      dev: { type: { kind: "pci" }, help: "PF address", vfe: true },
      debug: { type: { kind: "bool" }, help: "with debug info", cli: { short: "-d", long: "--debug" }, vfe: true },
    },
    actions: [
      {
        name: "add",
        cli: { short: "-a", long: "--add" },
        help: "add a pci device",
        positional: { param: "dev", required: true },
        required: ["dev"],
        optional: [],
        result: ERRNO_FIELDS,
      },
      {
        name: "remove",
        cli: { short: "-r", long: "--remove" },
        help: "remove a pci device",
        positional: { param: "dev", required: true },
        required: ["dev"],
        optional: [],
        result: ERRNO_FIELDS,
      },
      {
        name: "list",
        cli: { short: "-l", long: "--list" },
        help: "list all PF devices (or just DEVICE)",
        positional: { param: "dev", required: false },
        required: [],
        optional: ["dev", "debug"],
        result: [{ name: "devices", type: "array", help: "added PFs (empty if none)", fields: PF_DEVICE_FIELDS, vfe: true }, ...ERRNO_FIELDS],
      },
      {
        name: "info",
        cli: { short: "-i", long: "--info" },
        help: "show a PF and its L2 switch's forwarding table (vhostd extension)",
        positional: { param: "dev", required: true },
        required: ["dev"],
        optional: ["debug"],
        result: [
          { name: "device", type: "object", help: "the PF", fields: PF_DEVICE_FIELDS, optional: true, vfe: false },
          { name: "fdb", type: "array", help: "net: the switch's forwarding table, one entry per MAC (empty for blk)", fields: FDB_FIELDS, optional: true, vfe: false },
          ...ERRNO_FIELDS,
        ],
      },
    ],
  },
  {
    name: "vf",
    help: "Management VF device",
    description:
      "Add, remove, list or show VFs. A VF's PF must have been added; a vhost-user socket belongs to one VF only.",
    positionalMetavar: "DEVICE",
    positionalHelp: DEVICE_HELP + " The VF for -a/-r/-i, its PF for -l.",
    params: {
      vfdev: { type: { kind: "pci" }, help: "VF address", vfe: true },
      mgmtpf: { type: { kind: "pci" }, help: "PF address (list)", vfe: true },
      socket_file: {
        type: { kind: "path" },
        help: `Vhost socket file name (absolute, at most ${SOCKET_PATH_MAX_BYTES} bytes)`,
        cli: { short: "-v", metavar: "vhost_socket" },
        default: "<iface prefix><DEVICE>; the prefix is vfe-vhostd --iface, default <run-dir>/vf-",
        vfe: true,
      },
      uuid: { type: { kind: "uuid" }, help: "Virtual machine UUID", cli: { short: "-u", metavar: "vm_uuid" }, vfe: true },
      mode: {
        type: { kind: "enum", values: ["client", "server"] },
        help: "client: vhostd connects to the front-end's socket; server: vhostd listens on it",
        cli: { valueFlags: { "--client": "client", "--server": "server" } },
        default: "client, or server when vfe-vhostd runs with --server",
        vfe: false,
      },
      queue_pairs: {
        type: { kind: "int", min: 1, max: QUEUE_PAIRS_MAX },
        help: "queue pairs (net) or queues (blk)",
        cli: { short: "-q", long: "--queues", metavar: "PAIRS" },
        default: "the PF's queue_pairs (1)",
        vfe: false,
      },
      mac: { type: { kind: "mac" }, help: "MAC address (net; unicast)", cli: { long: "--mac", metavar: "MAC" }, default: "derived from the VF address", vfe: false },
      mtu: {
        type: { kind: "int", min: MTU_MIN, max: MTU_MAX },
        help: `MTU (net; ${MTU_MIN}..${MTU_MAX})`,
        cli: { long: "--mtu", metavar: "N" },
        default: "the PF's mtu (1500)",
        vfe: false,
      },
      disk: {
        type: { kind: "disk" },
        help:
          'blk: the backing, a raw file or a block device (absolute path, at most ' +
          `${DISK_PATH_MAX_BYTES} bytes); a missing file is created sparse with --disk-size. "null": no storage ` +
          "(writes vanish, reads return nothing; for benchmarks). Default: <state-dir>/disks/<VF>.raw (1 GiB unless --disk-size)",
        cli: { long: "--disk", metavar: "PATH" },
        vfe: false,
      },
      disk_size: {
        type: { kind: "size", min: DISK_SIZE_MIN, max: DISK_SIZE_MAX },
        help: "blk: size of a file created by vf -a (named by --disk or the default one), or of the null disk; bytes, or with a K/M/G/T suffix (powers of 1024). An existing file keeps its size (a different --disk-size is refused)",
        cli: { long: "--disk-size", metavar: "SIZE" },
        default: DISK_SIZE_DEFAULT_TEXT,
        vfe: false,
      },
      readonly: { type: { kind: "bool" }, help: "blk: read-only disk (VIRTIO_BLK_F_RO; writes fail)", cli: { long: "--readonly" }, vfe: false },
      spoofchk: {
        type: { kind: "bool" },
        help: "net: drop frames whose source MAC is not the VF's (its --mac, or else the first source it sends); set at add time",
        cli: { long: "--spoofchk", metavar: "on|off", onOff: true },
        default: "on",
        vfe: false,
      },
      trust: {
        type: { kind: "bool" },
        help: "net: a trusted VF may send any source MAC but another VF's (spoofchk lifted) and owns a larger FDB share; set at add time",
        cli: { long: "--trust", metavar: "on|off", onOff: true },
        default: "off",
        vfe: false,
      },
      direct: {
        type: { kind: "bool" },
        help: "blk: O_DIRECT reads and writes, bypassing the host page cache (requests the backing cannot align go through the cache)",
        cli: { long: "--direct" },
        vfe: false,
      },
    },
    actions: [
      {
        name: "add",
        cli: { short: "-a", long: "--add" },
        help: "add a pci device",
        positional: { param: "vfdev", required: true },
        required: ["vfdev"],
        optional: ["socket_file", "uuid", "mode", "queue_pairs", "mac", "mtu", "disk", "disk_size", "readonly", "direct", "spoofchk", "trust"],
        result: [{ name: "device", type: "object", help: "the VF as added (vhostd extension)", fields: VF_DEVICE_FIELDS, optional: true, vfe: false }, ...ERRNO_FIELDS],
      },
      {
        name: "remove",
        cli: { short: "-r", long: "--remove" },
        help: "remove a pci device",
        positional: { param: "vfdev", required: true },
        required: ["vfdev"],
        optional: [],
        result: ERRNO_FIELDS,
      },
      {
        name: "list",
        cli: { short: "-l", long: "--list" },
        help: "list all VF devices of PF device",
        positional: { param: "mgmtpf", required: true },
        required: ["mgmtpf"],
        optional: [],
        result: [{ name: "devices", type: "array", help: "the PF's VFs (empty if none)", fields: VF_DEVICE_FIELDS, optional: true, vfe: true }, ...ERRNO_FIELDS],
      },
      {
        name: "info",
        cli: { short: "-i", long: "--info" },
        help: "show specified VF device information",
        positional: { param: "vfdev", required: true },
        required: ["vfdev"],
        optional: [],
        result: [{ name: "device", type: "object", help: "the VF", fields: VF_INFO_FIELDS, optional: true, vfe: true }, ...ERRNO_FIELDS],
      },
    ],
  },
  {
    name: "state",
    help: "live state of VFs: sessions, features, memory, rings and who runs them",
    description:
      "What runs now, VF by VF: the vhost-user session (negotiated features, memory regions), every virtqueue " +
      "(addresses, indices, counters) and the process that runs it: vfe-vhostd-ha normally, vfe-vhostd after it took " +
      "over from a dead keeper, or vfe-vhostd in standalone mode.",
    positionalMetavar: "DEVICE",
    positionalHelp: "VF address (all VFs if omitted)",
    defaultAction: "show",
    params: {
      dev: { type: { kind: "pci" }, help: "VF address", vfe: false },
    },
    actions: [
      {
        name: "show",
        cli: { short: "-i", long: "--info" },
        help: "show the live state (the default)",
        positional: { param: "dev", required: false },
        required: [],
        optional: ["dev"],
        result: [{ name: "devices", type: "array", help: "one entry per VF in dev_id order (just DEVICE's if given)", fields: VF_STATE_FIELDS, vfe: false }, ...ERRNO_FIELDS],
      },
    ],
  },
  {
    name: "stats",
    help: "per-queue counters of VFs, with rates",
    description:
      "Counters of every queue of every VF (or just DEVICE): packets, bytes, drops, kicks, calls and malformed chains, " +
      "with per-direction totals. With --interval MS vfe-vhostd samples twice, MS apart, and adds rates per second. " +
      "The counters live in shared memory and survive a takeover by the other daemon.",
    positionalMetavar: "DEVICE",
    positionalHelp: "VF address (all VFs if omitted)",
    defaultAction: "show",
    params: {
      dev: { type: { kind: "pci" }, help: "VF address", vfe: false },
      interval: {
        type: { kind: "int", min: 0, max: 10_000 },
        help: "sample twice this many ms apart and report rates (0: no rates)",
        cli: { short: "-t", long: "--interval", metavar: "MS" },
        default: "0",
        vfe: false,
      },
    },
    actions: [
      {
        name: "show",
        cli: { short: "-i", long: "--info" },
        help: "show the counters (the default)",
        positional: { param: "dev", required: false },
        required: [],
        optional: ["dev", "interval"],
        result: [
          { name: "interval_ms", type: "number", help: "the sampling interval (0: no rates)", vfe: false },
          { name: "devices", type: "array", help: "one entry per VF, in dev_id order", fields: VF_STATS_FIELDS, vfe: false },
          ...ERRNO_FIELDS,
        ],
      },
    ],
  },
  {
    name: "ha",
    help: "the HA pair: keeper, sync channel, session mirror",
    description:
      "Whether vfe-vhostd runs with a keeper, the keeper's version, pid and sync position (epoch, last sequence, " +
      "heartbeat age), and the session mirror: the copies vfe-vhostd holds (fds per VF), what it runs itself since " +
      "a takeover, and the last takeover.",
    actionWords: true,
    params: {},
    actions: [
      {
        name: "status",
        cli: { short: "-S", long: "--status" },
        help: "show the HA status (also: `ha status`)",
        required: [],
        optional: [],
        result: [...HA_STATUS_FIELDS, ...ERRNO_FIELDS],
      },
    ],
  },
];

export function methodSpec(name: string): MethodSpec | undefined {
  return RPC_METHODS.find((m) => m.name === name);
}
