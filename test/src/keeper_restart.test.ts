// The real keeper process (bin/vfe-vhostd-ha.js) with the real engine: VFs sent over the sync
// channel carry traffic between two driver front-ends; kill -9 of the keeper and a restart
// bring every VF back from the replica journal by itself (no vhostd involved), the
// front-ends reconnect (expected in HA phase 1) and traffic flows again.
import test from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { FrontendDriver } from "@vhostd/frontend";
import { haSyncEndpoint } from "@vhostd/proto";
import { pfKey, pfRecordValue as pfValue, vfKey, vfRecordValue as vfValue } from "@vhostd/proto";
import type { VfSpec } from "@vhostd/runtime";
import { HaClient } from "@vhostd/vhostd";
import { keeperBin } from "./harness/paths.js";

const dir = mkdtempSync(path.join(tmpdir(), "vhostd-keeper-proc-"));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const log = pino({ level: "silent" });
const PF = "0000:af:00.2";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function startKeeper(): ChildProcess {
  const out = openSync(path.join(dir, "keeper.log"), "a");
  const p = spawn(process.execPath, [keeperBin, "--run-dir", dir, "--state-dir", dir, "--log-level", "debug"], { stdio: ["ignore", out, out] });
  closeSync(out);
  return p;
}

function spec(i: number): VfSpec {
  return { dev: `0000:af:0${4 + i}.5`, pf: PF, kind: "net", devId: i, switchId: 0, socketPath: path.join(dir, `fe${i}.sock`), mode: "client", mac: `52:54:00:00:af:${(0x25 + 8 * i).toString(16)}`, mtu: 1500, queuePairs: 1 };
}

test.serial("kill -9 of the keeper: it restores every VF from its replica journal; front-ends reconnect and traffic resumes", async (t) => {
  let keeper = startKeeper();
  const fo = { connectTimeoutMs: 15_000 };
  const [sa, sb] = [spec(0), spec(1)];
  const aP = FrontendDriver.listen(sa.socketPath, fo);
  const bP = FrontendDriver.listen(sb.socketPath, fo);
  const c = new HaClient({ endpoint: haSyncEndpoint(dir), log, epoch: 1, heartbeatMs: 100, peerTimeoutMs: 1000, requestTimeoutMs: 5000 });
  await c.connect();
  await c.hello();
  await c.send([{ op: "put", table: "devices", key: pfKey(PF), value: pfValue(PF, 0, "net") }]);
  await c.send([{ op: "put", table: "devices", key: vfKey(sa.dev), value: vfValue(sa) }]);
  await c.send([{ op: "put", table: "devices", key: vfKey(sb.dev), value: vfValue(sb) }]);
  c.close(); // the keeper needs no vhostd to restore
  const [a, b] = await Promise.all([aP, bP]);
  try {
    await Promise.all([a.handshake(), b.handshake()]);
    b.device.startRx(0);
    a.device.startTx(0, { dstMac: b.mac, srcMac: a.mac, frameSize: 256, count: 10_000_000, ratePps: 10_000, streamId: 1 });
    await until(() => b.device.stats(0).rxPackets > 1000, 10_000, "traffic before the kill");

    for (let round = 0; round < 3; round++) {
      const exited = new Promise((r) => keeper.once("exit", r));
      keeper.kill("SIGKILL");
      await exited;
      const t0 = Date.now();
      keeper = startKeeper();
      // The drivers wait for the keeper's client-mode VFs to connect again, then renegotiate.
      await Promise.all([a.closed, b.closed]);
      await Promise.all([a.reconnect(), b.reconnect()]);
      await Promise.all([a.handshake(), b.handshake()]);
      const reconnectMs = Date.now() - t0;
      const base = b.device.stats(0).rxPackets;
      await until(() => b.device.stats(0).rxPackets > base + 1000, 10_000, `traffic after keeper restart ${round}`);
      t.log({ round, reconnectMs });
    }
    const logText = readFileSync(path.join(dir, "keeper.log"), "utf8");
    t.is((logText.match(/restored 1 PF\(s\) and 2 VF\(s\) from the replica journal/g) ?? []).length, 3, "each restart restored both VFs");
  } finally {
    a.close();
    b.close();
    keeper.kill("SIGTERM");
    await new Promise((r) => keeper.once("exit", r));
  }
});
