// errnoOf: one sign convention (negative, as vfe's results) whatever sign the error used.
import test from "ava";
import { LinuxErrno, VfeError, errnoOf } from "../src/errors.js";

test("errnoOf reads either sign and answers negative; a fallback only when there is none", (t) => {
  t.is(errnoOf(Object.assign(new Error("x"), { errno: -2 })), -2, "Node's system errors are negative");
  t.is(errnoOf(Object.assign(new Error("x"), { errno: 17 })), -17, "a host's may be positive");
  t.is(errnoOf(new VfeError(1003)), -1003);
  t.is(errnoOf(new Error("x")), undefined);
  t.is(errnoOf(new Error("x"), LinuxErrno.EIO), -5);
  t.is(errnoOf(Object.assign(new Error("x"), { errno: 0 }), -1100), -1100, "0 is no errno");
  t.is(errnoOf(Object.assign(new Error("x"), { errno: "2" }), 5), -5);
  t.is(errnoOf(undefined, 5), -5);
  t.is(errnoOf(null), undefined);
});
