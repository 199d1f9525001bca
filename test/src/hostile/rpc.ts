// Hostile JSON-RPC on vfe-vhostd's management socket: broken framing and JSON, every param of
// every method given values of the wrong type or out of range (generated from the schema in
// proto's rpc.ts, the one that drives the server and the CLI), and well-formed requests that
// would hurt another VF (its socket, its MAC, its PF). Each must get an error carrying a
// negative errno and an errstr, never a crash of a handler ("Internal error"), never success.
import { RPC_MAX_REQUEST_BYTES, RPC_METHODS, type ParamSpec } from "@vhostd/proto";
import { NET_PF, VF_A, VF_BLK, type HostileWorld } from "../harness/hostile_world.js";
import { expect, type HostileCase } from "./case.js";

const INTERNAL_ERROR = -32603;
const EINVAL = -22;

/** Judges one raw answer: a JSON-RPC error or a vfe result with errno < 0 (or a hang-up, if allowed). */
function judge(answer: string, opts: { hangupOk?: boolean; errno?: number } = {}): void {
  if (answer === "") {
    expect(opts.hangupOk, "the server hung up without an answer");
    return;
  }
  let r: any;
  try {
    r = JSON.parse(answer);
  } catch {
    throw new Error(`not JSON: ${answer.slice(0, 200)}`);
  }
  expect(r.error?.code !== INTERNAL_ERROR, `a handler crashed: ${answer.slice(0, 300)}`);
  const errno = r.error?.data?.errno ?? r.result?.errno;
  const errstr = r.error?.data?.errstr ?? r.result?.errstr;
  expect(typeof errno === "number" && errno < 0, `not refused: ${answer.slice(0, 300)}`);
  expect(typeof errstr === "string" && errstr.length > 0, `no errstr: ${answer.slice(0, 300)}`);
  if (opts.errno !== undefined) expect(errno === opts.errno, `errno ${errno}, expected ${opts.errno}: ${answer.slice(0, 300)}`);
}

const req = (method: unknown, params?: unknown, extra: Record<string, unknown> = {}) => JSON.stringify({ jsonrpc: "2.0", id: 1, method, ...(params === undefined ? {} : { params }), ...extra }) + "\n";

const framing: Array<[string, () => string | Buffer, boolean?]> = [
  ["not JSON", () => "{{{\n"],
  ["an empty batch", () => "[]\n"],
  ["a batch of one request", () => `[${req("version").trim()}]\n`],
  ["a JSON string", () => '"version"\n'],
  ["JSON null", () => "null\n"],
  ["a number", () => "42\n"],
  ["jsonrpc 1.0", () => JSON.stringify({ jsonrpc: "1.0", id: 1, method: "version" }) + "\n"],
  ["an object as id", () => JSON.stringify({ jsonrpc: "2.0", id: {}, method: "version" }) + "\n"],
  ["an id of 1000 characters", () => JSON.stringify({ jsonrpc: "2.0", id: "i".repeat(1000), method: "version" }) + "\n"],
  ["a number as method", () => req(42)],
  ["method __proto__", () => req("__proto__")],
  ["method constructor", () => req("constructor")],
  ["method toString", () => req("toString")],
  ["an unknown method", () => req("shutdown")],
  ["params as an array", () => req("vf", ["add"])],
  ["params as a string", () => req("vf", "add")],
  ["40 params", () => req("vf", Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`p${i}`, i])))],
  ["a __proto__ key in params", () => `{"jsonrpc":"2.0","id":1,"method":"vf","params":{"__proto__":{"add":true},"vfdev":"0000:af:07.5"}}\n`],
  ["a constructor key in params", () => req("vf", { constructor: true, list: true, mgmtpf: NET_PF })],
  ["no action", () => req("vf", { vfdev: "0000:af:07.5" })],
  ["two actions at once", () => req("vf", { add: true, remove: true, vfdev: "0000:af:07.5" })],
  ["an action that is not a boolean", () => req("vf", { add: "yes", vfdev: "0000:af:07.5" })],
  ["a param of another action", () => req("vf", { list: true, mgmtpf: NET_PF, disk: "/tmp/x.raw" })],
  ["params nested 20000 deep", () => `{"jsonrpc":"2.0","id":1,"method":"vf","params":${"[".repeat(20000)}${"]".repeat(20000)}}\n`],
  ["bytes that are not UTF-8", () => Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":1,"method":"'), Buffer.from([0xff, 0xfe, 0xc0]), Buffer.from('"}\n')])],
  ["a request over the size limit", () => req("vf", { add: true, vfdev: "0000:af:07.5", uuid: "u".repeat(RPC_MAX_REQUEST_BYTES) }), true],
];

function framingCases(): HostileCase[] {
  return framing.map(([name, make, hangupOk]) => ({
    area: "rpc" as const,
    name: `RPC: ${name}`,
    run: async (w: HostileWorld) => judge(await w.rpcRaw(make()), { hangupOk: !!hangupOk }),
  }));
}

/** Values of the wrong type or out of range for a param type. */
function badValues(p: ParamSpec): unknown[] {
  const t = p.type;
  switch (t.kind) {
    case "bool":
      return ["yes", 1];
    case "int":
      return ["1", 1.5, t.min - 1, t.max + 1, 1e308];
    case "size":
      return [513, -512, "1G", t.max + 512];
    case "enum":
      return ["bogus", 7];
    case "pci":
      return ["zz", "0000:af:04.5; reboot", "a".repeat(5000), 42];
    case "path":
      return ["relative.sock", "/tmp/a\u0000b.sock", "/" + "p".repeat(300), "/tmp/../etc/x.sock", 1];
    case "disk":
      return ["relative.raw", "/" + "d".repeat(5000), "/tmp/./x.raw", 0];
    case "uuid":
      return ["not-a-uuid", "g".repeat(36), 5];
    case "mac":
      return ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00", "52:54:00:zz:00:01", 7];
    default:
      return [{}];
  }
}

/** Valid values for the other params of a request, so only the param under test is at fault. */
const VALID: Record<string, unknown> = { vfdev: "0000:af:07.5", mgmtpf: NET_PF, dev: NET_PF };

function paramCases(): HostileCase[] {
  const out: HostileCase[] = [];
  for (const m of RPC_METHODS) {
    for (const [name, spec] of Object.entries(m.params)) {
      const action = m.actions.find((a) => a.required.includes(name) || a.optional.includes(name));
      if (m.actions.length > 0 && !action) continue;
      for (const v of badValues(spec)) {
        const params: Record<string, unknown> = action ? { [action.name]: true } : {};
        for (const r of action?.required ?? []) params[r] = VALID[r];
        params[name] = v;
        const shown = typeof v === "string" && v.length > 24 ? `${JSON.stringify(v.slice(0, 12))}… (${v.length} chars)` : JSON.stringify(v);
        out.push({
          area: "rpc",
          name: `RPC ${m.name}${action ? " " + action.name : ""}: ${name} = ${shown}`,
          run: async (w) => judge(await w.rpcRaw(req(m.name, params)), { errno: EINVAL }),
        });
      }
    }
  }
  return out;
}

/** Well-formed requests that would take or damage another VF's resources. */
function trespassCases(): HostileCase[] {
  const free = "0000:af:07.5";
  const cases: Array<[string, (w: HostileWorld) => Record<string, unknown> | Promise<Record<string, unknown>>, string]> = [
    ["vf add on a victim's socket", (w) => ({ add: true, vfdev: free, socket_file: w.d.sock("a") }), "vf"],
    ["vf add on the RPC socket's path", (w) => ({ add: true, vfdev: free, socket_file: w.rpcSocket, mode: "server" }), "vf"],
    ["vf add on a victim's socket spelled with ..", (w) => ({ add: true, vfdev: free, socket_file: `${w.d.dir}/../${w.d.dir.split("/").pop()}/a.sock` }), "vf"],
    ["vf add on a victim's socket spelled with //", (w) => ({ add: true, vfdev: free, socket_file: w.d.sock("a").replace(/\/([^/]+)$/, "//$1") }), "vf"],
    ["vf add on the RPC socket spelled with /./", (w) => ({ add: true, vfdev: free, socket_file: w.rpcSocket.replace(/\/([^/]+)$/, "/./$1"), mode: "server" }), "vf"],
    ["vf add of a victim's address again", (w) => ({ add: true, vfdev: VF_A, socket_file: w.d.sock("x") }), "vf"],
    ["vf add with a victim's MAC", async (w) => ({ add: true, vfdev: free, socket_file: w.d.sock("m"), mac: (await w.rpc("vf", { info: true, vfdev: VF_A })).result.device.mac }), "vf"],
    ["vf add of a blk VF on the disk another VF uses", (w) => ({ add: true, vfdev: "0000:af:06.1", socket_file: w.d.sock("y"), disk: `${w.d.dir}/h-blk.raw` }), "vf"],
    ["vf add of an address under no PF", () => ({ add: true, vfdev: "0000:00:00.7", socket_file: "/tmp/vhostd-hostile-unused.sock" }), "vf"],
    ["vf add with a disk on a net VF", (w) => ({ add: true, vfdev: free, socket_file: w.d.sock("z"), disk: "/tmp/vhostd-hostile.raw" }), "vf"],
    ["vf add with a MAC on a blk VF", (w) => ({ add: true, vfdev: "0000:af:06.1", socket_file: w.d.sock("z"), mac: "52:54:00:00:00:42" }), "vf"],
    ["mgmtpf remove of a PF with VFs", () => ({ remove: true, dev: NET_PF }), "mgmtpf"],
    ["vf remove of a VF that does not exist", () => ({ remove: true, vfdev: "0000:af:0f.5" }), "vf"],
    ["vf info of a VF that does not exist", () => ({ info: true, vfdev: "0000:af:0f.5" }), "vf"],
    ["vf list of a PF that was never added", () => ({ list: true, mgmtpf: "0000:af:00.7" }), "vf"],
    ["vf add of the blk attacker's address on the net PF's socket prefix", (w) => ({ add: true, vfdev: VF_BLK, socket_file: w.d.sock("q") }), "vf"],
  ];
  return cases.map(([name, params, method]) => ({
    area: "rpc" as const,
    name: `RPC: ${name}`,
    run: async (w: HostileWorld) => {
      judge(await w.rpcRaw(req(method, await params(w))));
    },
  }));
}

export function rpcCases(): HostileCase[] {
  return [...framingCases(), ...paramCases(), ...trespassCases()];
}
