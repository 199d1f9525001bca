// What a guest `dd conv=fsync` costs on each back-end, and why (docs/benchmarks.md, "Flush").
// One QEMU guest per run does 200 × (4 KiB write + fsync) on /dev/vda, then 200 × 4 KiB
// O_DIRECT writes, and prints the cache mode it sees and /sys/block/vda/stat before and after:
// so the requests each back-end gets per operation are counted, not guessed. Runs alternate
// ours (write-back, our default), ours switched to write-through by the guest, and
// qemu-storage-daemon. Usage, after `pnpm run build`: node bench/flush_modes.mjs [ROUNDS]
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import { Guest, commandOutput, shellCmdArgs } from "@vhostd/test/harness/qemu";
import { Daemon, sleep } from "@vhostd/test/harness/daemon";

const ROUNDS = Number(process.argv[2] ?? 2);
const N = 200;
const dir = fs.mkdtempSync("/tmp/vhostd-flush-");
const disk = `${dir}/disk.raw`;
execFileSync("dd", ["if=/dev/urandom", `of=${disk}`, "bs=1M", "count=64", "status=none"]);
const loop = (dd) => `i=0; while [ $i -lt ${N} ]; do ${dd}; i=$((i+1)); done`;
const script = (wt) =>
  (wt ? 'echo "write through" > /sys/block/vda/queue/write_cache; ' : "") +
  "t(){ awk '{printf \"%d\", $1 * 1000}' /proc/uptime; }; echo mode=$(cat /sys/block/vda/queue/write_cache | tr ' ' -); " +
  "echo s0=$(cat /sys/block/vda/stat); a=$(t); " + loop("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=$i conv=fsync,notrunc status=none") +
  "; echo fsync_ms=$(( $(t) - a )); echo s1=$(cat /sys/block/vda/stat); a=$(t); " + loop("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=$i oflag=direct conv=notrunc status=none") +
  "; echo direct_ms=$(( $(t) - a )); echo s2=$(cat /sys/block/vda/stat)";

async function guest(sock, name, wt) {
  const run = await Guest.boot({ blk: [{ socket: sock, server: false }], test: "shell-cmd", args: shellCmdArgs(script(wt)), logFile: `${dir}/guest-${name}.log`, timeoutMs: 600_000 });
  const out = commandOutput(run.output) ?? "";
  const v = Object.fromEntries([...out.matchAll(/^(\w+)=(.*)$/gm)].map((m) => [m[1], m[2].trim()]));
  // /sys/block/*/stat: field 5 = writes completed, 8 = write ticks (ms), 16 = flushes completed.
  const st = (k) => (v[k] ?? "").split(/\s+/).map(Number);
  const [s0, s1] = [st("s0"), st("s1")];
  return {
    mode: v.mode,
    fsyncMsPerOp: Number(v.fsync_ms) / N,
    directMsPerOp: Number(v.direct_ms) / N,
    writesPerOp: (s1[4] - s0[4]) / N,
    flushesPerOp: ((s1[15] ?? 0) - (s0[15] ?? 0)) / N,
    deviceMsPerWrite: (s1[7] - s0[7]) / Math.max(1, s1[4] - s0[4]),
  };
}
async function ours(wt) {
  const d = await Daemon.start();
  try {
    await d.ok(["mgmtpf", "-a", "0000:af:00.3"]);
    await d.ok(["vf", "-a", "0000:af:05.1", "-v", `${dir}/ours.sock`, "--server", "--disk", disk]);
    return await guest(`${dir}/ours.sock`, wt ? "ours-wt" : "ours-wb", wt);
  } finally {
    await d.stop();
  }
}
async function qsd() {
  const sock = `${dir}/qsd.sock`;
  fs.rmSync(sock, { force: true });
  const q = spawn("qemu-storage-daemon", ["--blockdev", `driver=file,node-name=f0,filename=${disk},cache.direct=off,aio=threads`, "--export", `type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=${sock},writable=on,num-queues=1`], { stdio: "ignore" });
  try {
    for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await sleep(50);
    return await guest(sock, "qsd", false);
  } finally {
    q.kill("SIGTERM");
  }
}
const rows = [];
for (let r = 0; r < ROUNDS; r++)
  for (const [name, run] of [["ours (write-back)", () => ours(false)], ["ours (write-through)", () => ours(true)], ["qemu-storage-daemon", qsd]]) {
    const x = await run();
    rows.push({ backend: name, ...x });
    console.error(`${name}: ${JSON.stringify(x)}`);
  }
console.table(rows.map((x) => ({ ...x, fsyncMsPerOp: x.fsyncMsPerOp.toFixed(2), directMsPerOp: x.directMsPerOp.toFixed(2), deviceMsPerWrite: x.deviceMsPerWrite.toFixed(2) })));
fs.rmSync(dir, { recursive: true, force: true });
process.exit(0);
