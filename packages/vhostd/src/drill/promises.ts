// The recovery promises (../shared/ARCHITECTURE.md "Recovery promises", docs/recovery.md) as
// checks on one drill event's measurements. The promises are the product's, not an
// implementation's: when the implementation falls short (HA phase 1 dropped every connection
// when the keeper died) the drill says so and fails, rather than being taught to expect less.
import type { EventKind } from "./options.js";

/** What one event measured (fresh-pair drill). */
export interface EventMeasure {
  kind: EventKind;
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  corrupted: number;
  /** Longest gap between received frames in the window (any stream), ms. */
  maxGapMs: number;
  /** Kill to: control plane answers again; undefined = never within the limit. */
  rpcMs: number | undefined;
  /** Kill to: every stream delivering again; undefined = traffic never resumed. */
  trafficMs: number | undefined;
  reconnects: number;
  /** Configuration fields of every VF in `vf -l` identical to before the kill. */
  configSame: boolean;
  /** All of `vf -l` identical, runtime fields (state, connected, reconnects) included. */
  listSame: boolean;
  /** Of the lost frames, those the engine counted as RX drops (null: unknown, e.g. keeper restarted). */
  engineDrops: number | null;
  /** Frames that may legitimately be in flight (ring capacity), the bound for "loss bounded". */
  inFlightBound: number;
}

export interface Judged {
  /** The promise row the event is judged by. */
  row: string;
  broken: string[];
}

/**
 * Standalone, vfe-vhostd *is* the whole back-end: its kill is judged by the "both killed" row
 * (front-ends reconnect, every device comes back, traffic resumes).
 */
export function judge(m: EventMeasure, opts: { standalone: boolean; maxGapMs: number }): Judged {
  const broken: string[] = [];
  const resumed = () => {
    if (m.trafficMs === undefined) broken.push("traffic did not resume");
    if (m.rpcMs === undefined) broken.push("control plane did not answer again");
  };
  const intact = () => {
    if (m.duplicated) broken.push(`${m.duplicated} duplicated`);
    if (m.corrupted) broken.push(`${m.corrupted} corrupted`);
  };
  if (m.kind === "vhostd" && !opts.standalone) {
    // The VM sees nothing: no disconnect, no lost packet, no link flap.
    resumed();
    intact();
    if (m.lost) broken.push(`${m.lost} lost`);
    if (m.reconnects) broken.push(`${m.reconnects} front-end reconnect(s)`);
    if (!m.listSame) broken.push("vf -l changed");
    return { row: "vfe-vhostd killed", broken };
  }
  if (m.kind === "keeper") {
    // A datapath pause bounded in milliseconds, no ring corruption; the VM stays connected.
    resumed();
    intact();
    if (m.reconnects) broken.push(`${m.reconnects} front-end reconnect(s)`);
    if (m.maxGapMs > opts.maxGapMs) broken.push(`datapath gap ${m.maxGapMs} ms > ${opts.maxGapMs} ms`);
    if (m.lost > m.inFlightBound) broken.push(`${m.lost} lost > ${m.inFlightBound} that can be in flight`);
    if (!m.listSame) broken.push(m.configSame ? "vf -l changed (runtime fields)" : "configuration changed");
    return { row: "vfe-vhostd-ha killed", broken };
  }
  // both (or standalone vhostd): front-ends reconnect, every device back, traffic resumes.
  resumed();
  intact();
  if (!m.configSame) broken.push("configuration not restored");
  return { row: opts.standalone ? "vfe-vhostd killed (standalone: whole back-end)" : "both killed", broken };
}
