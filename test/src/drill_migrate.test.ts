// `vfe-vhost-cli drill --migrate` end to end, as an operator runs it: two fresh pairs as two
// hosts, a real QEMU guest with a net and a blk VF moved A -> B -> A -> B -> A while it
// writes and verifies its disk and the bridge pings it, vfe-vhostd killed on the source
// during pre-copy and on the destination right after switch-over. The drill's verdict is
// checked, and its figures against what they claim.
import test from "ava";
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import { needPeer } from "./harness/peers.js";
import { cliBin } from "./harness/paths.js";
import { guestDir } from "./harness/qemu.js"; // also points VHOSTD_GUEST_DIR at the tests' image

function netnsList(): string[] {
  return execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n").filter((l) => l.startsWith("vhdrill"));
}

test.serial("drill --migrate: four hops with vfe-vhostd killed during pre-copy and after switch-over; every block verifies, losses fit the downtimes", async (t) => {
  if (!needPeer(t, "qemu-system-x86_64") || !needPeer(t, "ip") || !needPeer(t, "ping")) return;
  const dirsBefore = new Set(fs.readdirSync("/tmp").filter((n) => n.startsWith("vhostd-drill-")));
  const drill = () =>
    new Promise<{ code: number; stderr: string; stdout: string }>((resolve) => {
      execFile(process.execPath, [cliBin, "drill", "--migrate", "--hops", "4", "--json"], { timeout: 900_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
      );
    });
  let r = await drill();
  // One more run only when the guest kernel crashed and nothing else broke: QEMU 7.2's TCG
  // migration loses guest-CPU writes on this 2-vCPU host, also with no vhost-user device at all
  // (scripts/migration-memcmp.mjs --qemu-only; docs/recovery.md), in about 1 run in 8. Any other
  // failure, or a second crash, fails the test.
  const broken = (() => {
    try {
      return JSON.parse(r.stdout).broken as string[];
    } catch {
      return undefined;
    }
  })();
  if (r.code !== 0 && broken?.length && broken.every((b) => /the guest kernel crashed after the move|the guest crashed on host/.test(b))) {
    t.log(`first run: the guest crashed (QEMU's TCG memory loss, see docs/recovery.md); running once more. ${broken.join("; ")}`);
    r = await drill();
  }
  t.log(r.stderr.trim());
  t.is(r.code, 0, `${r.stderr}\n${r.stdout.slice(-6000)}`);
  const rep = JSON.parse(r.stdout);
  t.is(rep.mode, "migrate");
  if (!rep.ok) t.log(JSON.stringify(rep.hops, null, 1));
  t.true(rep.ok, JSON.stringify(rep.broken));
  t.deepEqual(
    rep.hops.map((h: { from: string; to: string; kill: string }) => `${h.from}>${h.to} ${h.kill}`),
    ["A>B none", "B>A vhostd on source during pre-copy", "A>B vhostd on destination after switch-over", "B>A vhostd on source during pre-copy"],
  );
  for (const h of rep.hops) {
    if (h.kill.endsWith("pre-copy")) t.is(h.statusAtKill, "active", `hop ${h.hop}: the kill landed during pre-copy`);
    t.true(h.downtimeMs > 0 && h.totalMs >= h.downtimeMs, `hop ${h.hop}: QEMU's figures`);
    t.true(h.pingsSent > 0, `hop ${h.hop}: pings ran across it`);
    t.true(h.pingsLost <= h.allowedLost, `hop ${h.hop}: lost ${h.pingsLost}, allowed ${h.allowedLost}`);
    t.true(h.longestGapMs > 0 && h.longestGapMs < 30_000, `hop ${h.hop}: the longest ping gap (${h.longestGapMs} ms) was measured`);
  }
  t.like(rep.disk, { failed: 0, ioErrors: 0, finalMismatches: 0, kernelIoErrors: 0 });
  t.true(rep.disk.rounds > 4, "the disk loop ran through the hops");
  t.true(rep.pings.sent > 100);
  // Nothing left behind: no namespace, no directory, no process.
  t.deepEqual(netnsList(), []);
  t.deepEqual(fs.readdirSync("/tmp").filter((n) => n.startsWith("vhostd-drill-") && !dirsBefore.has(n)), []);
  t.true(fs.existsSync(`${guestDir()}/vmlinuz`));
});
