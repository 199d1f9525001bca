// Field-by-field checks for msgpack bodies from a peer (HA sync, fd and mirror channels).
// Every check throws SyncError naming the message type and the field, and only SyncError.
import { SyncError } from "./keeper_sync.js";

export function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 32 ? v.slice(0, 32) + "…" : v);
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return String(v);
  if (typeof v === "bigint") return `${v}n`;
  return Array.isArray(v) ? "an array" : typeof v;
}

export type Body = Record<string, unknown>;

export function isPlainObject(v: unknown): v is Body {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function fail(type: string, field: string, what: string): never {
  throw new SyncError("invalid", `${type}.${field} ${what}`);
}

/** Checks that a body has exactly these fields (unknown fields are a version mismatch waiting to happen). */
export function fields(type: string, body: unknown, required: readonly string[], optional: readonly string[] = []): Body {
  if (!isPlainObject(body)) throw new SyncError("invalid", `${type} body is not a map`);
  for (const k of required) if (!Object.hasOwn(body, k)) fail(type, k, "is missing");
  for (const k of Object.keys(body))
    if (!required.includes(k) && !optional.includes(k)) fail(type, k, "is not a field of this message");
  return body;
}

export function int(type: string, body: Body, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = body[field];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    fail(type, field, `must be an integer in [${min}, ${max}], got ${describe(v)}`);
  return v;
}

export function str(type: string, body: Body, field: string, maxLen: number, minLen = 0): string {
  const v = body[field];
  if (typeof v !== "string" || v.length < minLen || v.length > maxLen)
    fail(type, field, `must be a string of ${minLen}..${maxLen} characters`);
  return v;
}

export function oneOf<T extends string>(type: string, body: Body, field: string, allowed: readonly T[]): T {
  const v = body[field];
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v))
    fail(type, field, `must be one of ${allowed.join(", ")}, got ${describe(v)}`);
  return v as T;
}

