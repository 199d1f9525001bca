import test from "ava";
import {
  RPC_METHODS,
  RpcParamError,
  VfeErr,
  VfeError,
  checkResultShape,
  errorTable,
  errstr,
  featureObject,
  methodSpec,
  normalizeMac,
  normalizePciAddr,
  socketPathAliasProblem,
  socketPathProblem,
  validateParams,
} from "../src/index.js";

const vf = methodSpec("vf")!;
const pf = methodSpec("mgmtpf")!;

test("errstr follows vfe's rte_vdpa_err_str_get", (t) => {
  t.is(errstr(0), "Success");
  t.is(errstr(-1013), "Please remove all VF devices before remove PF");
  t.is(errstr(1013), "Please remove all VF devices before remove PF");
  t.is(errstr(-1001), "PF device not found");
  t.is(errstr(-1038), "Vhost socket file already exists");
  t.is(errstr(-1042), "VF device is restoring");
  t.is(errstr(-22), "Invalid argument");
  t.is(errstr(-19), "No such device");
  t.is(errstr(-1043), "Unknown error");
  const e = new VfeError(VfeErr.ADD_VF_ALREADY_ADD, "x");
  t.deepEqual(e.fields(), { errno: -1014, errstr: "VF device already add", detail: "x" });
  t.true(errorTable().every((r) => r.errno <= 0 && r.errstr.length > 0));
});

test("PCI addresses, MACs and socket paths", (t) => {
  t.is(normalizePciAddr("af:04.5"), "0000:af:04.5");
  t.is(normalizePciAddr("0000:AF:04.5"), "0000:af:04.5");
  t.is(normalizePciAddr("0000:af:20.0"), undefined); // device > 0x1f
  t.is(normalizePciAddr("0000:af:04.8"), undefined);
  t.is(normalizePciAddr("eth0"), undefined);
  t.is(normalizeMac("52:54:00:AA:bb:01"), "52:54:00:aa:bb:01");
  t.is(normalizeMac("01:00:5e:00:00:01"), undefined);
  t.is(normalizeMac("00:00:00:00:00:00"), undefined);
  t.is(socketPathProblem("/tmp/a"), undefined);
  t.truthy(socketPathProblem("tmp/a"));
  // one spelling per socket, so no VF can alias another's socket or a reserved one
  t.regex(socketPathAliasProblem("/run/vhostd/x/../vfe-vhostd.sock")!, /component/);
  t.regex(socketPathAliasProblem("/run//vhostd/vf.sock")!, /component/);
  t.regex(socketPathAliasProblem("/run/./vf.sock")!, /component/);
  t.is(socketPathAliasProblem("/run/vhostd/vf-0000:af:04.5"), undefined);
  t.is(socketPathAliasProblem("/run/vhostd/..vf.sock"), undefined);
  t.is(socketPathProblem("/run//vhostd/vf.sock"), undefined, "a journal may name such a path: its VF comes back");
  t.truthy(socketPathProblem("/" + "a".repeat(107)));
  t.is(socketPathProblem("/" + "a".repeat(106)), undefined);
  t.truthy(socketPathProblem("/" + "é".repeat(60))); // 121 bytes
});

test("validateParams: vfe's python client params are accepted", (t) => {
  // vhostmgmt sends uuid/socket_file as null when not given.
  t.deepEqual(validateParams(vf, { add: true, vfdev: "af:04.5", socket_file: "/tmp/vhost-net0", uuid: null }), {
    action: "add",
    values: { vfdev: "0000:af:04.5", socket_file: "/tmp/vhost-net0" },
  });
  t.deepEqual(validateParams(vf, { list: true, mgmtpf: "0000:af:00.2" }).values, { mgmtpf: "0000:af:00.2" });
  t.deepEqual(validateParams(pf, { list: true, debug: true }), { action: "list", values: { debug: true } });
  t.deepEqual(validateParams(pf, { add: true, dev: "0000:af:00.2" }).action, "add");
  t.deepEqual(validateParams(methodSpec("version")!, undefined), { action: "", values: {} });
});

test("validateParams rejects what the schema does not allow", (t) => {
  const bad = (m: typeof vf, p: unknown, re: RegExp) => {
    const e = t.throws(() => validateParams(m, p), { instanceOf: RpcParamError });
    t.is(e!.errno, -22);
    t.regex(e!.detail!, re);
  };
  bad(vf, {}, /one action is required/);
  bad(vf, { add: true, remove: true, vfdev: "af:04.5" }, /only one action/);
  bad(vf, { add: "yes", vfdev: "af:04.5" }, /add: must be a boolean/);
  bad(vf, { add: true }, /vfdev is required/);
  bad(vf, { add: true, vfdev: 5 }, /vfdev: must be a string/);
  bad(vf, { add: true, vfdev: "nope" }, /not a PCI address/);
  bad(vf, { add: true, vfdev: "af:04.5", mtu: 67 }, /mtu: must be in 68..9000/);
  bad(vf, { add: true, vfdev: "af:04.5", mtu: 9001 }, /mtu/);
  bad(vf, { add: true, vfdev: "af:04.5", mtu: "1500" }, /integer/);
  bad(vf, { add: true, vfdev: "af:04.5", queue_pairs: 17 }, /1..16/);
  bad(vf, { add: true, vfdev: "af:04.5", queue_pairs: 1.5 }, /integer/);
  bad(vf, { add: true, vfdev: "af:04.5", uuid: "xyz" }, /UUID/);
  bad(vf, { add: true, vfdev: "af:04.5", mac: "ff:ff:ff:ff:ff:ff" }, /unicast/);
  bad(vf, { add: true, vfdev: "af:04.5", mode: "both" }, /client, server/);
  bad(vf, { add: true, vfdev: "af:04.5", socket_file: "relative" }, /absolute/);
  bad(vf, { add: true, vfdev: "af:04.5", bogus: 1 }, /unknown param/);
  bad(vf, { add: true, vfdev: "af:04.5", __proto__: 1, constructor: 1 }, /unknown param/);
  bad(vf, { remove: true, vfdev: "af:04.5", socket_file: "/tmp/x" }, /does not apply/);
  bad(vf, [], /params must be an object/);
  bad(vf, "add", /params must be an object/);
});

test("checkResultShape flags missing, extra and mistyped fields", (t) => {
  const fields = pf.actions.find((a) => a.name === "list")!.result;
  t.deepEqual(checkResultShape(fields, { devices: [], errno: 0, errstr: "Success" }), []);
  t.true(checkResultShape(fields, { devices: [{ pf: 1 }], errno: "0", extra: 1 }).length >= 4);
});

test("every method has help and every action has a result", (t) => {
  for (const m of RPC_METHODS) {
    t.truthy(m.help);
    for (const a of m.actions) t.true(a.result.some((f) => f.name === "errno"));
  }
});

test("featureObject is vfe's device_feature", (t) => {
  t.deepEqual(featureObject((1n << 32n) | (1n << 5n)), { value: "0x100000020", "    5": "VIRTIO_NET_F_MAC", "   32": "VIRTIO_F_VERSION_1" });
});
