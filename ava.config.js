// Tests run on compiled output (tsc -b); e2e tests spawn real peers, so keep concurrency low.
export default {
  files: ["packages/*/dist/test/**/*.test.js", "test/dist/src/**/*.test.js"],
  concurrency: 1, // e2e files start busy-polling peers; two at once starve each other on 2 vCPUs
  timeout: "5m",
  workerThreads: false,
};
