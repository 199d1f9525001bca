// Checking a request's params against the schema (rpc_schema.ts), and a result's shape.
import { LinuxErrno, VfeError } from "./errors.js";
import type { ActionSpec, MethodSpec, ParamSpec, ResultField } from "./rpc_schema.js";
import { diskPathProblem, isUuid, normalizeMac, normalizePciAddr, socketPathAliasProblem, socketPathProblem } from "./values.js";

/** Why params were rejected (maps to JSON-RPC -32602 with errno -EINVAL). */
export class RpcParamError extends VfeError {
  constructor(detail: string) {
    super(LinuxErrno.EINVAL, detail);
    this.name = "RpcParamError";
  }
}

export interface ValidatedParams {
  /** The action flag ("" for methods without actions). */
  action: string;
  /** Present params, normalized (PCI addresses canonical, MAC lowercase). */
  values: Record<string, string | number | boolean>;
}

/** Checks and normalizes one param value; throws RpcParamError. */
export function checkParamValue(name: string, spec: ParamSpec, v: unknown): string | number | boolean {
  const t = spec.type;
  const bad = (what: string) => new RpcParamError(`${name}: ${what}`);
  switch (t.kind) {
    case "bool":
      if (typeof v !== "boolean") throw bad("must be a boolean");
      return v;
    case "int":
      if (typeof v !== "number" || !Number.isInteger(v)) throw bad("must be an integer number");
      if (v < t.min || v > t.max) throw bad(`must be in ${t.min}..${t.max}`);
      return v;
    case "size":
      if (typeof v !== "number" || !Number.isSafeInteger(v)) throw bad("must be an integer number of bytes");
      if (v < t.min || v > t.max) throw bad(`must be in ${t.min}..${t.max} bytes`);
      if (v % 512 !== 0) throw bad("must be a multiple of 512 bytes");
      return v;
    case "enum":
      if (typeof v !== "string" || !t.values.includes(v)) throw bad(`must be one of ${t.values.join(", ")}`);
      return v;
    default:
      break;
  }
  if (typeof v !== "string") throw bad("must be a string");
  switch (t.kind) {
    case "pci": {
      const n = normalizePciAddr(v);
      if (!n) throw bad(`"${v.slice(0, 64)}" is not a PCI address (domain:bus:slot.func)`);
      return n;
    }
    case "path": {
      const p = socketPathProblem(v) ?? socketPathAliasProblem(v);
      if (p) throw bad(p);
      return v;
    }
    case "disk": {
      const p = diskPathProblem(v);
      if (p) throw bad(p);
      return v;
    }
    case "uuid":
      if (!isUuid(v)) throw bad("must be a UUID (8-4-4-4-12 hex digits)");
      return v.toLowerCase();
    case "mac": {
      const m = normalizeMac(v);
      if (!m) throw bad("must be a unicast, non-zero MAC address xx:xx:xx:xx:xx:xx");
      return m;
    }
  }
}

/**
 * Validates a request's params against the schema. `params` may be absent (treated as {}).
 * Keys with null values are ignored (vfe's python client sends "uuid": null and the like).
 * Exactly one action flag must be true; keys not applicable to the action are rejected.
 */
export function validateParams(method: MethodSpec, params: unknown): ValidatedParams {
  if (params === undefined || params === null) params = {};
  if (typeof params !== "object" || Array.isArray(params)) throw new RpcParamError("params must be an object");
  const entries = Object.entries(params as Record<string, unknown>).filter(([, v]) => v !== null);
  if (entries.length > 32) throw new RpcParamError("too many params");
  const present = new Map(entries);

  let action: ActionSpec | undefined;
  if (method.actions.length > 0) {
    const chosen: ActionSpec[] = [];
    for (const a of method.actions) {
      const v = present.get(a.name);
      if (v === undefined) continue;
      if (typeof v !== "boolean") throw new RpcParamError(`${a.name}: must be a boolean`);
      present.delete(a.name);
      if (v) chosen.push(a);
    }
    if (chosen.length !== 1) {
      throw new RpcParamError(
        chosen.length === 0
          ? `one action is required: ${method.actions.map((a) => a.name).join(", ")}`
          : `only one action at a time (got ${chosen.map((a) => a.name).join(", ")})`,
      );
    }
    action = chosen[0]!;
  }

  const allowed = new Set(action ? [...action.required, ...action.optional] : Object.keys(method.params));
  const values: Record<string, string | number | boolean> = {};
  for (const [k, v] of present) {
    const spec = method.params[k];
    if (!spec || !Object.prototype.hasOwnProperty.call(method.params, k)) {
      throw new RpcParamError(`unknown param "${k.slice(0, 64)}"`);
    }
    if (!allowed.has(k)) throw new RpcParamError(`param "${k}" does not apply to ${method.name}${action ? " " + action.name : ""}`);
    values[k] = checkParamValue(k, spec, v);
  }
  for (const r of action?.required ?? []) {
    if (!(r in values)) throw new RpcParamError(`${r} is required for ${method.name} ${action!.name}`);
  }
  return { action: action?.name ?? "", values };
}

/** The fields a result of `method`/`action` may carry ("" for methods without actions). */
export function resultFields(method: MethodSpec, action: string): readonly ResultField[] {
  if (method.actions.length === 0) return method.result ?? [];
  return method.actions.find((a) => a.name === action)?.result ?? [];
}

/** Problems of `value` against `fields` (empty if it conforms). Extra keys are problems too. */
export function checkResultShape(fields: readonly ResultField[], value: unknown, path = "result"): string[] {
  const problems: string[] = [];
  if (typeof value !== "object" || value === null || Array.isArray(value)) return [`${path}: not an object`];
  const obj = value as Record<string, unknown>;
  const known = new Set(fields.map((f) => f.name));
  for (const k of Object.keys(obj)) if (!known.has(k)) problems.push(`${path}.${k}: not in the schema`);
  for (const f of fields) {
    const v = obj[f.name];
    const p = `${path}.${f.name}`;
    if (v === undefined) {
      if (!f.optional) problems.push(`${p}: missing`);
      continue;
    }
    const actual = Array.isArray(v) ? "array" : v === null ? "null" : typeof v;
    if (actual !== f.type) {
      problems.push(`${p}: ${actual}, expected ${f.type}`);
      continue;
    }
    if (f.fields && f.type === "object") problems.push(...checkResultShape(f.fields, v, p));
    if (f.fields && f.type === "array") (v as unknown[]).forEach((e, i) => problems.push(...checkResultShape(f.fields!, e, `${p}[${i}]`)));
  }
  return problems;
}
