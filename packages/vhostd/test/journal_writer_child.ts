// A separate process that writes the journal, for journal*.test.ts:
//   hold  <path>: writes the PF, prints "ready", keeps the journal open; on "add" writes a VF
//                 and prints "added" (a reader in another process must see both).
//   crash <path> <start>: forever, one change at a time: prints "begin <op> <key>" before and
//                 "ack <op> <key>" after the change is durable (what the registry's reply
//                 waits for); the test kills it with SIGKILL at a random moment.
import { createInterface } from "node:readline";
import { Journal, type VfRecord } from "../src/journal.js";

const [path, mode, startArg] = process.argv.slice(2);
if (!path || !mode) {
  process.stderr.write("usage: journal_writer_child.js PATH hold|crash [START]\n");
  process.exit(2);
}
const PF = "0000:af:00.2";

/** VF number n of PF 0000:af:00.2 (stride 8 from af:04.5), as the default inventory lays them out. */
export function vfRecord(n: number): VfRecord {
  const rid = 0xaf25 + 8 * n;
  const bus = (rid >> 8) & 0xff;
  const dev = (rid >> 3) & 0x1f;
  const fn = rid & 7;
  const h = (x: number) => x.toString(16).padStart(2, "0");
  const addr = `0000:${h(bus)}:${h(dev)}.${fn}`;
  return { dev: addr, pf: PF, socketPath: `/tmp/crash-${n}.sock`, mode: n % 2 ? "server" : "client", mac: `02:00:00:00:${h(n >> 8)}:${h(n & 0xff)}`, mtu: 1500 + (n % 100), queuePairs: 1 + (n % 4), devId: n };
}

const say = (s: string) => process.stdout.write(s + "\n");
const j = Journal.open(path);

if (mode === "hold") {
  await j.putPf({ dev: PF, type: "net", switchId: 0 });
  say("ready");
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "add") {
      await j.putVf({ dev: "0000:af:04.5", pf: PF, socketPath: "/tmp/vhost-net0", mode: "client", uuid: "12345678-1234-1234-1234-1234567890ab", mac: "52:54:00:00:af:25", mtu: 9000, queuePairs: 4, devId: 7 });
      say("added");
    }
  }
} else if (mode === "crash") {
  // Cycles: PF in; 30 changes (mostly VF adds/updates, some removes); every VF out; PF out.
  // So adds, updates, removes and the PF removal all meet kill -9.
  const epoch = await j.bumpEpoch();
  say(`epoch ${epoch}`);
  let n = Number(startArg ?? 0);
  const c = j.read();
  const live = new Set(c.vfs.map((v) => v.devId));
  let pfPresent = c.pfs.length > 0;
  const step = async (op: string, key: string, act: () => Promise<void>) => {
    say(`begin ${op} ${key}`);
    await act();
    say(`ack ${op} ${key}`);
  };
  for (;;) {
    if (!pfPresent) {
      await step("put", `pf/${PF}`, () => j.putPf({ dev: PF, type: "net", switchId: 0 }));
      pfPresent = true;
    }
    for (let k = 0; k < 30; k++, n++) {
      if (k % 4 === 3 && live.size > 0) {
        const id = [...live][n % live.size]!;
        live.delete(id);
        await step("del", `vf/${vfRecord(id).dev}`, () => j.removeVf(vfRecord(id).dev));
      } else {
        const id = (n * 7) % 50;
        live.add(id);
        await step("put", `vf/${vfRecord(id).dev}`, () => j.putVf(vfRecord(id)));
      }
    }
    for (const id of [...live]) {
      live.delete(id);
      await step("del", `vf/${vfRecord(id).dev}`, () => j.removeVf(vfRecord(id).dev));
    }
    await step("del", `pf/${PF}`, () => j.removePf(PF));
    pfPresent = false;
  }
}
