// kill -9 against the journal: a child process changes it one durable step at a time and says
// "begin" before and "ack" after each step (an ack is what an RPC reply would wait for). We
// kill it at 10 random moments and reopen each time: every acknowledged change must be there,
// the one change in flight may or may not be, every record must be valid, no VF may exist
// without its PF, and the epoch must have advanced past every one the child announced.
import test from "ava";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Journal } from "../src/journal.js";

const CHILD = fileURLToPath(new URL("./journal_writer_child.js", import.meta.url));

interface Run {
  lines: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Runs the crash writer and SIGKILLs it `afterMs` after its first ack. */
function runAndKill(path: string, start: number, afterMs: number): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CHILD, path, "crash", String(start)], { stdio: ["ignore", "pipe", "inherit"] });
    const lines: string[] = [];
    let buf = "";
    let armed = false;
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (!armed && lines.some((l) => l.startsWith("ack "))) {
        armed = true;
        setTimeout(() => child.kill("SIGKILL"), afterMs);
      }
    });
    child.on("exit", (code, signal) => {
      if (buf) lines.push(buf); // a partial last line is not an ack (only whole lines count)
      resolve({ lines, code, signal });
    });
  });
}

test("kill -9 at 10 random moments: every acknowledged change survives, the journal stays consistent", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vhostd-journal-crash-"));
  try {
    const path = join(dir, "journal");
    // Expected presence per key after the last acknowledged change (true = put, false = removed).
    const expected = new Map<string, boolean>();
    let lastEpoch = 0;
    let totalAcks = 0;
    for (let round = 0; round < 10; round++) {
      const afterMs = 5 + Math.floor(Math.random() * 400);
      const r = await runAndKill(path, round * 1000, afterMs);
      t.is(r.signal, "SIGKILL", `round ${round}: the writer was killed, it did not fail (${r.lines.slice(-3).join(" | ")})`);
      let inFlight: string | undefined;
      let epoch = 0;
      for (const l of r.lines) {
        const [what, op, key] = l.split(" ");
        if (what === "epoch") epoch = Number(op);
        else if (what === "begin") inFlight = key;
        else if (what === "ack") {
          expected.set(key!, op === "put");
          inFlight = undefined;
          totalAcks++;
        }
      }
      t.true(epoch > lastEpoch, `round ${round}: the epoch advanced (${lastEpoch} -> ${epoch})`);
      lastEpoch = epoch;

      const j = Journal.open(path, { readOnly: true });
      const c = j.read();
      await j.close();
      t.deepEqual(c.errors, [], `round ${round}: every record is valid`);
      t.true(c.epoch >= epoch, `round ${round}: the announced epoch ${epoch} is durable (${c.epoch})`);
      const present = new Set([...c.pfs.map((p) => `pf/${p.dev}`), ...c.vfs.map((v) => `vf/${v.dev}`)]);
      for (const [key, want] of expected) {
        if (key === inFlight) continue; // killed mid-change: either outcome is right
        t.is(present.has(key), want, `round ${round} (killed ${afterMs} ms in): ${key} should be ${want ? "present" : "absent"}`);
      }
      if (inFlight) expected.set(inFlight, present.has(inFlight)); // whatever happened is now the truth
      const pfs = new Set(c.pfs.map((p) => p.dev));
      for (const v of c.vfs) t.true(pfs.has(v.pf), `round ${round}: VF ${v.dev} has its PF ${v.pf}`);
      t.log(`round ${round}: killed ${afterMs} ms after the first ack; ${r.lines.length} lines, ${c.pfs.length} PF(s), ${c.vfs.length} VF(s), in flight: ${inFlight ?? "nothing"}`);
    }
    t.true(totalAcks > 50, `the writer made progress (${totalAcks} acks)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
