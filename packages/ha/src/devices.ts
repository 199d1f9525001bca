// The "devices" table as the keeper reads it: pf/<DEV> and vf/<DEV> entries. Whatever arrives
// on the sync socket or sits in the replica journal is untrusted, and validated by the one
// device record validator of @vhostd/proto (the same rules and errors as vfe-vhostd's journal).
import { parseDeviceEntry, type DeviceEntry } from "@vhostd/proto";

export { parseDeviceEntry, type DeviceEntry };

/** Same content, whatever the key order (the keeper's "is this already running?" test). */
export function sameValue(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isObj(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  return JSON.stringify(v) ?? "undefined";
}

function isObj(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}
