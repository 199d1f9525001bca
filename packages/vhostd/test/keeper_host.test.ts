// How vfe-vhostd reads a keeper's refusal: the nack's numeric errno, or (a keeper older than
// that field, for one release) the "[errno N]" its reason started with.
import test from "ava";
import { VfeError } from "@vhostd/proto";
import { HaSyncError } from "../src/keeper_sync_client.js";
import { keeperError } from "../src/keeper_host.js";

test("a nack's errno is the refusal's errno; its text keeps the keeper's reason", (t) => {
  const e = keeperError(new HaSyncError("apply_failed", "delta 3 not applied: devId 3 is used by VF 0000:af:04.5", -17)) as Error & { errno?: number };
  t.is(e.errno, -17);
  t.is(e.message, "keeper: devId 3 is used by VF 0000:af:04.5");
});

test("an older keeper's [errno N] text is still read", (t) => {
  const e = keeperError(new HaSyncError("apply_failed", "delta 3 not applied: [errno -2] cannot serve /x.sock: bind ENOENT")) as Error & { errno?: number };
  t.is(e.errno, -2);
  const none = keeperError(new HaSyncError("apply_failed", "delta 3 not applied: replica write failed")) as Error & { errno?: number };
  t.is(none.errno, undefined, "no errno: the registry answers with its own code");
});

test("a keeper that does not answer or is gone: ETIMEDOUT, EAGAIN", (t) => {
  t.is((keeperError(new HaSyncError("timeout", "no ack")) as VfeError).errno, -110);
  t.is((keeperError(new HaSyncError("closed", "gone")) as VfeError).errno, -11);
});
