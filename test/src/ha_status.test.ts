// `vfe-vhost-cli state` and `ha status` against a real pair: who runs each VF's session and
// queues (the keeper; vfe-vhostd after it took over from a dead keeper; vfe-vhostd standalone),
// the session's memory and rings, and the HA pair's view of itself (keeper pid/epoch/seq,
// heartbeat age, the mirror's copies and fds per VF, takeovers). Both output modes.
import test from "ava";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { FrontendDriver } from "@vhostd/frontend";
import { Daemon, waitFor } from "./harness/daemon.js";

const PF = "0000:af:00.2";
const VF = "0000:af:04.5";

/** GET /metrics on a unix socket. */
function scrape(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath, path: "/metrics" }, (res) => {
        let b = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (b += c));
        res.on("end", () => resolve(b));
      })
      .on("error", reject);
  });
}

async function withDriver(d: Daemon): Promise<FrontendDriver> {
  const p = FrontendDriver.listen(d.sock("a"), { connectTimeoutMs: 10_000 });
  await d.ok(["mgmtpf", "-a", PF]);
  await d.ok(["vf", "-a", VF, "-v", d.sock("a")]);
  const drv = await p;
  await drv.handshake();
  return drv;
}

test.serial("state and ha status show the keeper running the VF, vfe-vhostd after a takeover, and the keeper again after the hand-back", async (t) => {
  const metrics = path.join(os.tmpdir(), `vhostd-ha-metrics-${process.pid}.sock`);
  const d = await Daemon.start({ ha: true, args: ["--metrics", `unix:${metrics}`] });
  let drv: FrontendDriver | undefined;
  try {
    drv = await withDriver(d);
    await waitFor(async () => (await d.ok(["state", VF])).devices[0].state === "running", 5000, "session running");
    const st = (await d.ok(["state"])).devices;
    t.is(st.length, 1);
    const s = st[0];
    t.is(s.vf, VF);
    t.is(s.owner, "vfe-vhostd-ha", "the keeper runs the session");
    t.true(s.memory_regions.length >= 1 && /^0x[0-9a-f]+$/.test(s.memory_regions[0].size));
    t.true(s.vrings.length >= 2);
    for (const r of s.vrings) {
      t.true(r.started, `ring ${r.index} runs`);
      t.is(r.owner, "vfe-vhostd-ha");
      t.regex(r.desc, /^0x[0-9a-f]+$/);
    }
    const table = await d.cli(["state", VF, "-o", "table"]);
    t.is(table.code, 0);
    t.regex(table.stdout, /OWNER/);
    t.regex(table.stdout, /vfe-vhostd-ha/);
    t.regex(table.stdout, /vrings:/);

    const ha = await d.ok(["ha", "status"]);
    t.is(ha.mode, "ha");
    t.true(ha.keeper.connected);
    t.is(typeof ha.keeper.pid, "number");
    t.true(ha.keeper.epoch >= 1);
    t.true(ha.keeper.heartbeat_age_ms < 5000);
    t.is(ha.keeper.vfs, 1);
    t.is(ha.keeper.reconnects, 0, "the first welcome is not a reconnect");
    t.true(ha.mirror.connected);
    t.is(ha.mirror.copies, 1, "vfe-vhostd holds a copy of the session");
    t.true(ha.mirror.fds_per_vf[VF] >= 4, "connection, memory and ring fds are held");
    t.deepEqual(ha.mirror.running, []);
    t.is(ha.mirror.exit_watch, "beacon", "a killed keeper is noticed through its exit beacon, not by polling /proc");
    const noAge = (r: { keeper: Record<string, unknown> }) => ({ ...r, keeper: { ...r.keeper, heartbeat_age_ms: 0 } });
    t.deepEqual(noAge(await d.ok(["ha", "-S"])), noAge(ha), "-S is the same action");
    const haTable = await d.cli(["ha", "status", "-o", "table"]);
    t.regex(haTable.stdout, /mirror\.copies\s+1/);

    await d.killKeeper();
    await waitFor(async () => (await d.ok(["ha", "status"])).mirror.running.length === 1, 5000, "vfe-vhostd took over");
    const after = await d.ok(["ha", "status"]);
    t.is(after.mirror.takeovers, 1);
    t.is(after.mirror.last_takeover.vfs, 1);
    t.false(after.keeper.connected, "the keeper is shown gone as soon as its death is seen, not a heartbeat timeout later");
    const s2 = (await d.ok(["state", VF])).devices[0];
    t.is(s2.owner, "vfe-vhostd", "vfe-vhostd runs it now");
    t.is(s2.state, "running");
    t.is(s2.reconnects, 0, "no reconnect");
    t.true(s2.vrings.every((r: { owner: string }) => r.owner === "vfe-vhostd"));

    await d.startKeeper();
    await waitFor(async () => (await d.ok(["state", VF])).devices[0].owner === "vfe-vhostd-ha", 5000, "the keeper took it back");
    const back = await d.ok(["ha", "status"]);
    t.deepEqual(back.mirror.running, []);
    t.is(back.mirror.copies, 1);
    await waitFor(async () => (await d.ok(["ha", "status"])).keeper.connected === true, 5000, "keeper connected again");
    await waitFor(async () => (await d.ok(["ha", "status"])).mirror.exit_watch === "beacon", 5000, "the restarted keeper's beacon is watched");
    t.is((await d.ok(["ha", "status"])).keeper.reconnects, 1, "the keeper's return is counted");
    const text = await scrape(metrics);
    t.regex(text, /^vhostd_keeper_reconnects_total 1$/m);
    t.regex(text, /^vhostd_takeovers_total 1$/m);
    t.regex(text, /^vhostd_keeper_connected 1$/m);
  } finally {
    drv?.close();
    await d.stop();
  }
});

test.serial("standalone: ha status says so and state shows vfe-vhostd running the VF", async (t) => {
  const d = await Daemon.start();
  let drv: FrontendDriver | undefined;
  try {
    drv = await withDriver(d);
    const ha = await d.ok(["ha", "status"]);
    t.is(ha.mode, "standalone");
    t.is(ha.keeper, undefined);
    await waitFor(async () => (await d.ok(["state"])).devices[0].state === "running", 5000, "session running");
    t.is((await d.ok(["state"])).devices[0].owner, "vfe-vhostd");
    const bad = await d.cli(["state", "0000:af:09.5"]);
    t.not(bad.code, 0, "an unknown VF is an error with a non-zero exit status");
  } finally {
    drv?.close();
    await d.stop();
  }
});
