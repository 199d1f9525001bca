// pnpm bench's command line: which cases, how many runs, which frame sizes and queue pairs.
export const CASES = ["pvp", "oneway", "latency", "idle", "control", "blk", "blkhost", "instr"] as const;

export interface Opts {
  quick: boolean;
  runs: number;
  cases: Set<string>;
  sizes: number[];
  qps: number[];
  warmupMs: number;
  windowMs: number;
  idleMs: number;
  write: boolean;
  argv: string[];
}

function usage(): never {
  console.log(`usage: pnpm bench [--quick] [--cases ${CASES.join(",")}] [--runs N] [--sizes 64,1518] [--qps 1,2] [--window S] [--no-write]

  pvp     testpmd front-end, two virtio-user ports in io forwarding (--tx-first) looped through
          two VFs of one PF (ours) or through testpmd net_vhost ports in io forwarding (DPDK)
  oneway  the same two ports in flowgen: each port generates (as txonly) and sinks (as rxonly);
          no loop, so the rate is not bounded by the frames in flight
  latency the project's driver sends 64 B frames at 1000 pps from one port to the other through
          two VFs of one PF (ours) or two net_vhost ports in io forwarding (DPDK); each frame
          carries its send time: one-way latency percentiles at the receiving port
  idle    CPU and RSS of the back-end with 8 connected front-end ports that send nothing
  control the HA pair with 512 VFs (64 with --quick): add time, restore after kill -9 of
          vfe-vhostd, takeover after kill -9 of the keeper, keeper restart, idle CPU, RSS, journal
  blk     one QEMU guest's dd workloads (sequential 1 MiB, 4 KiB at QD 1 and 32, flush) on our
          blk VF and on qemu-storage-daemon's vhost-user-blk export of the same file
  blkhost the project's driver (no guest) keeps 4 KiB random reads / writes in flight at QD 1
          and 32 on our blk VF and on qemu-storage-daemon, same file: IOPS, latency, CPU/request
  instr   instructions per frame of each back-end's datapath, counted by callgrind (valgrind)
          while a one-way front-end saturates it; one run per size (not with --quick)
  cost    (always) CPU seconds per million packets of each back-end, measured in pvp/oneway

  --quick   one short run per case, 64 B, 1 queue pair (CI smoke)
  --runs N  A/B pairs per variant (default 5), alternating which goes first
  --no-write  print only; do not append to docs/benchmarks.md`);
  process.exit(0);
}

export function parseOpts(argv: string[]): Opts {
  const o: Opts = { quick: false, runs: 5, cases: new Set(CASES), sizes: [64, 1518], qps: [1, 2], warmupMs: 2000, windowMs: 5000, idleMs: 10_000, write: true, argv };
  let runsSet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--") continue;
    else if (a === "-h" || a === "--help") usage();
    else if (a === "--quick") o.quick = true;
    else if (a === "--no-write") o.write = false;
    else if (a === "--runs") (o.runs = Number(val())), (runsSet = true);
    else if (a === "--window") o.windowMs = Number(val()) * 1000;
    else if (a === "--sizes") o.sizes = val().split(",").map(Number);
    else if (a === "--qps") o.qps = val().split(",").map(Number);
    else if (a === "--cases") {
      const list = val().split(",").filter((c) => c !== "cost");
      for (const c of list) if (!(CASES as readonly string[]).includes(c)) throw new Error(`unknown case ${c} (cases: ${CASES.join(", ")}, cost)`);
      o.cases = new Set(list.length ? list : ["pvp", "oneway"]);
    } else throw new Error(`unknown option ${a} (--help)`);
  }
  if (o.quick) {
    if (!runsSet) o.runs = 1;
    o.sizes = [64];
    o.qps = [1];
    o.warmupMs = 1000;
    o.windowMs = 3000;
    o.idleMs = 3000;
    o.cases.delete("instr"); // minutes of valgrind start-up: not a smoke test
  }
  if (!(o.runs >= 1) || o.sizes.some((s) => !(s >= 60 && s <= 9000)) || o.qps.some((q) => !(q >= 1 && q <= 8)) || !(o.windowMs >= 2000)) throw new Error("bad --runs/--sizes/--qps/--window");
  return o;
}
