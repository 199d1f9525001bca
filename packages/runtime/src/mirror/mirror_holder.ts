// vfe-vhostd's half of the HA session mirror: the hot standby for keeper crashes.
//
// While the keeper runs the VFs, it pushes every session (record + duplicated fds) here; we
// hold the copies and run nothing. When the keeper's connection ends (killed, crashed) or it
// says "handover" (graceful stop, upgrade), we adopt every session in place: each VF's lock is
// waited for (the kernel drops the dead keeper's), the engine resumes every ring from guest
// memory, every queue is kicked and every call fd signalled once. The front-ends see a pause,
// never a disconnect. When the keeper comes back it asks "take"; we stop our rings, give every
// session back (and keep the fds as copies again), and the keeper resumes them.
import fs from "node:fs";
import type { Logger } from "pino";
import { FramedFdConnection, checkPeerCred, closeFds, native, type PeerCred } from "@vhostd/native";
import type { MirrorFrame, MirrorVf } from "@vhostd/proto";
import type { VfSpec } from "../vf_host.js";
import type { FdbRow, VfRuntime } from "../vf_host.js";
import { createVfHost, type EngineVfHost } from "../session/engine_vf_host.js";
import type { AnnouncedMessage } from "../session/vf_session.js";
import { inboxPath, keeperBeaconPath, mirrorLockDir, mirrorSharedPath, mirrorSocketPath } from "../paths.js";
import { MIRROR_CODEC } from "./mirror_codec.js";
import { processFate } from "./process_exit.js";
import { Premapped } from "./premapped.js";

export interface MirrorHolderOptions {
  runDir: string;
  log: Logger;
  /** The VF's spec as vfe-vhostd's registry has it (undefined: not ours, drop the copy). */
  specOf(dev: string): VfSpec | undefined;
  /** The PF's switch id as vfe-vhostd's registry has it (undefined: not ours). */
  pfSwitchOf(dev: string): number | undefined;
  /** How long a takeover waits for the dead runner's lock on each VF. */
  lockWaitMs?: number;
  /** The keeper's mirror connection ended (it died, or stops): told before any takeover work. */
  onKeeperGone?(why: string): void;
}

/** How often a connected keeper without a usable exit beacon is looked at (watchExit): a pread of its /proc stat on a native thread. */
const EXIT_PROBE_MS = 20;

interface VfCopy {
  rec: MirrorVf;
  fds: number[];
  /** The last message announced (intake.ts) and not yet known handled. */
  msg?: AnnouncedMessage;
}

/** A copy a takeover did not run: its VF was implicated in the crash of the runner (crash_ledger.ts). */
interface HeldCopy extends VfCopy {
  spec: VfSpec;
  reason: string;
}

export class MirrorHolder {
  private listenFd = -1;
  private watcher: InstanceType<typeof native.FdWatcher> | null = null;
  private conn: FramedFdConnection<MirrorFrame> | null = null;
  private peer: PeerCred | null = null;
  /** The keeper whose exit we noticed before its connection closed (watchExit). */
  private exitingPid: number | undefined;
  /** The connected keeper's exit probe (watchExit). */
  private exitWatch: { probe: InstanceType<typeof native.ExitProbe>; watcher: InstanceType<typeof native.FdWatcher> } | undefined;
  /** Guest memory of the copies, mapped ahead of a takeover. */
  private readonly premapped: Premapped;
  private readonly vfCopies = new Map<string, VfCopy>();
  /**
   * Copies of VFs a crash of the keeper was attributed to. We hold every VF's fds while the
   * keeper is down, so we must not die of the same VF: we never adopt or run such a copy. The
   * restarted keeper takes it back with the others and gives it its second chance; if it
   * crashes the keeper again, we take over once more and the VF is broken (crash_ledger.ts).
   */
  private readonly held = new Map<string, HeldCopy>();
  private readonly pfCopies = new Map<string, { switchId: number; fd: number }>();
  /** Runs the VFs after a takeover; created on the first one (worker threads cost nothing until then). */
  private host: EngineVfHost | undefined;
  private busy: Promise<void> = Promise.resolve();
  /** A hand-back offered to the keeper and not yet confirmed: the records and fds it carried. */
  private offer: { req: number; t0: number; vfs: Array<{ dev: string; rec: MirrorVf; fds: number[] }> } | undefined;
  readonly path: string;
  /** For `ha status` and tests. */
  takeovers = 0;
  /** VF copies held (not run) since a takeover: implicated in the keeper's crash. */
  heldDevs(): string[] {
    return [...this.held.keys()];
  }
  lastTakeover: { at: string; why: string; vfs: number; failed: number; ms: number; held?: number } | undefined;

  constructor(private readonly opts: MirrorHolderOptions) {
    this.path = mirrorSocketPath(opts.runDir);
    this.premapped = new Premapped(opts.log);
  }

  listen(): void {
    try {
      fs.unlinkSync(this.path); // only one vfe-vhostd serves a run dir (checked at its start)
    } catch {
      /* none */
    }
    this.listenFd = native.unixListen(this.path, 4, 0o600);
    this.watcher = new native.FdWatcher(this.listenFd, () => this.accept());
    this.opts.log.info({ path: this.path }, "HA mirror listening");
  }

  /** Copies held (VFs) and fds in them, and whether we run VFs now. */
  status(): {
    connected: boolean;
    keeperPid: number | null;
    copies: number;
    fdsHeld: number;
    fdsPerVf: Record<string, number>;
    running: string[];
    /** VFs implicated in the keeper's crash: copies held for the keeper, not run here. */
    held: string[];
    takeovers: number;
    /** How a connected keeper's death is noticed: its exit beacon, or polling /proc. */
    exitWatch: "beacon" | "poll" | null;
    lastTakeover?: MirrorHolder["lastTakeover"];
  } {
    let fdsHeld = 0;
    const fdsPerVf: Record<string, number> = {};
    for (const [dev, c] of this.vfCopies) {
      fdsHeld += c.fds.length;
      fdsPerVf[dev] = c.fds.length;
    }
    for (const p of this.pfCopies.values()) if (p.fd >= 0) fdsHeld++;
    return {
      connected: this.conn?.isOpen ?? false,
      keeperPid: this.conn?.isOpen ? (this.peer?.pid ?? null) : null,
      copies: this.vfCopies.size,
      fdsHeld,
      fdsPerVf,
      running: this.host?.devs() ?? [],
      held: this.heldDevs(),
      takeovers: this.takeovers,
      exitWatch: this.exitWatch?.probe.mode ?? null,
      ...(this.lastTakeover ? { lastTakeover: this.lastTakeover } : {}),
    };
  }

  /** Whether we answer for this VF (we run it since a takeover, or hold it for the keeper). */
  runs(dev: string): boolean {
    return (this.host?.has(dev) ?? false) || this.held.has(dev);
  }

  /** Whether this process runs a PF's switch since a takeover. */
  runsSwitch(switchId: number): boolean {
    return [...(this.host?.pfList().values() ?? [])].includes(switchId);
  }

  fdb(switchId: number): FdbRow[] | undefined {
    try {
      return this.host?.fdb(switchId);
    } catch {
      return undefined;
    }
  }

  runtime(dev: string): VfRuntime | undefined {
    const h = this.held.get(dev);
    if (h) {
      return {
        state: "held",
        connected: h.rec.conn >= 0,
        features: h.rec.session.features,
        protocolFeatures: h.rec.session.protocolFeatures,
        reconnects: h.rec.reconnects,
        queues: [],
        owner: "vfe-vhostd",
        lastError: `${h.reason}; held (not run) by vfe-vhostd until vfe-vhostd-ha restarts and runs it again`,
      };
    }
    return this.host?.runtime(dev);
  }

  /** `vf -r` of a VF we run (since a takeover) or hold a copy of: it ends here and now. */
  async closeVf(dev: string): Promise<void> {
    const h = this.held.get(dev);
    if (h) this.host?.crashes.forget(h.spec);
    this.dropCopy(dev);
    if (this.host?.has(dev)) await this.host.close(dev);
  }

  /** `mgmtpf -r` of a PF we run or hold a copy of. */
  async removePf(dev: string): Promise<void> {
    this.dropCopy(dev);
    const sw = this.host?.pfList().get(dev);
    if (sw !== undefined) this.host!.removePf(dev, sw, "net");
  }

  /** vfe-vhostd stops: sessions we run stop with us; copies are just closed. */
  async close(): Promise<void> {
    this.watcher?.stop();
    this.watcher = null;
    if (this.listenFd >= 0) native.closeFd(this.listenFd);
    this.listenFd = -1;
    this.stopExitWatch();
    this.conn?.close("vfe-vhostd stopping", false);
    this.dropCopies();
    for (const dev of [...this.held.keys()]) this.dropCopy(dev);
    this.premapped.dropAll();
    await this.host?.shutdown();
    this.host = undefined;
  }

  private accept(): void {
    for (;;) {
      const fd = native.unixAccept(this.listenFd);
      if (fd < 0) return;
      let cred: PeerCred;
      try {
        cred = native.peerCred(fd);
      } catch {
        native.closeFd(fd);
        continue;
      }
      const refusal = checkPeerCred(cred, process.geteuid!());
      if (refusal !== null || this.conn?.isOpen) {
        native.closeFd(fd);
        this.opts.log.warn({ pid: cred.pid }, `HA mirror: connection refused: ${refusal ?? "a keeper is already connected"}`);
        continue;
      }
      this.peer = cred;
      const conn: FramedFdConnection<MirrorFrame> = new FramedFdConnection(fd, MIRROR_CODEC, {
        onFrame: (f, fds) => this.onFrame(conn, f, fds),
        onClose: (reason, violation) => this.onClose(conn, reason, violation),
      });
      this.conn = conn;
      this.watchExit(conn, cred.pid);
      this.opts.log.info({ event: "mirror_connected", pid: cred.pid }, "HA mirror: keeper connected");
    }
  }

  private onFrame(conn: FramedFdConnection<MirrorFrame>, f: MirrorFrame, fds: number[]): void {
    switch (f.op) {
      case "vf": {
        // An announced message the new record does not cover yet stays with it.
        const old = this.vfCopies.get(f.dev);
        const msg = old?.msg;
        if (old) old.msg = undefined; // (dropCopy must not close its fds)
        this.dropCopy(f.dev, true);
        const pending = msg && msg.seq > (f.rec.seq ?? 0) ? msg : undefined;
        if (msg && !pending) closeFds(msg.fds);
        this.vfCopies.set(f.dev, { rec: f.rec, fds, ...(pending ? { msg: pending } : {}) });
        this.premapped.set(f.dev, f.rec, fds);
        this.standbyHost();
        return;
      }
      case "msg": {
        const c = this.vfCopies.get(f.dev);
        if (!c || f.seq <= (c.rec.seq ?? 0)) {
          closeFds(fds); // a copy we do not hold, or a message its record covers already
          return;
        }
        if (c.msg) closeFds(c.msg.fds);
        c.msg = { seq: f.seq, bytes: Buffer.from(f.bytes, "hex"), fds };
        return;
      }
      case "done": {
        const c = this.vfCopies.get(f.dev);
        if (!c) return;
        if (f.seq > (c.rec.seq ?? 0)) c.rec.seq = f.seq;
        if (c.msg && c.msg.seq <= f.seq) {
          closeFds(c.msg.fds);
          c.msg = undefined;
        }
        return;
      }
      case "pf": {
        const old = this.pfCopies.get(f.dev);
        if (old && old.fd >= 0) closeFds([old.fd]);
        this.pfCopies.set(f.dev, { switchId: f.switchId, fd: fds[0] ?? -1 });
        return;
      }
      case "drop":
        this.dropCopy(f.dev);
        return;
      case "reply": {
        const c = this.vfCopies.get(f.dev);
        if (c) c.rec.reply = f.reply;
        return;
      }
      case "replied": {
        const c = this.vfCopies.get(f.dev);
        if (c) delete c.rec.reply;
        return;
      }
      case "handover":
        this.opts.log.info({ event: "mirror_handover" }, "HA mirror: the keeper hands its VFs over (graceful stop)");
        this.serial(() => this.takeover("keeper handed over"));
        return;
      case "take":
        this.serial(() => this.giveBack(conn, f.req));
        return;
      case "ready":
        this.serial(async () => this.onReady(conn, f.req));
        return;
      default:
        closeFds(fds);
        conn.close(`unexpected ${f.op} frame from the keeper`, true);
    }
  }

  /**
   * A killed keeper's datapath stops at once, but its fds (this connection's EOF) close only
   * after the kernel has torn its memory down, which can take seconds. So we also watch its
   * threads: once every one of them is exiting, we take over without waiting for the EOF.
   * The probe runs on a native thread (cc/exit_probe.cc) that sleeps on the keeper's exit
   * beacon until the kernel reports the keeper dying (polls /proc when it has no beacon);
   * JS hears once, through an eventfd.
   */
  private watchExit(conn: FramedFdConnection<MirrorFrame>, pid: number): void {
    this.stopExitWatch();
    const probe = new native.ExitProbe(pid, EXIT_PROBE_MS, keeperBeaconPath(this.opts.runDir));
    if (probe.mode === "beacon") this.opts.log.debug({ keeperPid: pid }, "HA mirror: watching the keeper's exit beacon");
    else this.opts.log.warn({ keeperPid: pid, why: probe.beaconError }, `HA mirror: no usable exit beacon of keeper ${pid} (${probe.beaconError}); polling /proc every ${EXIT_PROBE_MS} ms`);
    const watcher = new native.FdWatcher(probe.fd, () => {
      const fate = probe.fate();
      this.stopExitWatch();
      if (!conn.isOpen) return;
      this.exitingPid = pid;
      conn.close(`keeper pid ${pid} is ${fate === "gone" ? "gone" : "exiting (its threads have stopped; the kernel has not closed its fds yet)"}`, false);
    });
    watcher.unref();
    this.exitWatch = { probe, watcher };
  }

  private stopExitWatch(): void {
    if (!this.exitWatch) return;
    this.exitWatch.watcher.stop();
    this.exitWatch.probe.close();
    this.exitWatch = undefined;
  }

  private onClose(conn: FramedFdConnection<MirrorFrame>, reason: string, violation: boolean): void {
    if (this.conn === conn) {
      this.conn = null;
      this.stopExitWatch();
    }
    if (this.offer) {
      this.offer = undefined;
      this.host?.cancelOffer(); // the keeper went away mid hand-back: we keep running
    }
    (violation ? this.opts.log.warn : this.opts.log.info).call(this.opts.log, { event: "mirror_closed", violation }, `HA mirror: keeper connection closed: ${reason}`);
    this.opts.onKeeperGone?.(reason);
    if (this.vfCopies.size > 0 || this.pfCopies.size > 0) this.serial(() => this.takeover(`keeper connection lost (${reason})`));
  }

  private serial(fn: () => Promise<void>): void {
    this.busy = this.busy.then(fn).catch((e: Error) => this.opts.log.error({ err: e.stack ?? e.message }, "HA mirror step failed"));
  }

  /**
   * The host that runs the VFs after a takeover. Made with the first copy, not at the takeover:
   * it maps the engine's shared file, which a dying keeper's teardown may keep locked.
   */
  private standbyHost(): EngineVfHost {
    if (!this.host) {
      this.host = createVfHost({
        log: this.opts.log.child({ component: "standby-host" }),
        runDir: this.opts.runDir,
        lockDir: mirrorLockDir(this.opts.runDir),
        sharedPath: mirrorSharedPath(this.opts.runDir),
        inboxPath: inboxPath(this.opts.runDir),
      });
      // A crash of ours (a previous vfe-vhostd that ran VFs after a takeover) left in the file.
      this.host.claimCrashes((id) => this.specByDevId(id));
    }
    return this.host;
  }

  /** The registry's spec of a VF we hold a copy of, by device id (for the crash verdicts' log). */
  private specByDevId(devId: number): VfSpec | undefined {
    for (const dev of [...this.vfCopies.keys(), ...this.held.keys()]) {
      const spec = this.opts.specOf(dev);
      if (spec?.devId === devId) return spec;
    }
    return undefined;
  }

  /** Runs every VF we hold a copy of, in place. */
  private async takeover(why: string): Promise<void> {
    if (this.vfCopies.size === 0 && this.pfCopies.size === 0) return;
    this.premapGen++; // no more deferred premapping (premapLater)
    const t0 = performance.now();
    const log = this.opts.log;
    const host = this.standbyHost();
    // Did the keeper crash (rather than being killed), and because of which VF? (crash_ledger.ts)
    host.claimCrashes((id) => this.specByDevId(id));
    const tHost = performance.now();
    const running = host.pfList();
    for (const [dev, p] of this.pfCopies) {
      // The keeper's word on a PF is checked against ours: a copy we did not decide is dropped.
      const want = this.opts.pfSwitchOf(dev);
      if (running.has(dev) || want !== p.switchId) {
        if (want !== p.switchId) log.error({ pf: dev, switchId: p.switchId, want }, "takeover: PF copy does not match the registry; dropped");
        if (p.fd >= 0) closeFds([p.fd]);
        continue;
      }
      try {
        host.adoptPf(dev, p.switchId, p.fd, true);
      } catch (e) {
        log.error({ pf: dev, err: (e as Error).message }, "takeover: PF could not be adopted");
      }
    }
    this.pfCopies.clear();
    const copies = [...this.vfCopies];
    this.vfCopies.clear();
    let failed = 0;
    // (The mappings made ahead are taken by host.adopt below; what is left is released after.)
    for (const [dev, c] of copies) {
      const spec = this.opts.specOf(dev);
      if (!spec || host.has(dev)) {
        closeFds([...c.fds, ...(c.msg?.fds ?? [])]);
        continue;
      }
      const crash = host.crashes.state(spec);
      if (crash.count > 0 && !crash.broken) {
        // Implicated in a crash and not cleared since: it might kill us too, and with us every
        // VF's connection. Hold it for the keeper (a broken one host.adopt closes at once).
        if (c.msg) closeFds(c.msg.fds); // (the keeper re-reads it: a held VF is not run here)
        this.held.set(dev, { rec: c.rec, fds: c.fds, spec, reason: crash.reason! });
        log.warn({ event: "takeover_held", vf: dev, socket: spec.socketPath, count: crash.count }, `takeover: VF ${dev} on ${spec.socketPath} is held, not run: ${crash.reason}`);
        continue;
      }
      try {
        host.adopt(spec, c.rec, c.fds, c.msg);
      } catch (e) {
        failed++;
        log.error({ event: "takeover_failed", vf: dev, socket: spec.socketPath, err: (e as Error).message }, `takeover of ${dev} failed: ${(e as Error).message}`);
      }
    }
    this.premapped.dropAll();
    const tAdopt = performance.now();
    // The dead keeper's locks go as the kernel tears it down: wait for them, then run; or run at
    // once when its threads are all exiting (they never touch a ring again), locking later.
    const pid = this.exitingPid ?? this.peer?.pid;
    failed += (await host.resumeAdopted(this.opts.lockWaitMs ?? 3000, pid ? () => processFate(pid) === "exiting" : undefined)).length;
    this.exitingPid = undefined;
    const now = performance.now();
    const ms = Math.round((now - t0) * 10) / 10;
    this.takeovers++;
    const held = this.held.size;
    this.lastTakeover = { at: new Date().toISOString(), why, vfs: copies.length - failed - held, failed, ms, ...(held ? { held } : {}) };
    // Where the time went: creating the standby host, adopting (mapping guest memory), resuming (locks).
    const split = { hostMs: Math.round(tHost - t0), adoptMs: Math.round(tAdopt - tHost), resumeMs: Math.round(now - tAdopt) };
    log.info({ event: "takeover_done", why, vfs: copies.length - failed - held, failed, held, ms, ...split }, `took over ${copies.length - failed - held} VF(s) in place in ${ms} ms (${why})${held ? `; ${held} held for the keeper` : ""}`);
  }

  /**
   * The keeper is back and asks for what we run. Step 1 (traffic flows): stop reading messages,
   * send every record and fd, "offered". The keeper prepares and says "ready"; step 2 (the pause)
   * is in onReady().
   */
  private async giveBack(conn: FramedFdConnection<MirrorFrame>, req: number): Promise<void> {
    const host = this.host;
    // The held copies go back as they came: the keeper runs them again (their second chance).
    const offered = [...(host?.offerAll() ?? []), ...[...this.held].map(([dev, h]) => ({ dev, rec: h.rec, fds: h.fds }))];
    try {
      if (host) {
        for (const { dev, rec, fds } of offered) conn.send({ op: "vf", dev, rec, count: fds.length }, fds);
        for (const [dev, switchId] of host.pfList()) {
          const fd = host.tapFd(switchId);
          conn.send({ op: "pf", dev, switchId, count: fd >= 0 ? 1 : 0 }, fd >= 0 ? [fd] : []);
        }
      }
      conn.send({ op: "offered", req, devs: offered.map((o) => o.dev) });
      this.offer = { req, t0: performance.now(), vfs: offered };
    } catch (e) {
      host?.cancelOffer();
      this.opts.log.error({ err: (e as Error).message }, "hand-back offer to the keeper failed; we keep running the VFs");
    }
  }

  /** Step 2 of the hand-back: stop our rings, drop our locks (keep the fds as copies), "released". */
  private onReady(conn: FramedFdConnection<MirrorFrame>, req: number): void {
    const offer = this.offer;
    this.offer = undefined;
    if (!offer || offer.req !== req) {
      conn.close(`ready ${req} without an offer`, true);
      return;
    }
    const host = this.host;
    const t1 = performance.now();
    const offered = offer.vfs; // messages are not read since the offer: the records still hold
    host?.stopAndUnlockAll();
    let sent = true;
    try {
      conn.send({ op: "released", req }); // the keeper starts its rings now; we tidy up meanwhile
    } catch {
      sent = false; // the connection's loss makes us take over again from the copies
    }
    for (const pf of host?.dropAll() ?? []) this.pfCopies.set(pf.dev, { switchId: pf.switchId, fd: pf.fd });
    this.held.clear(); // copies again, of what the keeper runs now
    for (const { dev, rec, fds } of offered) this.vfCopies.set(dev, { rec, fds });
    this.premapLater(offered.map((o) => o.dev));
    const vfs = offered.length;
    if (!sent) return;
    this.opts.log.info(
      { event: "handback_done", vfs, offerMs: Math.round(t1 - offer.t0), pauseMs: Math.round((performance.now() - t1) * 10) / 10 },
      `handed ${vfs} VF(s) back to the keeper`,
    );
  }

  /**
   * Maps the copies' guest memory ahead again after a hand-back, one VF per event-loop turn (the
   * pages are populated on native threads): done in one go on this thread it blocked the loop
   * for ~1 s with two testpmds and two 96 MiB guests, and a keeper that dies right after taking
   * the VFs back (a crash suspect's second chance, issue 17) waited that long for its takeover.
   */
  private premapLater(devs: string[]): void {
    const gen = ++this.premapGen;
    const step = () => {
      if (gen !== this.premapGen) return; // a takeover began: it maps what it adopts itself
      const dev = devs.shift();
      if (dev === undefined) return;
      const c = this.vfCopies.get(dev);
      if (c) this.premapped.set(dev, c.rec, c.fds);
      setImmediate(step);
    };
    setImmediate(step);
  }

  private premapGen = 0;

  /** `replacing`: a new copy of the VF follows at once (its mappings are sorted out by set()). */
  private dropCopy(dev: string, replacing = false): void {
    const c = this.vfCopies.get(dev);
    if (c) {
      closeFds([...c.fds, ...(c.msg?.fds ?? [])]);
      this.vfCopies.delete(dev);
    }
    const h = this.held.get(dev);
    if (h) {
      closeFds(h.fds);
      this.held.delete(dev);
    }
    if (!replacing) this.premapped.drop(dev);
    const p = this.pfCopies.get(dev);
    if (p) {
      if (p.fd >= 0) closeFds([p.fd]);
      this.pfCopies.delete(dev);
    }
  }

  private dropCopies(): void {
    for (const dev of [...this.vfCopies.keys(), ...this.pfCopies.keys()]) this.dropCopy(dev);
  }
}
