// Tests run on compiled output (tsc -b); e2e tests spawn real peers, so keep concurrency low.
export default {
  files: ["packages/*/dist/test/**/*.test.js", "test/dist/src/**/*.test.js"],
  concurrency: 1, // e2e files start busy-polling peers; two at once starve each other on 2 vCPUs
  // Without a result for this long, ava stops the run. The heaviest guest tests (ha_blk: 18 kills
  // with a TCG guest) take ~3 min on a quiet machine and 5 on a loaded one.
  timeout: "10m",
  workerThreads: false,
};
