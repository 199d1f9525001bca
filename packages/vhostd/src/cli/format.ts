// Output of vfe-vhost-cli: JSON (vfe-compatible, indent 2) or readable tables.

/** Columns shown by `-o table` for device lists (others stay in JSON). */
const VF_COLUMNS = ["vf", "type", "state", "connected", "mode", "socket_file", "mac", "mtu", "queue_pairs", "dev_id", "vm_uuid"];
const STATS_COLUMNS = ["vf", "state", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_pps", "tx_pps", "drops", "errors"];
const STATE_COLUMNS = ["vf", "owner", "state", "connected", "reconnects", "features", "mode", "socket_file"];
const PF_COLUMNS = ["pf", "type", "switch_id", "vfs", "num_vfs", "first_vf", "vf_stride", "first_vf_offset", "mtu", "queue_pairs", "max_queue_pairs"];

export function formatJson(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function renderTable(rows: Array<Record<string, unknown>>, columns?: string[]): string {
  if (rows.length === 0) return "(none)\n";
  const cols = (columns ?? [...new Set(rows.flatMap((r) => Object.keys(r)))]).filter((c) => rows.some((r) => r[c] !== undefined));
  const cells = rows.map((r) => cols.map((c) => cell(r[c])));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (vals: string[]) => vals.map((v, i) => (i === vals.length - 1 ? v : v.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(cols.map((c) => c.toUpperCase())), ...cells.map(line)].join("\n") + "\n";
}

function keyValues(obj: Record<string, unknown>, prefix = ""): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(obj)) {
    if (Array.isArray(v)) continue;
    if (v && typeof v === "object") {
      if (k === "device_feature") out.push([prefix + k, cell((v as Record<string, unknown>).value) + " " + Object.entries(v).filter(([n]) => n !== "value").map(([, name]) => name).join(" ")]);
      else out.push(...keyValues(v as Record<string, unknown>, `${prefix}${k}.`));
    } else out.push([prefix + k, cell(v)]);
  }
  return out;
}

function renderKv(obj: Record<string, unknown>): string {
  const kv = keyValues(obj);
  const w = Math.max(0, ...kv.map(([k]) => k.length));
  return kv.map(([k, v]) => `${k.padEnd(w)}  ${v}`.trimEnd()).join("\n") + "\n";
}

/** A result as readable text (errno/errstr omitted on success). */
export function formatTable(result: Record<string, unknown>): string {
  const { errno, errstr, detail, ...rest } = result;
  void detail;
  let out = "";
  if (Array.isArray(rest.devices)) {
    const rows = rest.devices as Array<Record<string, unknown>>;
    const isState = rows.length > 0 && "owner" in rows[0]!;
    const isStats = rows.length > 0 && "rx_packets" in rows[0]!;
    const cols = isStats ? STATS_COLUMNS : isState ? STATE_COLUMNS : rows.length > 0 && "vf" in rows[0]! ? VF_COLUMNS : PF_COLUMNS;
    out += renderTable(rows, cols);
    // `state`: each VF's rings under the summary.
    for (const r of isState ? rows : []) {
      const rings = r.vrings as Array<Record<string, unknown>> | undefined;
      if (rings && rings.length > 0) out += `\n${String(r.vf)} vrings:\n` + renderTable(rings);
    }
  } else if (rest.device && typeof rest.device === "object") {
    const dev = rest.device as Record<string, unknown>;
    out += renderKv(dev);
    if (Array.isArray(dev.queues) && dev.queues.length > 0) out += "\n" + renderTable(dev.queues as Array<Record<string, unknown>>);
  } else if (Object.keys(rest).length > 0) {
    out += renderKv(rest);
  } else if (errno === 0) {
    out += `${errstr}\n`;
  }
  return out;
}
