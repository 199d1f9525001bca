// Tests run on compiled output (tsc -b); e2e tests spawn real peers, so keep concurrency low.
export default {
  files: ["packages/*/dist/test/**/*.test.js", "test/dist/src/**/*.test.js"],
  concurrency: 2,
  timeout: "5m",
  workerThreads: false,
};
