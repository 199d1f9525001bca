// `pnpm bench` works on this clone: --quick runs every case once (the CI smoke the bench was
// built for), and the callgrind case counts instructions for ours and DPDK's. Rates are not
// judged here (speed is measured in bench/ and recorded in docs/benchmarks.md); this checks
// that each case ran against its real peer and printed its table.
import test from "ava";
import { execFile } from "node:child_process";
import path from "node:path";
import { needPeer } from "./harness/peers.js";
import { repoRoot } from "./harness/paths.js";

const benchMain = path.join(repoRoot, "bench/dist/main.js");

function bench(args: string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [benchMain, ...args, "--no-write"], { timeout: timeoutMs, maxBuffer: 64 << 20, cwd: repoRoot }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}\n${stderr}` });
    });
  });
}

// Serial: each test busy-polls both CPUs; side by side they would only measure each other.
test.serial("pnpm bench --quick: every case runs once against its peer and prints its table", async (t) => {
  t.timeout(15 * 60_000);
  for (const peer of ["dpdk-testpmd", "qemu-system-x86_64", "qemu-storage-daemon"]) if (!needPeer(t, peer)) return;
  const r = await bench(["--quick"], 14 * 60_000);
  t.is(r.code, 0, `bench --quick failed:\n${r.out.slice(-4000)}`);
  for (const [what, re] of [
    // A row may hold "–" instead of medians when another process loaded the machine.
    ["PVP loop row", /\| PVP loop \(io, --tx-first\) \| 64 B \| 1 \| /],
    ["one-way row", /\| one-way \(flowgen → sink, both ports\) \| 64 B \| 1 \| /],
    ["latency table", /\| one-way latency, 64 B at 1000 pps, µs \|/],
    ["idle table", /\| back-end CPU, % of a core/],
    ["control-plane table", /\| add 64 VFs one by one over RPC .* \| \d/],
    ["blk table", /\| 4 KiB read, QD 1, 10000 ops \(IOPS\) \| \d/],
    ["blkhost table", /\| 4 KiB random read, QD 1 \| \d+ \| \d+ \| /],
  ] as const)
    t.regex(r.out, re, `the ${what} is printed`);
});

test.serial("pnpm bench --cases instr: callgrind counts instructions per frame for ours and DPDK's", async (t) => {
  t.timeout(10 * 60_000);
  for (const peer of ["dpdk-testpmd", "valgrind"]) if (!needPeer(t, peer)) return;
  const r = await bench(["--cases", "instr", "--sizes", "64"], 9 * 60_000);
  t.is(r.code, 0, `bench --cases instr failed:\n${r.out.slice(-4000)}`);
  const row = /\| 64 B \| (\d+) \| (\d+) \| ([\d.]+) \|/.exec(r.out);
  t.truthy(row, `the instructions table is printed:\n${r.out.slice(-2000)}`);
  if (!row) return;
  // Only sanity: a count per frame that is neither empty nor absurd (both are a few hundred).
  for (const [who, n] of [["ours", Number(row[1])], ["DPDK", Number(row[2])]] as const) t.true(n > 50 && n < 100_000, `${who}: ${n} instructions per frame`);
  t.regex(r.out, /vhd::netDeliver/, "our profile names the engine's functions");
});
